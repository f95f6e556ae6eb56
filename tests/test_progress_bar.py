"""The progress bar's total (and ETA) stops at trainer.max_steps."""

from __future__ import annotations

from types import SimpleNamespace

from ctem.callbacks import StepProgressBar


def bar_for(max_steps: int, global_step: int, epoch_batches: float, accumulate: int = 1) -> StepProgressBar:
    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=10, max_steps=max_steps, global_step=global_step, num_training_batches=epoch_batches,
                                   accumulate_grad_batches=accumulate)
    return bar


def test_total_is_the_batches_this_epoch_will_run() -> None:
    assert bar_for(150, 0, 1996).total_train_batches == 150
    assert bar_for(150, 100, 1996).total_train_batches == 50
    assert bar_for(150, 0, 24).total_train_batches == 24
    assert bar_for(-1, 0, 24).total_train_batches == 24
    assert bar_for(10, 4, float("inf"), accumulate=2).total_train_batches == 12
