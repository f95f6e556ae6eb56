"""Passes of the training loader: resuming a run mid-epoch exactly (where the data stands,
the random states), and refusing a streamed pass that gives no batch.

Every checkpoint records (through the DataModule's ``state_dict``) a :class:`Position`: the
epoch, how many of its batches were trained on, and the random states of Python, numpy and
torch (dropout, RetroMAE masks). Restored (before the loader is built), it makes the
loader's first pass over that epoch start after those batches (map-style data skips their
indices, nothing is loaded; a streamed source reads and drops them) and restores the random
states where the uninterrupted run had them: before the next batch, or at the end of an
epoch before the next pass draws its worker seed. With ``num_workers=0`` a
killed-and-resumed run trains on the same batches with the same randomness as an
uninterrupted one; with worker processes the batches are the same but randomness drawn
inside the workers is not.

(Lightning's own stateful-loader hook does not serve here: it restores loader states only
when the loader is first built after the loops are restored, but ``configure_optimizers``
builds it earlier to count the steps of the schedule.)
"""

from __future__ import annotations

import itertools
import random
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ctem.rows import DataSizeError


@dataclass(frozen=True)
class Position:
    """``batches_done`` batches of epoch ``epoch`` (0-based) are trained on; ``rng``: the
    random states then (:func:`rng_states`)."""

    epoch: int
    batches_done: int
    rng: dict[str, Any]

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "rng": self.rng}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Position":
        return cls(state["epoch"], state["batches_done"], state["rng"])


class SkippableBatches(Sampler[list]):
    """The batches of ``batch_sampler``; after ``start_at(position)`` the first pass over
    ``position.epoch`` starts after its ``batches_done`` batches (only their indices are
    drawn). ``sampler`` is the epoch-seeded sampler Lightning calls ``set_epoch`` on; the
    epoch is read when the first batch is drawn, after Lightning has set it."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.sampler = batch_sampler.sampler
        self._start: Position | None = None
        self.finished = False

    def start_at(self, position: Position) -> None:
        """Skip ``position.batches_done`` batches of the next pass if it is over ``position.epoch``.
        The sampler is set to the epoch that pass is expected to be (a loader with worker
        processes draws batches before Lightning sets it); ``finished``: the position is at
        the end of its epoch, so the next pass is a new one."""
        self._start = position
        self.finished = position.batches_done >= len(self)
        self.sampler.set_epoch(position.epoch + 1 if self.finished else position.epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list]:
        start, self._start = self._start, None
        skip = start.batches_done if start is not None and start.epoch == self.sampler.epoch else 0
        yield from itertools.islice(self.batch_sampler, skip, None)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose next pass can start part-way through an epoch (``resume``):
    through its :class:`SkippableBatches`, or for a streamed dataset by dropping the first
    batches it yields.

    A streamed dataset has no length, so Lightning cannot see that it is empty: a pass
    that yields no batch at all (no rows, every row skipped, fewer rows than a batch)
    raises ``DataSizeError`` naming ``source`` instead of ending a 0-step "training".
    """

    _start: Position | None = None
    _rng: dict[str, Any] | None = None
    source: str = "the training data"

    def resume(self, position: Position) -> None:
        """Start the next pass over ``position.epoch`` after its ``batches_done`` batches,
        with the random states of ``position``."""
        self._rng = position.rng
        if isinstance(self.batch_sampler, SkippableBatches):
            self.batch_sampler.start_at(position)
        else:
            self._start = position

    def __iter__(self) -> Iterator[Any]:
        rng, self._rng = self._rng, None
        new_epoch = rng is not None and isinstance(self.batch_sampler, SkippableBatches) and self.batch_sampler.finished
        if new_epoch:  # the uninterrupted run starts the next epoch from these states
            set_rng_states(rng)
        batches = super().__iter__()
        if not isinstance(self.batch_sampler, SkippableBatches):
            batches = _not_empty(batches, self.source, self.batch_size)
        start, self._start = self._start, None
        if start is None and (rng is None or new_epoch):
            return batches
        return _resumed(batches, start.batches_done if start is not None else 0, rng)


def _resumed(batches: Iterator[Any], skip: int, rng: dict[str, Any] | None) -> Iterator[Any]:
    """``batches`` without the first ``skip``, the rest drawn from the random states ``rng``,
    set when the first batch is wanted: mid-epoch, the uninterrupted run's next draw is the
    next batch's (not the worker seed a new iterator draws, nor the dropped batches')."""
    for _ in itertools.islice(batches, skip):
        pass
    if rng is not None:
        set_rng_states(rng)
    yield from batches


# Lightning warns on every mid-epoch resume that a loader without its stateful-loader hook
# is "not resumable"; ctem's loaders are, through the DataModule (see the module docstring).
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def _not_empty(batches: Iterator[Any], source: str, batch_size: int | None) -> Iterator[Any]:
    empty = True
    for batch in batches:
        empty = False
        yield batch
    if empty:
        raise DataSizeError(
            f"{source}: a pass over the streamed data gave no batch of data.batch_size={batch_size}: "
            "it has no usable rows (empty, or every row skipped as bad) or fewer than one batch"
        )


def rng_states() -> dict[str, Any]:
    """The random states of Python, numpy and torch (CPU, and CUDA when in use), as plain
    values and tensors (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
