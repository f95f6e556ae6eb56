"""Input errors of the commands are one line on stderr with exit status 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def command(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "ctem-eval: error: model_path is required: add model_path=... to the command"),
        (("model_path=some/model", "tasks_dir=null", "eval.tasks=[ATEC]"), "ctem-eval: error: hf://C-MTEB/ATEC (test): could not be loaded"),
        (("model_path=some/model", "tasks_dir=null", "eval.tasks=[NoSuchTask]"), "ctem-eval: error: unknown hub tasks ['NoSuchTask']"),
    ],
    ids=["no_arguments", "unreachable_hub_task", "unknown_task"],
)
@pytest.mark.slow
def test_ctem_eval_input_errors_are_one_line(tmp_path, args, message) -> None:
    proc = command("ctem.cli.eval", *args, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]


@pytest.mark.slow
def test_batch_larger_than_the_data_is_one_line(tmp_path) -> None:
    proc = command("ctem.cli.train", "data.batch_size=2048", "logger=none", "callbacks=none", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        "ctem-train: error: data.batch_size=2048 x 1 device(s) needs at least 2048 training rows for one full batch, "
        "but the data has 776: lower data.batch_size or add data"
    ), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("module", "override", "message"),
    [
        ("ctem.cli.eval", "tasks=[ATEC]", "ctem-eval: error: tasks is now eval.tasks (README.md, 'Changed override paths'): use eval.tasks=[ATEC]"),
        ("ctem.cli.eval", "settings.k_values=[1]", "ctem-eval: error: settings.k_values is now eval.k_values"),
        ("ctem.cli.mine", "nprobe=8", "ctem-mine: error: nprobe is now mining.nprobe"),
        ("ctem.cli.mine", "progress=false", "ctem-mine: error: progress is now mining.show_progress"),
        ("ctem.cli.train", "callbacks.cmteb_eval.batch_size=8", "ctem-train: error: callbacks.cmteb_eval.batch_size is now callbacks.cmteb_eval.eval.batch_size"),
        ("ctem.cli.train", "+callbacks.hard_negative_refresh.nprobe=8", "ctem-train: error: callbacks.hard_negative_refresh.nprobe is now callbacks.hard_negative_refresh.mining.nprobe"),
    ],
)
@pytest.mark.slow
def test_a_moved_override_path_names_the_new_one(tmp_path, module, override, message) -> None:
    proc = command(module, override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert not (tmp_path / "run").exists(), "nothing ran"


def test_the_new_paths_are_not_refused() -> None:
    from ctem.cli import moved_override

    assert moved_override("ctem-eval", "eval.tasks=[ATEC]") is None
    assert moved_override("ctem-mine", "mining.seed=1") is None
    assert moved_override("ctem-train", "data.batch_size=64") is None
    assert moved_override("ctem-train", "callbacks.cmteb_eval.every_n_steps=10") is None


def test_a_moved_override_suggests_an_override_hydra_takes() -> None:
    from ctem.cli import moved_override

    assert moved_override("ctem-train", "+data.num_workers=2").endswith("use data.loader.num_workers=2")
    assert moved_override("ctem-mine", "~nprobe").endswith("use ~mining.nprobe")
    assert moved_override("ctem-eval", "settings.k_values=[1,10]").endswith("use eval.k_values=[1,10]")
    assert moved_override("ctem-train", "stage.loss.in_batch_negatives=false").endswith("use stage.in_batch_negatives=false")
    assert moved_override("ctem-train", "stage.in_batch_negatives=false") is None
