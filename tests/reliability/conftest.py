"""Helpers of the reliability tests: the configs of the commands composed in-process, and
commands run as subprocesses (the ``tiny_model`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ctem.config import config_dir, register_resolvers
from tests.helpers.tiny import sentences

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}


def compose_command(name: str, *overrides: str) -> DictConfig:
    """``conf/<name>.yaml`` as the command composes it (without the Hydra node)."""
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def run_command(module: str, *args: str, cwd: Path, stdin: str = "", timeout: int = 1200, **popen: Any) -> subprocess.CompletedProcess:
    """``python -m module args...`` with ``stdin`` as its standard input."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=ENV, input=stdin, capture_output=True, text=True, timeout=timeout, **popen
    )


def run_python(code: str, *args: str, cwd: Path, timeout: int = 1200, **popen: Any) -> subprocess.CompletedProcess:
    """``python -c code args...`` (a script that patches a hook, then runs library code)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env={**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), ENV.get("PYTHONPATH")]))}, capture_output=True, text=True, timeout=timeout, **popen
    )


def one_line_error(proc: subprocess.CompletedProcess, prefix: str) -> str:
    """The single stderr line of a failed command (exit 1, no traceback), checked to start with ``prefix``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(prefix), (proc.returncode, proc.stderr[-3000:])
    return lines[0]


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` query / positive rows of test-vocabulary text."""
    texts = sentences(2 * n, seed=seed, min_len=6, max_len=16)
    rows = [{"query": texts[2 * i], "pos": [texts[2 * i + 1]], "neg": []} for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextmanager
def file_size_limit(limit_bytes: int) -> Iterator[None]:
    """Writes that would make any file larger than ``limit_bytes`` fail with ``EFBIG`` (the
    kernel stops them, as a full disk would: ``RLIMIT_FSIZE``, ``SIGXFSZ`` ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def hashed_encode(texts, instruction=None, is_query=False):
    """A deterministic stand-in for a model's ``EncodeFn``: unit vectors seeded by the texts."""
    import numpy as np

    seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in texts]
    out = np.stack([np.random.default_rng(s).standard_normal(16) for s in seeds]).astype("float32")
    return out / np.linalg.norm(out, axis=1, keepdims=True)
