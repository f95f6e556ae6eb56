"""`EncoderStage`: what every training stage shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch

from ctem.encoder import TextEncoder
from ctem.modules.export import export_encoder
from ctem.modules.throughput import Throughput
from ctem.optim import OptimizerConfig, build_optimizer_and_scheduler


class EncoderStage(L.LightningModule):
    """Base of ctem's stage modules: trains ``encoder`` with AdamW and a warm-up / decay
    schedule (``optimizer``, the ``stage.optimizer`` node), logs ``train/lr`` and the
    throughput through ``self.throughput``, and at the end of ``fit`` writes the encoder and
    its model card to ``final_model_dir`` (``export_encoder``: full weights under FSDP too;
    every rank takes part, rank 0 writes).

    A stage declares ``stage_name`` (its ``conf/stage/`` entry, the model card's stage) and
    ``stage_description`` (the card's line about it), and adds its own hyper-parameters to
    ``card_hyperparameters``; files beyond the encoder's go in ``write_extra_files``.

    Args:
        encoder: the ``TextEncoder`` to train.
        optimizer: AdamW and learning-rate schedule settings.
        final_model_dir: where to write the trained encoder (``None``: nowhere).
    """

    stage_name: ClassVar[str]
    stage_description: ClassVar[str]

    def __init__(self, encoder: TextEncoder, optimizer: OptimizerConfig | dict[str, Any] | None, final_model_dir: str | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.optimizer_config = OptimizerConfig.from_any(optimizer)
        self.final_model_dir = final_model_dir
        self.throughput = Throughput()

    def configure_optimizers(self) -> Any:
        return build_optimizer_and_scheduler(self, self.optimizer_config, self.trainer.estimated_stepping_batches)

    def card_hyperparameters(self) -> dict[str, Any]:
        """The stage's rows of the model card's hyper-parameter table, in order (``None``:
        not shown): the optimizer's and the steps trained; a stage adds its own after them."""
        optimizer = self.optimizer_config
        warmup = f"{optimizer.warmup_steps} steps" if optimizer.warmup_steps is not None else f"{optimizer.warmup_ratio:g} of the steps"
        return {
            "learning rate": optimizer.lr,
            "schedule": f"{optimizer.scheduler}, warm-up {warmup}",
            "weight decay": optimizer.weight_decay,
            "steps": self.trainer.global_step,
        }

    def write_extra_files(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        """Write this stage's files beyond the encoder's into the exported ``folder``, from the
        module's full ``state``; none by default."""

    def export_note(self, path: Path) -> str:
        """The line printed once the trained model is written to ``path``."""
        return f"final model written to {path}"

    def on_fit_end(self) -> None:
        if not self.final_model_dir:
            return
        path = export_encoder(self.trainer, self.encoder, "encoder.", self.final_model_dir, extra_files=self.write_extra_files)
        if path is not None:
            print(f"[ctem] {self.export_note(path)}")
