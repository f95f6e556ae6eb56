"""LoRA (low-rank adapters, the ``peft`` library) on a ``TextEncoder``'s backbone.

With ``model.lora.enabled`` the backbone's weights are frozen and each target linear layer
gets a trainable low-rank update ``W + (alpha / r) * B @ A``; the contrastive and
fine-tuning stages then train only the adapters. The adapters live in the training
checkpoints (resume works as without them); the exported folder holds the **merged**
weights, a plain transformers model that transformers, sentence-transformers and ctem load
unchanged (``merged_backbone``).

Reference: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from ctem.settings import SettingError


@dataclass
class LoraConfig:
    """``model.lora``: ``enabled``; ``r`` the rank; ``alpha`` the scale numerator
    (update scaled by ``alpha / r``); ``dropout`` on the adapters' input; ``target_modules``
    the names of the linear layers to adapt (``None``: peft's default for the architecture,
    BERT's query and value projections)."""

    enabled: bool = False
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None

    @classmethod
    def from_any(cls, value: "LoraConfig | dict[str, Any] | None") -> "LoraConfig":
        config = value if isinstance(value, LoraConfig) else cls(**(value or {}))
        if config.enabled and (isinstance(config.r, bool) or not isinstance(config.r, int) or config.r < 1):
            raise SettingError("model.lora.r", config.r, "must be at least 1")
        return config

    def apply(self, backbone: nn.Module) -> nn.Module:
        """``backbone`` with LoRA adapters (only they train), or as it is when not enabled."""
        if not self.enabled:
            return backbone
        import peft

        config = peft.LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules) if self.target_modules else None,
            bias="none",
        )
        return peft.get_peft_model(backbone, config)


def merged_backbone(backbone: nn.Module, state: dict[str, Any] | None = None) -> nn.Module:
    """A plain transformers model with the adapters of ``backbone`` (loaded from ``state``,
    its full state dict, when given: e.g. gathered from FSDP) merged into its weights;
    ``backbone`` itself is left as it is (training may go on)."""
    copied = copy.deepcopy(backbone)
    if state is not None:
        copied.load_state_dict(state)
    return copied.merge_and_unload()
