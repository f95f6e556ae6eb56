"""`MultiTaskModule`: instruction multi-task fine-tuning (C-Pack stage 3)."""

from __future__ import annotations

from typing import Any

import torch

from ctem.modules.bi_encoder import BiEncoderModule


class MultiTaskModule(BiEncoderModule):
    """``BiEncoderModule`` for batches of ``LabeledDataModule``: one task per batch.

    Each batch carries ``"task"`` (its dataset) and ``"in_batch_negatives"``. Batches whose
    dataset turns in-batch negatives off (classification-like data, where other queries'
    positives are often correct answers too) are scored against their own group only
    (positive + hard negatives), with the same temperature; under DDP these batches skip
    the cross-device gather (nothing from other ranks is scored). ``BiEncoderModule``
    reads that flag per batch; everything else (loss, cross-device negatives, gradient
    cache, logging, export) is ``BiEncoderModule``'s too.

    Logs, besides ``BiEncoderModule``'s metrics, ``train/loss/<task>`` and
    ``train/accuracy/<task>``: the means over the task's batches among the last
    ``trainer.log_every_n_steps`` batches, written straight to the loggers, and only for tasks
    that had a batch in that window (``self.log`` would repeat a task's last value at the
    steps of other tasks). Under DDP they are rank 0's batches, like ``train/loss``.

    Args: as ``BiEncoderModule``; ``in_batch_negatives=False`` turns in-batch
    negatives off for every dataset.
    """

    stage_name = "multitask"
    stage_description = (
        "instruction multi-task fine-tuning (C-Pack stage 3): InfoNCE with task instructions on queries, hard negatives and one-task batches"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # task -> [loss sum, accuracy sum, batches] since the last write to the loggers
        self._task_sums: dict[str, list[float]] = {}
        self._batches_since_write = 0

    def log_step(self, loss: torch.Tensor, accuracy: torch.Tensor, batch: dict[str, Any], prefix: str = "train") -> None:
        """``BiEncoderModule``'s metrics, plus the batch's task metrics (see the class docstring)."""
        super().log_step(loss, accuracy, batch, prefix)
        task = batch.get("task")
        if task is None:
            return
        sums = self._task_sums.setdefault(task, [0.0, 0.0, 0])
        sums[0] += float(loss.detach())
        sums[1] += float(accuracy)
        sums[2] += 1
        self._batches_since_write += 1
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if every and self._batches_since_write >= every:
            self.write_task_metrics(prefix)

    def write_task_metrics(self, prefix: str = "train") -> None:
        """Write the per-task means gathered since the last write to every logger, then reset."""
        metrics = {}
        for task, (loss, accuracy, batches) in self._task_sums.items():
            metrics[f"{prefix}/loss/{task}"] = loss / batches
            metrics[f"{prefix}/accuracy/{task}"] = accuracy / batches
        self._task_sums = {}
        self._batches_since_write = 0
        if not metrics or self._trainer is None:
            return
        # The step Lightning writes its own rows at: the optimizer steps taken before this
        # batch. Every step is automatically optimised (the gradient cache included) and
        # this runs in training_step, before the batch's optimizer step, or at the epoch's
        # end, after its last one; either way `global_step` counts exactly those steps.
        step = self.trainer.global_step
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def on_train_epoch_end(self) -> None:
        self.write_task_metrics()
