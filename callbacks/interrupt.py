"""``InterruptCheckpoint``: save a checkpoint to resume from when a run is stopped by a signal.

Lightning handles SIGTERM (a scheduler's stop, ``kill``) by finishing the current batch and
raising ``SIGTERMException`` (a ``SystemExit`` whose status is 0), and Ctrl-C (SIGINT) by
raising ``KeyboardInterrupt`` and exiting 1. Either way this callback writes the full
training state to ``<dirpath>/interrupted.ckpt``; ``ctem-train`` then says where, in one
line, and exits 1, so a script (``set -e``) stops instead of going on without a model, and
``ckpt_path=<that file>`` continues the run exactly where it stopped.

After the last step, Lightning's signal handling has ended; from ``on_fit_end`` (before the
stage's final export) until ``teardown`` this callback turns SIGTERM into the same
``SIGTERMException``, so a stopped export saves the checkpoint and says so too
(``exporting``) instead of dying silently with status 143.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

SIGNALS: dict[type[BaseException], str] = {SIGTERMException: "SIGTERM", KeyboardInterrupt: "SIGINT (Ctrl-C)"}


class InterruptCheckpoint(Callback):
    """On SIGTERM or Ctrl-C, save a checkpoint to ``dirpath/filename`` (``dirpath`` ``None``:
    ``<trainer.default_root_dir>/checkpoints``). After the run, ``signal`` names the signal
    and ``saved`` the checkpoint written (both ``None`` until then)."""

    def __init__(self, dirpath: str | None = None, filename: str = "interrupted.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.signal: str | None = None
        self.saved: Path | None = None
        self.exporting = False
        self._previous: Any = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Training is done and the stage's export comes next: SIGTERM stops it as it stops a step."""
        self.exporting = True
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, _raise_sigterm)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        name = next((n for kind, n in SIGNALS.items() if isinstance(exception, kind)), None)
        if name is None:
            return
        self.signal = name
        path = Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.filename
        trainer.save_checkpoint(path)  # collective under DDP
        self.saved = path.resolve()


def _raise_sigterm(signum: int, frame: Any) -> None:
    raise SIGTERMException()
