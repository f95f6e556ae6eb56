"""``EpochBoundaryResume``: resume a ``max_steps`` run from a checkpoint taken at an epoch end.

A checkpoint saved after the last batch of an epoch (``ModelCheckpoint`` at the epoch's end,
``interrupted.ckpt`` when SIGTERM arrives on the last batch) still counts that epoch's
batches as the current ones. Resuming an iteration-based run (``trainer.max_steps``),
Lightning 2.6 carries those counts into the next epoch: it trains one batch of it and
moves on, silently skipping the rest. On loading such a checkpoint this callback clears the
finished epoch's current batch counts (the totals stay), so the next epoch runs in full, as
in the uninterrupted run. Checkpoints taken within an epoch are left as they are.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class EpochBoundaryResume(Callback):
    """Makes a run resumed from an epoch-end checkpoint start the next epoch afresh."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        progress = loop.get("epoch_loop.batch_progress")
        if not progress:
            return
        current = progress["current"]
        if progress["is_last_batch"] and current["ready"] == current["completed"]:
            progress["current"] = {key: 0 for key in current}
            progress["is_last_batch"] = False
