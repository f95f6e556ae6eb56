"""``HardNegativeRefresh``: re-mine the training data's hard negatives with the model being trained.

Negatives mined once with the starting model go stale as the model learns: what was hard at
step 0 is easy at step 5,000. Every ``every_n_steps`` optimizer steps and/or every
``every_n_epochs`` epochs this callback encodes the training queries and the candidate pool
with ``pl_module.encoder``, mines new negatives with :class:`ctem.mining.HardNegativeMiner`
(the code of ``ctem-mine``) and swaps them into the datamodule with ``set_negatives``,
without restarting the fit. It logs ``negatives/mining_seconds`` and
``negatives/changed_fraction`` (the share of the new negatives that were not in the row's
previous list).

Under DDP each rank encodes a contiguous share of the texts and the embeddings are
all-gathered; each rank then searches and samples for its share of rows (per-row seeded, so
the result does not depend on the number of ranks) and the negatives are all-gathered, so
every rank sets identical negatives.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal, Sequence

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ctem.mining import EncodeFn, HardNegativeMiner, MiningConfig, candidate_pool, read_candidate_pool

log = logging.getLogger(__name__)


def _shard(total: int, rank: int, world: int) -> range:
    """Contiguous block of ``range(total)`` for ``rank`` (blocks of ``ceil(total / world)``)."""
    per = math.ceil(total / world)
    return range(min(rank * per, total), min((rank + 1) * per, total))


def sharded_encode(encoder: Any, batch_size: int, rank: int, world: int, show_progress: bool = False) -> EncodeFn:
    """A collective ``encode(texts, is_query)``: every rank calls it with the same texts,
    encodes its block, and all ranks return the full ``[N, H]`` array (all-gathered)."""

    def encode(texts: Sequence[str], is_query: bool) -> np.ndarray:
        block = _shard(len(texts), rank, world)
        part = encoder.encode(
            list(texts[block.start : block.stop]),
            batch_size=batch_size,
            is_query=is_query,
            convert_to_numpy=False,
            show_progress_bar=show_progress,
        )
        if world == 1:
            return part.numpy()
        per = math.ceil(len(texts) / world)
        padded = torch.zeros(per, encoder.dim, dtype=torch.float32, device=encoder.device)
        padded[: part.size(0)] = part.to(encoder.device)
        chunks = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(chunks, padded)
        return torch.cat(chunks)[: len(texts)].cpu().numpy()

    return encode


def gather_lists(local: list[list[str]], world: int) -> list[list[str]]:
    """Concatenate every rank's list of rows in rank order (``all_gather_object``)."""
    if world == 1:
        return local
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, local)
    return [row for part in gathered for row in part]


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


class HardNegativeRefresh(Callback):
    """Re-mines the training negatives with the current model during ``fit``.

    Works with any datamodule that has ``mining_rows() -> [{"query", "pos", "neg", "prompt"?,
    "group"?}]`` (``prompt``: the instruction the query trains with; rows of one ``group``, a
    dataset or file, are mined in their own candidate pool, as ``ctem-mine`` mines each file)
    and ``set_negatives(list_of_lists)``
    (``PairDataModule``, ``LabeledDataModule``), and a LightningModule whose ``encoder`` is a
    ``ctem.TextEncoder``.

    Args:
        every_n_steps: refresh every N optimizer steps (``None``: not by steps).
        every_n_epochs: refresh at the end of every N-th epoch (``None``: not by epochs). No
            refresh happens after the last step or epoch.
        range: ``[lo, hi]`` 0-based rank slice to sample from (see ``ctem.mining``).
        negative_number: negatives per row. At least ``train_group_size - 1`` avoids repeats.
        seed: sampling seed; refresh ``k`` uses ``seed + k``.
        candidate_pool: corpus file(s) of candidate passages, one pool for all rows (``None``:
            per group, every positive and negative of its rows as they were before the first
            refresh).
        false_negative_margin: drop candidates scoring within this margin of the positive.
        keep_existing: keep the rows' original negatives (as loaded) and mine the rest.
        batch_size: texts per forward pass while encoding.
        use_gpu / index / nlist / nprobe / search_batch_size: faiss settings (``MiningConfig``).
        refresh_on_resume: when resuming from a checkpoint taken after a refresh, mine again
            at the start of training (the datamodule reloads the files' negatives).
        show_progress: progress bars while encoding and searching.
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = 1,
        range: Sequence[int] = (2, 200),
        negative_number: int = 15,
        seed: int = 0,
        candidate_pool: str | Sequence[str] | None = None,
        false_negative_margin: float | None = None,
        keep_existing: bool = False,
        batch_size: int = 64,
        use_gpu: bool | Literal["auto"] = "auto",
        index: Literal["flat", "ivf"] = "flat",
        nlist: int = 1024,
        nprobe: int = 32,
        search_batch_size: int = 1024,
        refresh_on_resume: bool = True,
        show_progress: bool = False,
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or null, got {value}")
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError("set every_n_steps and/or every_n_epochs")
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.batch_size = batch_size
        self.refresh_on_resume = refresh_on_resume
        self.show_progress = show_progress
        self.candidate_pool_files = candidate_pool
        # validated now, so a bad setting fails when the callback is built
        self.mining = MiningConfig(
            range=tuple(range),  # type: ignore[arg-type]
            negative_number=negative_number,
            seed=seed,
            false_negative_margin=false_negative_margin,
            keep_existing=keep_existing,
            use_gpu=use_gpu,
            index=index,
            nlist=nlist,
            nprobe=nprobe,
            search_batch_size=search_batch_size,
            batch_size=batch_size,
            show_progress=show_progress,
        )
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
        if not (hasattr(datamodule, "mining_rows") and hasattr(datamodule, "set_negatives")):
            raise TypeError(
                f"HardNegativeRefresh needs a datamodule with mining_rows() and set_negatives(); "
                f"got {type(datamodule).__name__}"
            )
        if not hasattr(pl_module, "encoder") or not hasattr(pl_module.encoder, "encode"):
            raise TypeError(f"HardNegativeRefresh needs pl_module.encoder (a ctem.TextEncoder); got {type(pl_module).__name__}")
        if self.candidate_pool_files is not None and self._pool is None:
            self._pool, report = read_candidate_pool(self.candidate_pool_files)
            if report.count:
                rank_zero_warn(report.summary())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if getattr(loader, "num_workers", 0) > 0 and getattr(loader, "persistent_workers", False):
            rank_zero_warn(
                "HardNegativeRefresh: the train dataloader keeps persistent worker processes, which "
                "hold their own copy of the data and never see refreshed negatives; use num_workers=0 "
                "or non-persistent workers"
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
        config = MiningConfig(**{**self.mining.__dict__, "seed": self.seed + self.refreshes})
        if world > 1 and encoder.device.type == "cuda":
            config.gpu_ids = [encoder.device.index or 0]
        miner = HardNegativeMiner(sharded_encode(encoder, self.batch_size, rank, world, self.show_progress), config)
        mined: list[list[str]] = [[] for _ in rows]
        short_rows = 0
        for group, members in _group_indices(rows).items():
            group_rows = [rows[i] for i in members]
            pool = self._pool if self._pool is not None else self._pools[group]
            result = miner.mine(group_rows, pool, indices=_shard(len(group_rows), rank, world))
            short_rows += result.short_rows
            for i, negatives in zip(members, gather_lists(result.negatives, world)):
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
