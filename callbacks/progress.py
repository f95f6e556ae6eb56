"""``StepProgressBar``: Lightning's TQDM bar, with a total (and so an ETA) that knows
``trainer.max_steps``."""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """A TQDM progress bar whose epoch total stops at ``trainer.max_steps``.

    Lightning's bar counts the batches of a whole epoch, so a run of ``max_steps=150`` over
    a 2,000-batch epoch showed ``12/1996`` and an ETA of hours. This bar counts the batches
    this epoch will really run: the epoch's batches, or the ones left until ``max_steps``
    (times ``accumulate_grad_batches``), whichever is fewer.
    """

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps < 0:
            return total
        left = max(max_steps - self.trainer.global_step, 0) * self.trainer.accumulate_grad_batches
        return left if math.isinf(total) else min(total, left)
