"""The learning rate and throughput every stage logs at each training step."""

from __future__ import annotations

import time

import lightning as L


class Throughput:
    """Logs ``<prefix>/lr`` and, from the second step on, ``<prefix>/samples_per_s`` and
    ``<prefix>/tokens_per_s``: the step's samples and (non-padding) tokens, times the
    number of ranks, per second of wall time since the previous step."""

    def __init__(self) -> None:
        self._last_step_time: float | None = None

    def log(self, module: L.LightningModule, samples: int, tokens: int, prefix: str = "train") -> None:
        trainer = module.trainer
        if trainer.optimizers:
            module.log(f"{prefix}/lr", trainer.optimizers[0].param_groups[0]["lr"], batch_size=samples)
        now = time.perf_counter()
        if self._last_step_time is not None:
            seconds = max(now - self._last_step_time, 1e-9)
            module.log(f"{prefix}/samples_per_s", samples * trainer.world_size / seconds, batch_size=samples)
            module.log(f"{prefix}/tokens_per_s", tokens * trainer.world_size / seconds, batch_size=samples)
        self._last_step_time = now
