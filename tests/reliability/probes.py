"""What the "nothing silent" tests share: the error line of a failed command, the
overrides of a tiny training run, a tiny evaluation task, a child process to signal."""

from __future__ import annotations

import json
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


def command_error(proc: subprocess.CompletedProcess, command: str = "ctem-train") -> str:
    """The ``<command>: ...`` line of a failed run: exit status 1, the last line on stderr
    and the only one of its kind (progress bars and Lightning's notes may come before it),
    no traceback."""
    lines = proc.stderr.strip().splitlines()
    ours = [line for line in lines if line.startswith(f"{command}:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and ours == lines[-1:], (proc.returncode, proc.stderr[-3000:])
    return ours[0]


def tiny_run(vocab: Path, data: Path, run_dir: Path, *more: str) -> list[str]:
    """Overrides of a CPU run of the tiny model on ``data`` (pairs, in-batch negatives, batches
    of 4, no logger, no progress bar) writing into ``run_dir``."""
    return [
        "model=tiny", f"model.tokenizer={vocab}", "data=pairs", f"data.train_files=[{data}]", "data.train_group_size=1",
        "data.batch_size=4", "logger=none", "callbacks=default", "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
        f"paths.data_cache_dir={run_dir.parent / 'cache'}", f"hydra.run.dir={run_dir}", *more,
    ]


def sts_task(root: Path) -> Path:
    """A folder of tasks holding one small, scorable STS task ``TinySTS``."""
    folder = root / "tasks" / "TinySTS"
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps({"name": "TinySTS", "type": "STS"}), encoding="utf-8")
    rows = [{"sentence1": "一个句子", "sentence2": "另一个句子", "score": s} for s in (1, 2, 3)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return folder.parent


def _default_signal_handling() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@contextmanager
def signalable_child(command: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen(command)`` with SIGINT and SIGTERM at their defaults, killed when
    the block ends with it still running. (A background job of a non-interactive shell starts
    with SIGINT ignored and a child inherits that: pytest started with ``&`` would test the
    launcher, and a child that never stopped kept training on a core after the test failed.)"""
    child = subprocess.Popen(command, preexec_fn=_default_signal_handling, **popen)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
