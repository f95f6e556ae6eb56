"""What every ctem DataModule shares: rank-aware sharding and the training DataLoader."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import datasets
import datasets.distributed
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from ctem.distributed import rank_and_world
from ctem.languages import written_in
from ctem.modules.contract import StageData
from ctem.rows import DataSizeError, describe_source
from ctem.settings import SettingError
from ctem.data_modules.resume import Position, ResumableDataLoader, SkippableBatches, rng_states

log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    """How every ctem DataModule loads its batches (``conf/loader/default.yaml``, the
    ``data.loader`` node of every ``data`` config). A bad value raises ``SettingError``
    naming it (``data.loader.num_workers=-1: must be a whole number >= 0``).

    Args:
        num_workers: DataLoader worker processes (``0``: load in the training process).
            The collators run there (RetroMAE draws its masks there).
        pin_memory: page-locked host memory for faster copies to the GPU.
        persistent_workers: keep worker processes alive between epochs (only with
            ``num_workers > 0``). Such workers hold their own copy of the data, so negatives
            refreshed during training never reach them, and a run resumed after its first
            epoch cannot restore their random states (it warns).
    """

    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise SettingError("data.loader.num_workers", self.num_workers, "must be a whole number >= 0")
        for name in ("pin_memory", "persistent_workers"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(f"data.loader.{name}", getattr(self, name), "must be true or false")

    @classmethod
    def of(cls, loader: LoaderConfig | Mapping[str, Any] | None) -> LoaderConfig:
        """``loader`` as a ``LoaderConfig``: the defaults for ``None``, one built from a
        mapping of its fields (an unknown one raises ``SettingError``)."""
        if loader is None:
            return cls()
        if isinstance(loader, cls):
            return loader
        if isinstance(loader, Mapping):
            known = sorted(cls.__dataclass_fields__)
            unknown = sorted(set(loader) - set(known))
            if unknown:
                raise SettingError(f"data.loader.{unknown[0]}", loader[unknown[0]], f"unknown setting; known: {known}")
            return cls(**loader)
        raise TypeError(f"loader must be a LoaderConfig, a mapping of its fields or None, got {type(loader).__name__}")


class EpochSeededSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(index, epoch)`` so per-row sampling is seeded by
    both and stays deterministic in any dataloader worker. Each rank gets a distinct shard."""

    def __iter__(self):  # type: ignore[override]
        return ((int(i), self.epoch) for i in super().__iter__())


def file_sources(train_files: str | Iterable[str] | None, hub_dataset: str | None) -> dict[str, Any]:
    """The model card's ``sources`` (``ctem.modules.contract.DataFacts``) of data read from
    ``train_files`` and / or ``hub_dataset``."""
    sources: dict[str, Any] = {}
    if train_files:
        sources["files"] = file_list(train_files)
    if hub_dataset:
        sources["hub_dataset"] = hub_dataset
    return sources


def file_list(files: str | Iterable[str]) -> list[str]:
    """``files`` (one path, or a list or OmegaConf list of them) as a list of strings."""
    return [files] if isinstance(files, str) else [str(f) for f in files]


class ShardedDataModule(StageData):
    """Base of ctem's DataModules: they shard the data per rank themselves (so trainer
    configs set ``use_distributed_sampler: false``) and build their loader here; each
    declares what ``ctem-train`` and the model card read (``StageData``).

    Subclasses call ``super().__init__(loader, language)`` (the ``LoaderConfig`` every
    module takes, kept as ``self.loader``, and the data's ISO 639-1 language code, ``conf/lang``'s
    ``code``, kept as ``self.language`` for the model card; ``None``: not said) and set ``batch_size`` (checked: ``SettingError`` naming
    ``data.batch_size``), ``seed`` and, for ``sharded_loader``, ``drop_last``.

    Checkpoints hold where the run stands in its data and its random states
    (``state_dict``); a run resumed from one continues with the next batch of the same
    epoch, with the same randomness (see ``ctem.data_modules.resume``).
    """

    seed: int
    drop_last: bool

    _resume_at: Position | None = None
    _train_loader: ResumableDataLoader | None = None

    def __init__(self, loader: LoaderConfig | Mapping[str, Any] | None = None, language: str | None = None) -> None:
        super().__init__()
        self.loader = LoaderConfig.of(loader)
        self.language = language

    def check_language(self, rows: datasets.Dataset, column: str, sample: int = 200) -> None:
        """Warn, and leave the model card's language unsaid, when the first ``sample`` texts
        of ``rows[column]`` are not written in ``self.language``'s script (English rows trained
        with the default ``lang=zh``: the Chinese instruction on English queries, a card
        saying zh)."""
        if not self.language:
            return
        texts = rows.select(range(min(sample, len(rows))))[column]
        if not written_in(self.language, texts):
            log.warning(
                "the data is configured as language %r (lang=%s) but %d sampled texts are not written in its script: "
                "set lang to the data's language (conf/lang/: zh, en); the model card will not name a language",
                self.language, self.language, len(texts),
            )
            self.language = None

    @property
    def batch_size(self) -> int:
        """Rows per batch per device; set by the subclass, refused unless a whole number >= 1."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingError("data.batch_size", value, "must be a whole number >= 1")
        self._batch_size = value

    def state_dict(self) -> dict[str, Any]:
        """While fitting: the ``epoch``, the batches of it trained on (``batches_done``) and
        the random states (``rng``); saved in every checkpoint."""
        trainer = self.trainer
        if trainer is None:
            return {}
        # The epoch these batches belong to: the last one started (current_epoch already
        # counts an epoch whose end hooks ran, e.g. when SIGTERM stops the run there).
        epoch = max(trainer.fit_loop.epoch_progress.current.started - 1, 0)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        worker_seed = self._train_loader.worker_seed if self._train_loader is not None else None
        return Position(epoch, done, rng_states(), worker_seed).state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the loader (built after this, by Lightning) start where the checkpoint stopped."""
        if state_dict:
            self._resume_at = Position.from_state(state_dict)

    def rank_world(self) -> tuple[int, int]:
        """``(global rank, world size)`` of the attached trainer, else of the default
        process group, else ``(0, 1)``."""
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return rank_and_world()

    def shuffled_shard(self, rows: datasets.IterableDataset, buffer_size: int) -> datasets.IterableDataset:
        """A streamed source shuffled through a ``buffer_size`` buffer (seeded, reshuffled
        per epoch) and split so that each rank reads its own part."""
        rows = rows.shuffle(seed=self.seed, buffer_size=buffer_size)
        rank, world = self.rank_world()
        if world > 1:
            rows = datasets.distributed.split_dataset_by_node(rows, rank=rank, world_size=world)
        return rows

    def _loader_options(self) -> dict[str, Any]:
        """The ``loader`` settings; with workers, a generator of their seeds, seeded by
        ``seed`` and the rank (so a resumed run can seed them again as the interrupted one did)."""
        workers = self.loader.num_workers > 0
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank_world()[0]) if workers else None
        return dict(
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            persistent_workers=self.loader.persistent_workers and workers,
            generator=generator,
        )

    def _loader(self, dataset: Dataset, **options: Any) -> ResumableDataLoader:
        """A loader that starts where a restored checkpoint stopped and names the data in its errors."""
        loader = ResumableDataLoader(dataset, **options, **self._loader_options())
        loader.source = self.describe_data()
        self._train_loader = loader
        if self._resume_at is not None:
            loader.resume(self._resume_at)
            self._resume_at = None
        return loader

    def describe_data(self) -> str:
        """The training data as error messages name it (files or hub dataset)."""
        files, hub = getattr(self, "train_files", None), getattr(self, "hub_dataset", None)
        return describe_source(files, hub) if files or hub else "the training data"

    def sharded_loader(self, dataset: Dataset, collate_fn: Callable) -> DataLoader:
        """Batches of ``batch_size``: a streamed ``IterableDataset`` as it comes (already
        split by node), a map-style one through this rank's ``EpochSeededSampler`` shard."""
        if isinstance(dataset, IterableDataset):
            return self._loader(dataset, batch_size=self.batch_size, drop_last=self.drop_last, collate_fn=collate_fn)
        rank, world = self.rank_world()
        if self.drop_last and len(dataset) < self.batch_size * world:
            raise DataSizeError(
                f"data.batch_size={self.batch_size} x {world} device(s) needs at least {self.batch_size * world} "
                f"training rows for one full batch, but the data has {len(dataset)}: lower data.batch_size or add data"
            )
        sampler = EpochSeededSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=False)
        return self.batch_sampler_loader(dataset, BatchSampler(sampler, self.batch_size, self.drop_last), collate_fn)

    def batch_sampler_loader(self, dataset: Dataset, batch_sampler: Sampler, collate_fn: Callable) -> DataLoader:
        """A loader over ``batch_sampler`` (which shards by rank itself; its ``sampler``
        carries the epoch)."""
        return self._loader(dataset, batch_sampler=SkippableBatches(batch_sampler), collate_fn=collate_fn)
