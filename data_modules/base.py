"""What every ctem DataModule shares: rank-aware sharding and the training DataLoader."""

from __future__ import annotations

from typing import Any, Callable

import datasets
import datasets.distributed
import lightning as L
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from ctem.distributed import rank_and_world
from ctem.data_modules.formats import DataSizeError


class EpochSeededSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(index, epoch)`` so per-row sampling is seeded by
    both and stays deterministic in any dataloader worker. Each rank gets a distinct shard."""

    def __iter__(self):  # type: ignore[override]
        return ((int(i), self.epoch) for i in super().__iter__())


class ShardedDataModule(L.LightningDataModule):
    """Base of ctem's DataModules: they shard the data per rank themselves (so trainer
    configs set ``use_distributed_sampler: false``) and build their loader here.

    Subclasses set ``batch_size``, ``seed``, ``num_workers``, ``pin_memory``,
    ``persistent_workers`` and ``drop_last``.
    """

    batch_size: int
    seed: int
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    drop_last: bool

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
        return dict(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def sharded_loader(self, dataset: Dataset, collate_fn: Callable) -> DataLoader:
        """Batches of ``batch_size``: a streamed ``IterableDataset`` as it comes (already
        split by node), a map-style one through this rank's ``EpochSeededSampler`` shard."""
        options = dict(batch_size=self.batch_size, collate_fn=collate_fn, drop_last=self.drop_last, **self._loader_options())
        if isinstance(dataset, IterableDataset):
            return DataLoader(dataset, **options)
        rank, world = self.rank_world()
        if self.drop_last and len(dataset) < self.batch_size * world:
            raise DataSizeError(
                f"data.batch_size={self.batch_size} x {world} device(s) needs at least {self.batch_size * world} "
                f"training rows for one full batch, but the data has {len(dataset)}: lower data.batch_size or add data"
            )
        sampler = EpochSeededSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=False)
        return DataLoader(dataset, sampler=sampler, **options)

    def batch_sampler_loader(self, dataset: Dataset, batch_sampler: Sampler, collate_fn: Callable) -> DataLoader:
        """A loader over ``batch_sampler`` (which shards by rank itself)."""
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, **self._loader_options())
