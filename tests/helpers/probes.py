"""Callbacks that record what a training run looked like from inside (for assertions)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn


class DropoutModeProbe(Callback):
    """Counts the ``nn.Dropout`` modules of the LightningModule at the first training step.

    ``in_train_mode`` / ``total`` are set once, just before the first batch runs.
    """

    def __init__(self) -> None:
        self.in_train_mode: int | None = None
        self.total: int | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.total is not None:
            return
        dropouts = [m for m in pl_module.modules() if isinstance(m, nn.Dropout)]
        self.total = len(dropouts)
        self.in_train_mode = sum(m.training for m in dropouts)
