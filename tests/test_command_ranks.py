"""``ctem-mine`` and ``ctem-eval`` started by ``torchrun --nproc_per_node 2`` (gloo on CPU):
each rank encodes a share of the texts, rank 0 writes, and the outputs equal one process's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.evaluation.eval_helpers import make_tiny_tasks
from tests.test_mining_cli import _input

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}


def _command(module: str, args: list[str], ranks: int) -> subprocess.CompletedProcess:
    """``python -m module args`` (one rank) or ``torchrun --nproc_per_node ranks -m module args``."""
    if ranks == 1:
        launcher = [sys.executable, "-m", module]
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(port), "-m", module]
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (f"(encoded by {ranks} ranks)" in proc.stdout) == (ranks > 1), proc.stdout[-2000:]
    return proc


def test_two_mining_ranks_write_the_one_process_output(tmp_path: Path, tiny_model: Path) -> None:
    """Byte for byte, with and without the embedding cache (a second sharded run reads what
    the first wrote: every rank reads the same entries, so the ranks encode alike)."""
    common = [f"model_path={tiny_model}", f"input={_input(tmp_path, n=40)}", "mining.range=[2,30]", "mining.negative_number=4",
              "mining.show_progress=false"]
    _command("ctem.cli.mine", [*common, f"output={tmp_path / 'one.jsonl'}", "cache_dir=null", f"hydra.run.dir={tmp_path / 'r1'}"], 1)
    for name in ("two", "two-cached"):
        _command("ctem.cli.mine", [*common, f"output={tmp_path / f'{name}.jsonl'}", f"cache_dir={tmp_path / 'cache'}",
                                   f"hydra.run.dir={tmp_path / f'r-{name}'}"], 2)
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def test_two_evaluation_ranks_give_the_one_process_scores(tmp_path: Path, tiny_model: Path) -> None:
    """An STS and a retrieval task: the same scores (to float rounding), and one set of files."""
    tasks = make_tiny_tasks(tmp_path / "tasks")
    scores = {}
    for ranks in (1, 2):
        out = tmp_path / f"out{ranks}"
        _command("ctem.cli.eval", [f"model_path={tiny_model}", f"tasks_dir={tasks}", f"output_dir={out}", "progress=false",
                                   f"hydra.run.dir={tmp_path / f'r{ranks}'}"], ranks)
        scores[ranks] = {p.stem: json.loads(p.read_text(encoding="utf-8"))["main_score"] for p in sorted(out.glob("*.json"))}
    assert sorted(scores[1]) == ["TinyRetrieval", "TinySTS"]
    assert scores[2] == pytest.approx(scores[1], abs=1e-6)
