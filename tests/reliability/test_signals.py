"""A training run stopped by SIGTERM (a scheduler, ``kill``) or Ctrl-C saves a checkpoint to
resume from, says where in one line and exits 1 (Lightning alone exits 0 on SIGTERM with no
model and no message, so ``set -e`` scripts went on)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctem.api import train
from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import ENV, write_pairs
from tests.reliability.probes import signalable_child, tiny_run


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_resumable_checkpoint_says_where_and_exits_1(tmp_path, signum) -> None:
    vocab, data, run = write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 32), tmp_path / "run"
    overrides = tiny_run(vocab, data, run, "trainer.max_steps=100000", "trainer.max_epochs=-1",
                         "callbacks.model_checkpoint.every_n_train_steps=1")  # runs until the signal, never ends on its own
    with open(tmp_path / "stderr.txt", "w") as stderr:
        with signalable_child([sys.executable, "-m", "ctem.cli.train", *overrides], cwd=tmp_path, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=stderr) as child:
            deadline = time.monotonic() + 300
            while not (run / "checkpoints" / "last.ckpt").exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert child.poll() is None and (run / "checkpoints" / "last.ckpt").exists(), "the run ended or wrote no checkpoint before the signal"
            child.send_signal(signum)
            returncode = child.wait(timeout=300)
    lines = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert returncode == 1 and "Traceback" not in "\n".join(lines), lines[-20:]
    match = re.fullmatch(r"ctem-train: stopped at step (\d+) by (\S+).*; resumable checkpoint (\S+): continue with ckpt_path=(\S+)", lines[-1])
    assert match and match[2] == signum.name and match[3] == match[4], lines[-1]
    step, checkpoint = int(match[1]), Path(match[3])
    assert checkpoint == (run / "checkpoints" / "interrupted.ckpt").resolve() and checkpoint.is_file()
    assert not (run / "final_model").exists()
    resumed = train(tiny_run(vocab, data, tmp_path / "resumed", f"trainer.max_steps={step + 2}", f"ckpt_path={checkpoint}"))
    assert resumed["trainer"].global_step == step + 2
    assert (tmp_path / "resumed" / "final_model").is_dir()
