"""Lightning checkpoints written atomically: a full disk or a kill never leaves a truncated
``.ckpt`` at the target path (the trainer's ``plugins`` in ``conf/trainer/cpu.yaml``, which
every trainer config extends); and a checkpoint given to resume from checked before any
training step (``check_resumable``)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ctem.errors import CtemInputError
from ctem.files import atomic_path


class CheckpointError(CtemInputError):
    """A checkpoint to resume from that this run cannot use: unreadable (truncated), or
    saved by another stage or model size."""


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


def check_resumable(path: str | os.PathLike, module: nn.Module, setting: str = "ckpt_path") -> None:
    """``CheckpointError`` naming ``setting`` unless the file ``path`` loads (a truncated or
    foreign file does not) and holds weights of ``module``'s names (another stage's do not) and
    shapes (another model size's do not). A folder (a sharded checkpoint) is left to Lightning."""
    path = Path(path)
    if path.is_dir():
        return
    if not path.is_file():
        raise CheckpointError(f"{setting}={path}: no such checkpoint file")
    try:  # memory-mapped: the weights are not read into memory twice
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to read it means the same to the user
        raise CheckpointError(f"{setting}={path}: not a readable checkpoint (truncated, or not a Lightning .ckpt: {err})".splitlines()[0]) from None
    saved = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{setting}={path}: holds no model weights ('state_dict'): not a Lightning checkpoint")
    expected = module.state_dict()
    missing, unknown = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unknown:
        raise CheckpointError(
            f"{setting}={path}: saved by another stage than this {type(module).__name__}: "
            f"{len(missing)} of its weights missing{f' (e.g. {missing[0]})' if missing else ''}, "
            f"{len(unknown)} unknown{f' (e.g. {unknown[0]})' if unknown else ''}"
        )
    for name, tensor in expected.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{setting}={path}: saved by another model size: {name} is {tuple(saved[name].shape)} there, "
                f"{tuple(tensor.shape)} in this model"
            )
