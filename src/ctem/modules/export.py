"""Writing a stage's trained encoder at the end of ``fit``, whatever the strategy."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ctem.encoder import TextEncoder


def submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (e.g. ``"encoder.backbone."``), prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def export_encoder(trainer: L.Trainer, encoder: TextEncoder, prefix: str, directory: str | Path) -> Path | None:
    """Save ``encoder`` to ``directory`` (rank 0) with ``TextEncoder.save_pretrained``.

    The weights come from ``trainer.strategy.lightning_module_state_dict()``, a collective
    call that returns full (unsharded) weights under FSDP, so every rank must call this.
    ``prefix`` is the encoder's attribute path in the LightningModule (``"encoder."``).
    Returns the folder on rank 0, ``None`` elsewhere.
    """
    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    return encoder.save_pretrained(directory, backbone_state=submodule_state(state, f"{prefix}backbone."))
