"""AdamW with a warm-up / decay learning-rate schedule, shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from transformers import get_scheduler


@dataclass
class OptimizerConfig:
    """Settings of ``build_optimizer_and_scheduler``.

    lr: peak learning rate. weight_decay: AdamW decay (not applied to biases and norms).
    betas / eps: AdamW moments. scheduler: a ``transformers.get_scheduler`` name
    (``linear``, ``cosine``, ``constant_with_warmup``, ...). warmup_ratio: share of the
    total steps spent warming up linearly from 0, used when warmup_steps is ``None``.
    """

    lr: float = 2e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    scheduler: str = "linear"
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None

    @classmethod
    def from_any(cls, value: "OptimizerConfig | dict[str, Any] | None") -> "OptimizerConfig":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown optimizer settings {sorted(unknown)}; known: {sorted(known)}")
        data = dict(value)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def build_optimizer_and_scheduler(model: nn.Module, cfg: OptimizerConfig, total_steps: int | float) -> dict[str, Any]:
    """Lightning ``configure_optimizers`` return value: AdamW and a per-step schedule."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not _no_decay(n, p)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params if _no_decay(n, p)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    total = int(total_steps) if total_steps != float("inf") else 0
    if total <= 0:
        raise ValueError("set trainer.max_steps or trainer.max_epochs so the schedule knows its length")
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
