"""``InterruptCheckpoint``: save a checkpoint to resume from when a run is stopped by a signal.

Lightning handles SIGTERM (a scheduler's stop, ``kill``) by finishing the current batch and
raising ``SIGTERMException`` (a ``SystemExit`` whose status is 0), and Ctrl-C (SIGINT) by
raising ``KeyboardInterrupt`` and exiting 1. Either way this callback writes the full
training state to ``<dirpath>/interrupted.ckpt``; ``ctem-train`` then says where, in one
line, and exits 1, so a script (``set -e``) stops instead of going on without a model, and
``ckpt_path=<that file>`` continues the run exactly where it stopped.
"""

from __future__ import annotations

from pathlib import Path

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

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        name = next((n for kind, n in SIGNALS.items() if isinstance(exception, kind)), None)
        if name is None:
            return
        self.signal = name
        path = Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.filename
        trainer.save_checkpoint(path)  # collective under DDP
        self.saved = path.resolve()
