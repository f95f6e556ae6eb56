"""Passes of the training loader: resuming a run mid-epoch exactly (where the data stands,
the random states), and refusing a streamed pass that gives no batch.

Every checkpoint records (through the DataModule's ``state_dict``) a :class:`Position`: the
epoch, how many of its batches were trained on, and the random states of Python, numpy and
torch (dropout, RetroMAE masks). Restored (before the loader is built), it makes the
loader's first pass over that epoch start after those batches (map-style data skips their
indices, nothing is loaded; a streamed source reads and drops them) and restores the random
states where the uninterrupted run had them: before the next batch, or at the end of an
epoch before the next pass starts. A killed-and-resumed run trains on the same batches with
the same randomness as an uninterrupted one.

Randomness drawn inside loader worker processes (``data.loader.num_workers > 0``; RetroMAE's
masks) comes from each worker's seed, which a pass derives from the loader's own
``generator``. The position also records that generator's state at the start of the pass,
so the resumed pass seeds its workers as the interrupted one did, and its workers load and
drop the batches already trained on (instead of skipping their indices), so each worker's
random stream stands where it stood. Persistent workers
(``data.loader.persistent_workers=true``) keep their streams across epochs: a resume into a
later epoch cannot rebuild them, and says so.

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
    random states then (:func:`rng_states`); ``worker_seed``: the state of the loader's
    worker-seed generator at the start of that epoch's pass (``None`` without workers)."""

    epoch: int
    batches_done: int
    rng: dict[str, Any]
    worker_seed: torch.Tensor | None = None

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "rng": self.rng, "worker_seed": self.worker_seed}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Position":
        return cls(state["epoch"], state["batches_done"], state["rng"], state.get("worker_seed"))


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

    def start_at(self, position: Position, skip: bool = True) -> None:
        """Skip ``position.batches_done`` batches of the next pass if it is over ``position.epoch``
        (``skip=False``: draw them; the loader drops them). The sampler is set to the epoch
        that pass is expected to be (a loader with worker processes draws batches before
        Lightning sets it); ``finished``: the position is at the end of its epoch, so the
        next pass is a new one."""
        self._start = position if skip else None
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
    through its :class:`SkippableBatches`, or for a streamed dataset or worker processes by
    dropping the first batches it yields.

    With worker processes, pass a ``generator``: the workers' seeds are drawn from it, and
    ``worker_seed`` holds its state at the start of the current pass.

    A streamed dataset has no length, so Lightning cannot see that it is empty: a pass
    that yields no batch at all (no rows, every row skipped, fewer rows than a batch)
    raises ``DataSizeError`` naming ``source`` instead of ending a 0-step "training".
    """

    _start: Position | None = None
    _rng: dict[str, Any] | None = None
    worker_seed: torch.Tensor | None = None
    source: str = "the training data"

    def resume(self, position: Position) -> None:
        """Start the next pass over ``position.epoch`` after its ``batches_done`` batches,
        with the random states of ``position``."""
        self._rng = position.rng
        workers = self.num_workers > 0
        if workers and position.worker_seed is not None and self.generator is not None:
            self._restore_worker_seed(position)
        if isinstance(self.batch_sampler, SkippableBatches):
            self.batch_sampler.start_at(position, skip=not workers)
            if not workers or self.batch_sampler.finished:
                return
        self._start = position

    def _restore_worker_seed(self, position: Position) -> None:
        """The generator as it was when ``position.epoch``'s pass drew its worker seeds; at
        the end of that epoch, as the next pass will find it (one draw on)."""
        if self.persistent_workers and position.epoch > 0:
            warnings.warn(
                "resuming with persistent loader workers after the first epoch: the workers' random "
                "states (e.g. RetroMAE masks) cannot be restored; set data.loader.persistent_workers=false "
                "for an exact resume",
                stacklevel=2,
            )
        self.generator.set_state(position.worker_seed)
        if isinstance(self.batch_sampler, SkippableBatches) and position.batches_done >= len(self.batch_sampler):
            _draw_worker_seed(self.generator)

    def __iter__(self) -> Iterator[Any]:
        rng, self._rng = self._rng, None
        new_epoch = rng is not None and isinstance(self.batch_sampler, SkippableBatches) and self.batch_sampler.finished
        if new_epoch:  # the uninterrupted run starts the next epoch from these states
            set_rng_states(rng)
        if self.num_workers > 0 and self.generator is not None and (self._iterator is None or not self.persistent_workers):
            self.worker_seed = self.generator.get_state()
        batches = super().__iter__()
        if not isinstance(self.batch_sampler, SkippableBatches):
            batches = _not_empty(batches, self.source, self.batch_size)
        start, self._start = self._start, None
        if start is None and (rng is None or new_epoch):
            return batches
        return _resumed(batches, start.batches_done if start is not None else 0, rng)


def _draw_worker_seed(generator: torch.Generator) -> None:
    """Advance ``generator`` as one pass of a loader with workers does (one int64 draw)."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)


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
