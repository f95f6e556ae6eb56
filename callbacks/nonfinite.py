"""``NonFiniteGuard``: stop training on a NaN / inf loss or gradient norm.

A learning rate far too high (``stage.optimizer.lr=1e3``) turns the weights into NaN within
a few steps; without a check the run would go on, exit 0 and export a model full of NaN.
The guard checks every step, under automatic and manual optimisation (the gradient cache)
alike:

- ``on_before_optimizer_step``: the gradient norm, before the optimizer applies it, so the
  weights stay those of the last good step (skipped under 16-bit mixed precision, whose
  gradient scaler skips steps with inf gradients by design);
- ``on_train_batch_end``: the step's loss (``training_step``'s return value).

On a non-finite value it raises ``ctem.finite.NonFiniteError`` with the step, the learning
rate and the last finite loss; Lightning stops without ``on_fit_end``, so nothing is
exported, and the command reports the message as one line and exits 1. Under DDP the ranks
agree on the decision, so they stop together.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ctem.finite import NonFiniteError


class NonFiniteGuard(Callback):
    """Raises ``NonFiniteError`` at the first non-finite loss or gradient norm."""

    def __init__(self) -> None:
        self.last_finite: tuple[int, float] | None = None  # (step, loss)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        if not trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(norm)), all=True):
            self._stop(trainer, f"non-finite gradient norm ({float(norm)})", trainer.global_step + 1)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = float(loss.detach())
        step = trainer.global_step
        if not trainer.strategy.reduce_boolean_decision(math.isfinite(value), all=True):
            self._stop(trainer, f"non-finite loss ({value})", step)
        self.last_finite = (step, value)

    def _stop(self, trainer: L.Trainer, what: str, step: int) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        last = f"last finite loss {self.last_finite[1]:.6g} at step {self.last_finite[0]}" if self.last_finite else "no finite loss before it"
        raise NonFiniteError(
            f"training stopped at step {step}: {what} at learning rate {lr:.6g}; {last}. "
            "Nothing was exported: lower stage.optimizer.lr (or clip gradients, trainer.gradient_clip_val) and start again"
        )
