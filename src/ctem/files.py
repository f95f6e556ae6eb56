"""File permissions of what ctem writes: the user's umask, like every other tool."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the mode a plain ``open`` /
    ``mkdir`` would: 0666 / 0777 less the umask. Temporary files (``tempfile``, as
    transformers' safetensors writer and ``write_jsonl_atomic`` use) are created 0600."""
    mask = current_umask()
    root = Path(path)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
