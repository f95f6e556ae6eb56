"""``HardNegativeRefresh``: re-mine the training data's hard negatives with the model being trained.

Negatives mined once with the starting model go stale as the model learns: what was hard at
step 0 is easy at step 5,000. Every ``every_n_steps`` optimizer steps and/or every
``every_n_epochs`` epochs this callback encodes the training queries and the candidate pool
with ``pl_module.encoder``, mines new negatives with :class:`ctem.mining.HardNegativeMiner`
(the code of ``ctem-mine``) and swaps them into the datamodule with ``set_negatives``,
without restarting the fit. It logs ``negatives/mining_seconds`` and
``negatives/changed_fraction`` (the share of the new negatives that were not in the row's
previous list).

Under DDP each rank encodes every ``world_size``-th text of the length order
(``ctem.encoding.EncoderAdapter``) and the embeddings are all-gathered; each rank then
searches and samples for every ``world_size``-th row (per-row seeded, so the result does not
depend on the number of ranks) and the negatives are all-gathered back into row order
(``ctem.distributed.RankShards``), so every rank sets identical negatives.

A stage whose loss trains towards teacher scores (``stage/loss=distill``: the rows'
``pos_scores`` / ``neg_scores``) is refused before the first step: refreshed negatives have no
teacher scores (the datamodule drops the old ``neg_scores``), so the first batch after a
refresh could not be trained. Refresh such data offline instead (``ctem-mine``, then
``ctem-score``, then train).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ctem.distributed import RankShards
from ctem.encoding import EncoderAdapter
from ctem.errors import CtemInputError
from ctem.losses import Criterion
from ctem.mining import HardNegativeMiner, MiningConfig, candidate_pool, read_candidate_pool
from ctem.modules.contract import RefreshableData
from ctem.modules.stage import EncoderStage


def _group_indices(rows: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indices per mining group (a row's ``group``; one group when rows have none)."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row.get("group")), []).append(i)
    return groups


def _groups(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {g: [rows[i] for i in members] for g, members in _group_indices(rows).items()}


def changed_fraction(old: Sequence[Sequence[str]], new: Sequence[Sequence[str]]) -> float:
    """Share of the new negatives (over all rows) that were not in the row's old list."""
    total = sum(len(n) for n in new)
    if total == 0:
        return 0.0
    changed = sum(len([t for t in n if t not in set(o)]) for o, n in zip(old, new))
    return changed / total


def check_no_teacher_scores(pl_module: L.LightningModule) -> None:
    """Refuse a module whose criterion needs teacher scores (``CriterionFacts.needs_teacher_scores``):
    the refreshed negatives would have none."""
    criterion = getattr(pl_module, "criterion", None)
    facts = criterion.facts() if isinstance(criterion, Criterion) else None
    if facts is not None and facts.needs_teacher_scores:
        raise CtemInputError(
            f"callbacks.hard_negative_refresh: the loss ({facts.name}) trains towards the rows' teacher scores "
            "(pos_scores / neg_scores), which refreshed negatives would not have: refresh offline instead "
            "(ctem-mine, then ctem-score on its output, then train on that) or leave the callback out"
        )


class HardNegativeRefresh(Callback):
    """Re-mines the training negatives with the current model during ``fit``.

    Works with any datamodule that has ``mining_rows() -> [{"query", "pos", "neg", "prompt"?,
    "group"?}]`` (``prompt``: the instruction the query trains with; rows of one ``group``, a
    dataset or file, are mined in their own candidate pool, as ``ctem-mine`` mines each file)
    and ``set_negatives(list_of_lists)``
    (``PairDataModule``, ``LabeledDataModule``), and a LightningModule whose ``encoder`` is a
    ``ctem.TextEncoder`` and whose loss needs no teacher scores (:func:`check_no_teacher_scores`).

    Args:
        every_n_steps: refresh every N optimizer steps (``None``: not by steps).
        every_n_epochs: refresh at the end of every N-th epoch (``None``: not by epochs). No
            refresh happens after the last step or epoch.
        mining: the mining settings (``ctem.mining.MiningConfig``, the config node
            ``mining``); refresh ``k`` samples with seed ``mining.seed + k``, and
            ``keep_existing`` keeps the rows' original negatives (as loaded). ``None``:
            the defaults without progress bars. ``negative_number`` of at least
            ``train_group_size - 1`` avoids repeats.
        candidate_pool: corpus file(s) of candidate passages, one pool for all rows (``None``:
            per group, every positive and negative of its rows as they were before the first
            refresh).
        refresh_on_resume: when resuming from a checkpoint taken after a refresh, mine again
            at the start of training (the datamodule reloads the files' negatives).
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = 1,
        mining: MiningConfig | None = None,
        candidate_pool: str | Sequence[str] | None = None,
        refresh_on_resume: bool = True,
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or null, got {value}")
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError("set every_n_steps and/or every_n_epochs")
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.mining = mining or MiningConfig(show_progress=False)
        self.refresh_on_resume = refresh_on_resume
        self.candidate_pool_files = candidate_pool
        self.refreshes = 0
        self.last_refresh_step = -1
        self.last_changed_fraction: float | None = None
        self.history: list[dict[str, float]] = []
        self._pool: list[str] | None = None  # a given candidate_pool, shared by all rows
        self._pools: dict[str, list[str]] = {}  # else one pool per group of mining_rows
        self._original_negatives: list[list[str]] | None = None
        self._resume_pending = False

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, RefreshableData):
            raise TypeError(
                f"HardNegativeRefresh needs a datamodule with mining_rows() and set_negatives(); "
                f"got {type(datamodule).__name__}"
            )
        if not isinstance(pl_module, EncoderStage):
            raise TypeError(f"HardNegativeRefresh needs a ctem stage (EncoderStage) and its encoder; got {type(pl_module).__name__}")
        check_no_teacher_scores(pl_module)
        if self.candidate_pool_files is not None and self._pool is None:
            self._pool, report = read_candidate_pool(self.candidate_pool_files)
            if report.count:
                rank_zero_warn(report.summary())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if getattr(loader, "num_workers", 0) > 0 and getattr(loader, "persistent_workers", False):
            rank_zero_warn(
                "HardNegativeRefresh: the train dataloader keeps persistent worker processes, which "
                "hold their own copy of the data and never see refreshed negatives; use data.loader.num_workers=0 "
                "or data.loader.persistent_workers=false"
            )
        if self._resume_pending:
            self._resume_pending = False
            self.refresh(trainer, pl_module, log_metrics=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if (
            self.every_n_steps is not None
            and step > 0
            and step % self.every_n_steps == 0
            and step != self.last_refresh_step
            and not self._finished(trainer)
        ):
            self.refresh(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if (
            self.every_n_epochs is not None
            and epoch % self.every_n_epochs == 0
            and trainer.global_step != self.last_refresh_step
            and not self._finished(trainer)
            and not (trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs)
        ):
            self.refresh(trainer, pl_module, on_step=False)

    @staticmethod
    def _finished(trainer: L.Trainer) -> bool:
        return trainer.should_stop or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)

    # ------------------------------------------------------------------ mining
    def refresh(self, trainer: L.Trainer, pl_module: L.LightningModule, on_step: bool = True, log_metrics: bool = True) -> float:
        """Re-mine every row's negatives now; returns the changed fraction."""
        start = time.perf_counter()
        datamodule = trainer.datamodule
        rows = datamodule.mining_rows()
        previous = [list(r["neg"]) for r in rows]
        if self._original_negatives is None:
            self._original_negatives = previous
            if self._pool is None:
                # the pools of the loaded data, one per group (dataset or file); later
                # refreshes must not drift with mined negatives
                self._pools = {g: candidate_pool(group_rows) for g, group_rows in _groups(rows).items()}
        if self.mining.keep_existing:
            rows = [{**r, "neg": original} for r, original in zip(rows, self._original_negatives)]
        rank, world = trainer.global_rank, trainer.world_size
        encoder = pl_module.encoder
        config = dataclasses.replace(self.mining, seed=self.mining.seed + self.refreshes)
        if world > 1 and encoder.device.type == "cuda":
            config.gpu_ids = [encoder.device.index or 0]
        encode = EncoderAdapter(
            encoder, config.batch_size, cache_tokenization=False, rank=rank, world_size=world, show_progress=config.show_progress
        )
        miner = HardNegativeMiner(encode, config)
        mined: list[list[str]] = [[] for _ in rows]
        short_rows = 0
        for group, members in _group_indices(rows).items():
            group_rows = [rows[i] for i in members]
            pool = self._pool if self._pool is not None else self._pools[group]
            shards = RankShards.split(len(group_rows), rank, world)
            result = miner.mine(group_rows, pool, indices=shards.mine)
            short_rows += result.short_rows
            for i, negatives in zip(members, shards.gather_objects(result.negatives)):
                mined[i] = negatives
        # a row whose candidates were all excluded keeps its previous negatives
        negatives = [new if new else old for new, old in zip(mined, previous)]
        datamodule.set_negatives(negatives)
        fraction = changed_fraction(previous, negatives)
        seconds = time.perf_counter() - start
        self.refreshes += 1
        self.last_refresh_step = trainer.global_step
        self.last_changed_fraction = fraction
        self.history.append({"step": trainer.global_step, "seconds": seconds, "changed_fraction": fraction})
        if log_metrics:
            kwargs = {"on_step": on_step, "on_epoch": not on_step, "batch_size": 1}
            pl_module.log("negatives/mining_seconds", seconds, **kwargs)
            pl_module.log("negatives/changed_fraction", fraction, **kwargs)
        rank_zero_info(
            f"[ctem] refreshed hard negatives at step {trainer.global_step}: {fraction:.1%} changed, "
            f"{seconds:.1f}s; {short_rows} row(s) of this rank got fewer than {config.negative_number}"
        )
        return fraction

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "refreshes": self.refreshes,
            "last_refresh_step": self.last_refresh_step,
            "last_changed_fraction": self.last_changed_fraction,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.refreshes = state_dict["refreshes"]
        self.last_refresh_step = state_dict["last_refresh_step"]
        self.last_changed_fraction = state_dict["last_changed_fraction"]
        self._resume_pending = self.refresh_on_resume and self.refreshes > 0
