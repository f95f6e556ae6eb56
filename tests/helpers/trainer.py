"""The Lightning ``Trainer`` of the tests: CPU, nothing logged, saved or drawn.

Tests get it through the ``make_trainer`` fixture (rooted in the test's ``tmp_path``); the
DDP scripts in this folder, which run outside pytest, call ``cpu_trainer`` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L


def cpu_trainer(root_dir: str | Path, **overrides: Any) -> L.Trainer:
    """``L.Trainer`` on the CPU with no logger, checkpoints, progress bar, model summary or
    distributed sampler, writing under ``root_dir``; ``overrides`` replace any of these.
    Runs one epoch unless ``max_epochs`` or ``max_steps`` is given (``max_steps`` alone
    bounds the run, as in Lightning)."""
    settings: dict[str, Any] = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(root_dir),
    )
    if "max_steps" not in overrides:
        settings["max_epochs"] = 1
    return L.Trainer(**{**settings, **overrides})
