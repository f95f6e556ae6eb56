"""SIGTERM (a scheduler, ``kill``) or Ctrl-C stops every command with exit status 1 and one
line saying what was kept and how to continue; before, ctem-eval, ctem-mine, ctem-curate and
ctem-train's final export died silently with status 143, and nothing told a script why."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import ENV, REPO, write_pairs
from tests.reliability.probes import signalable_child, sts_task, tiny_run

# Run a command whose `owner.attribute` (a step of its work) stalls once reached, after
# touching the file `ready`, so that the signal arrives while the command works.
STALLED = """
import importlib, sys, time
from pathlib import Path

module, target, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
owner_path, attribute = target.rsplit(".", 1)
owner_module, _, owner_class = owner_path.partition(":")
owner = importlib.import_module(owner_module)
if owner_class:
    owner = getattr(owner, owner_class)

def stalled(*args, **kwargs):
    ready.write_text("")
    time.sleep(600)

setattr(owner, attribute, stalled)
sys.argv = [module, *sys.argv[4:]]
importlib.import_module(module).main()
"""


def stop_while(tmp_path: Path, module: str, target: str, args: list[str], signum: int = signal.SIGTERM) -> tuple[int, list[str]]:
    """Run ``module`` with ``args``, send ``signum`` once ``target`` is reached; its status and stderr lines."""
    ready = tmp_path / "ready"
    env = {**ENV, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        with signalable_child([sys.executable, "-c", STALLED, module, target, str(ready), *args], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=stderr) as child:
            deadline = time.monotonic() + 300
            while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert child.poll() is None and ready.exists(), (tmp_path / "stderr.txt").read_text()[-3000:]
            child.send_signal(signum)
            returncode = child.wait(timeout=300)
    lines = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert "Traceback" not in "\n".join(lines), lines[-20:]
    return returncode, lines


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ctem_eval_stopped_says_nothing_was_written(tmp_path, tiny_model, signum) -> None:
    out = tmp_path / "out"
    args = [f"model_path={tiny_model}", f"tasks_dir={sts_task(tmp_path)}", f"output_dir={out}", f"hydra.run.dir={tmp_path / 'run'}"]
    returncode, lines = stop_while(tmp_path, "ctem.cli.eval", "ctem.cli.eval:CMTEBEvaluator.run", args, signum)
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT (Ctrl-C)"
    assert (returncode, lines[-1]) == (1, f"ctem-eval: stopped by {name}; no results written ({out} is as it was): run the command again")
    assert not out.exists()


@pytest.mark.slow
def test_ctem_mine_stopped_says_what_stays_cached(tmp_path, tiny_model) -> None:
    out, cache = tmp_path / "mined.jsonl", tmp_path / "cache"
    args = [f"model_path={tiny_model}", f"input={write_pairs(tmp_path / 'in.jsonl', 6)}", f"output={out}", f"cache_dir={cache}",
            "mining.use_gpu=false", f"hydra.run.dir={tmp_path / 'run'}"]
    returncode, lines = stop_while(tmp_path, "ctem.cli.mine", "ctem.cli.mine.mine_jsonl", args)
    assert (returncode, lines[-1]) == (1, f"ctem-mine: stopped by SIGTERM; {out} not written (embeddings finished so far stay cached in {cache}): run the command again")
    assert not out.exists()


@pytest.mark.slow
def test_ctem_curate_stopped_says_nothing_was_written(tmp_path) -> None:
    out = tmp_path / "out"
    args = [f"input_files=[{write_pairs(tmp_path / 'in.jsonl', 6)}]", f"output_dir={out}", f"hydra.run.dir={tmp_path / 'run'}"]
    returncode, lines = stop_while(tmp_path, "ctem.cli.curate", "ctem.cli.curate.curate", args)
    assert (returncode, lines[-1]) == (1, f"ctem-curate: stopped by SIGTERM; nothing written ({out} is as it was): run the command again")
    assert not out.exists()


@pytest.mark.slow
def test_a_signal_during_the_final_export_saves_a_checkpoint_to_export_from(tmp_path) -> None:
    run = tmp_path / "run"
    args = tiny_run(write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 8), run, "trainer.max_steps=2")
    returncode, lines = stop_while(tmp_path, "ctem.cli.train", "ctem.modules.stage.export_encoder", args)
    match = re.fullmatch(r"ctem-train: stopped by SIGTERM during the final export \(training had finished at step 2; "
                         r"no final model written\); resumable checkpoint (\S+): export with ckpt_path=(\S+)", lines[-1])
    assert returncode == 1 and match and match[1] == match[2] and Path(match[1]).is_file(), lines[-5:]
    assert not (run / "final_model").exists()


@pytest.mark.slow
def test_ctem_score_stopped_says_nothing_was_written(tmp_path, tiny_model) -> None:
    out = tmp_path / "scored.jsonl"
    args = [f"teacher={tiny_model}", f"input={write_pairs(tmp_path / 'train.jsonl', 6)}", f"output={out}"]
    returncode, lines = stop_while(tmp_path, "ctem.cli.score", "ctem.cli.score.score_jsonl", args)
    assert (returncode, lines[-1]) == (1, f"ctem-score: stopped by SIGTERM; {out} not written: run the command again")
    assert not out.exists()


@pytest.mark.slow
def test_ctem_merge_stopped_says_nothing_was_written(tmp_path, tiny_model) -> None:
    out = tmp_path / "merged"
    args = [f"models=[{tiny_model},{tiny_model}]", f"output={out}"]
    returncode, lines = stop_while(tmp_path, "ctem.cli.merge", "ctem.cli.merge.merge_models", args)
    assert (returncode, lines[-1]) == (1, f"ctem-merge: stopped by SIGTERM; {out} not written (nothing half-written is left): run the command again")
    assert not out.exists()


@pytest.mark.slow
def test_ctem_build_vocab_stopped_says_nothing_was_written(tmp_path) -> None:
    out = tmp_path / "vocab"
    args = ["--out", str(out), str(write_pairs(tmp_path / "corpus.jsonl", 6)), "--field", "query"]
    returncode, lines = stop_while(tmp_path, "ctem.cli.build_vocab", "ctem.cli.build_vocab.train_wordpiece_vocab", args)
    assert (returncode, lines[-1]) == (1, f"ctem-build-vocab: stopped by SIGTERM; {out / 'vocab.txt'} not written: run the command again")
    assert not out.exists()


@pytest.mark.slow
def test_ctem_train_stopped_before_its_first_step_says_there_is_nothing_to_resume(tmp_path) -> None:
    run = tmp_path / "run"
    args = tiny_run(write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 8), run, "trainer.max_steps=2")
    returncode, lines = stop_while(tmp_path, "ctem.cli.train", "lightning.seed_everything", args)
    assert (returncode, lines[-1]) == (1, "ctem-train: stopped by SIGTERM; nothing to resume (no training step had run): run the command again")
    assert not (run / "checkpoints").exists() and not (run / "final_model").exists()
