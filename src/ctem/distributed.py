"""Distributed helpers: rank / world size, the ranks a launcher started a command on
(:func:`launched_ranks`), an all-gather that carries gradients, work split over ranks and
gathered back (:class:`RankShards`), whether DDP syncs this step's gradients, and the FSDP
strategy (refused without CUDA) and wrap policy."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ctem.errors import CtemInputError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass(frozen=True)
class LaunchedRanks:
    """This process's place among the ranks a launcher started (one rank: not launched).

    Attributes:
        rank: this process's rank (0 .. world - 1).
        world: number of ranks.
        device: the device this rank encodes on (``cuda:<LOCAL_RANK>`` with CUDA), ``None``:
            the command's own choice (one rank, or CPU ranks).
    """

    rank: int = 0
    world: int = 1
    device: torch.device | None = None


@contextmanager
def launched_ranks() -> Iterator[LaunchedRanks]:
    """Join the process group a launcher describes in the environment (``torchrun``:
    ``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``): NCCL
    with one GPU per local rank, gloo on CPU; left on exit. Without a launcher: one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_distributed():
        yield LaunchedRanks(*rank_and_world())
        return
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device is not None else "gloo")
    try:
        yield LaunchedRanks(dist.get_rank(), dist.get_world_size(), device)
    finally:
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's ``[n, ...]`` tensor. Backward: sum the incoming
    gradient over ranks, then return this rank's slice, so each example receives the
    gradient of every rank's loss terms that used it."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([tensor.size(0)], device=tensor.device))
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(f"all ranks must gather equal-sized tensors, got sizes {[int(s) for s in sizes]}")
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), tensor.size(0)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.size
        return grad[start : start + ctx.size]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' ``tensor`` concatenated along dim 0 (rank order), differentiable.

    Gradient contract: rank ``r`` receives, for its own rows, the sum over ranks of the
    gradients of their losses. With each rank's loss a mean over its ``B`` local queries
    and DDP averaging parameter gradients over ``W`` ranks, the parameters get exactly the
    gradient of the mean loss over the ``W * B`` queries of the global batch.
    Without a process group this returns ``tensor`` unchanged.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_values(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' equal-sized ``tensor`` concatenated along dim 0 (rank order), without
    gradients (keys, ids); ``tensor`` itself without a process group."""
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    return torch.cat(list(_all_gather_stacked(tensor)))


AllGather = Callable[[torch.Tensor], torch.Tensor]
"""``[n, ...] -> [world, n, ...]``: every rank's equal-sized tensor, in rank order."""


def _all_gather_stacked(tensor: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


@dataclass(frozen=True)
class RankShards:
    """Positions ``0 .. total-1`` dealt to ranks round-robin in a given order, and the
    per-rank results gathered back into position order on every rank.

    Rank ``r`` takes ``order[r::world]``: with texts ordered longest first every rank gets
    an equal share of long and short ones. Collective: every rank builds the same split and
    calls ``gather`` / ``gather_objects`` together. With one rank nothing is communicated.
    """

    parts: tuple[np.ndarray, ...]  # the positions of each rank, in the order it works on them
    rank: int
    total: int

    @classmethod
    def split(cls, order: int | Sequence[int] | np.ndarray, rank: int, world: int) -> "RankShards":
        """Split ``order`` (a permutation of positions, or ``n`` for ``range(n)``)."""
        order = np.arange(order) if isinstance(order, int) else np.asarray(order, dtype=np.int64)
        return cls(tuple(order[r::world] for r in range(world)), rank, len(order))

    @property
    def mine(self) -> np.ndarray:
        """This rank's positions."""
        return self.parts[self.rank]

    def gather(self, local: torch.Tensor, all_gather: AllGather | None = None) -> np.ndarray:
        """Every rank's rows as one array ``[total, ...]`` in position order.

        ``local``: this rank's rows, one per position of :attr:`mine`, in that order.
        ``all_gather``: ``[n, ...] -> [world, n, ...]`` (e.g. a Lightning strategy's;
        ``None``: ``torch.distributed.all_gather``). Shares are padded to equal size.
        """
        world = len(self.parts)
        if world == 1:
            gathered = local.unsqueeze(0)
        else:
            width = max(len(p) for p in self.parts)
            padded = local.new_zeros((width, *local.shape[1:]))
            padded[: len(local)] = local
            gathered = (all_gather or _all_gather_stacked)(padded).reshape(world, width, *local.shape[1:])
        gathered = gathered.cpu().numpy()
        out = np.empty((self.total, *gathered.shape[2:]), dtype=gathered.dtype)
        for r, positions in enumerate(self.parts):
            out[positions] = gathered[r, : len(positions)]
        return out

    def gather_objects(self, local: Sequence[Any]) -> list[Any]:
        """Every rank's picklable items (one per position of :attr:`mine`) as one list in
        position order (``torch.distributed.all_gather_object``)."""
        parts: list[Any] = [local]
        if len(self.parts) > 1:
            parts = [None] * len(self.parts)
            dist.all_gather_object(parts, list(local))
        out: list[Any] = [None] * self.total
        for positions, items in zip(self.parts, parts):
            for position, item in zip(positions.tolist(), items):
                out[position] = item
        return out


def ddp_syncs_gradients(model: torch.nn.Module | None) -> bool:
    """Whether the backward of the current step all-reduces gradients through ``model``'s
    reducer: ``model`` (a strategy's wrapped model) is a ``DistributedDataParallel``
    outside ``no_sync`` (Lightning blocks the sync on micro-batches it accumulates)."""
    return isinstance(model, DistributedDataParallel) and model.require_backward_grad_sync


class LayerClassWrapPolicy:
    """FSDP auto-wrap policy: each module whose class name is in ``layer_class_names``
    (e.g. ``BertLayer``) becomes its own FSDP unit, so its parameters are gathered only
    while that layer runs."""

    def __init__(self, layer_class_names: Iterable[str] = ("BertLayer",)) -> None:
        self.names = frozenset(layer_class_names)

    def __call__(self, module: torch.nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        return recurse or type(module).__name__ in self.names


FSDP_NEEDS_CUDA = (
    "trainer=fsdp needs CUDA GPUs and this machine has none: Lightning's FSDPStrategy requires a GPU "
    "accelerator and refuses accelerator=cpu (docs/distributed.md); without GPUs use trainer=ddp_cpu"
)


def fsdp_strategy(**kwargs: Any) -> Any:
    """Lightning's ``FSDPStrategy(**kwargs)`` (``conf/trainer/fsdp.yaml``), refused in one
    line (``CtemInputError``) before the Trainer is built when torch sees no CUDA device:
    Lightning would only say its GPU accelerator has no backend."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not torch.cuda.is_available():
        raise CtemInputError(FSDP_NEEDS_CUDA)
    return FSDPStrategy(**kwargs)
