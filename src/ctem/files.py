"""How ctem writes files: atomically (a temporary file beside the target, renamed into place
when complete, removed on any failure) and with the user's umask, like every other tool."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


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


@contextmanager
def atomic_writer(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text file to write ``path`` through: a temporary file beside it that replaces
    ``path`` (with the umask's mode) when the block ends normally, and is removed when it
    raises (errors, KeyboardInterrupt), so ``path`` is either the old file or the complete
    new one."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding) as handle:
            yield handle
        apply_umask(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
