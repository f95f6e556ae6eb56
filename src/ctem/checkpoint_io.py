"""Lightning checkpoints written atomically: a full disk or a kill never leaves a truncated
``.ckpt`` at the target path (the trainer's ``plugins`` in ``conf/trainer/cpu.yaml``, which
every trainer config extends)."""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ctem.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go to a temporary file beside the target,
    flushed to disk and renamed over it (``ctem.files.atomic_path``): the target is the old
    checkpoint or the complete new one, and the temporary is removed on any failure (an
    ``OSError`` then names the target). Remote paths (``s3://...``) and ``storage_options``
    go to ``TorchCheckpointIO`` unchanged."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialised first: a write error is then a plain OSError
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
