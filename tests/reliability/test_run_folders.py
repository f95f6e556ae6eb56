"""A new run never writes into a folder another run owns: the run (and sweep) folder is
claimed with an exclusive ``mkdir`` when the run starts, and DDP ranks and multirun jobs
still share their run's folder."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ctem.config import config_dir, register_resolvers
from tests.reliability.conftest import run_python

APP = """
import json, sys
import hydra
from hydra.core.hydra_config import HydraConfig
from ctem.config import config_dir, register_resolvers

register_resolvers()

@hydra.main(version_base="1.3", config_path=config_dir(), config_name="mine")
def main(cfg):
    hydra_cfg = HydraConfig.get()
    seen = {"output_dir": hydra_cfg.runtime.output_dir, "seed": cfg.mining.seed}
    if hydra_cfg.mode.name == "RUN":  # what Lightning hands to its DDP worker processes (hydra.run.dir=...)
        seen["run_dir"] = hydra_cfg.run.dir
    print(json.dumps(seen), flush=True)

main()
"""


def test_a_taken_folder_is_never_handed_out_again(tmp_path) -> None:
    from ctem.config import new_folder

    first, second = new_folder(str(tmp_path / "runs" / "t")), new_folder(str(tmp_path / "runs" / "t"))
    assert (first, second) == (str(tmp_path / "runs" / "t"), str(tmp_path / "runs" / "t_2"))
    assert Path(first).is_dir() and Path(second).is_dir()


def _run_dir(log_dir: Path) -> Path:
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=[f"paths.log_dir={log_dir}"], return_hydra_config=True)
    first = Path(str(cfg.hydra.run.dir))
    assert Path(str(cfg.hydra.run.dir)) == first  # one run, one folder, however often it is read
    return first


def _taken(folder: Path, seconds: int = 120) -> set[Path]:
    """Folders of runs that hold this second's name and the next ``seconds``' names."""
    now = dt.datetime.now()
    taken = {folder / (now + dt.timedelta(seconds=s)).strftime("%Y-%m-%d_%H-%M-%S") for s in range(-1, seconds)}
    for path in taken:
        path.mkdir(parents=True)
        (path / "theirs.txt").write_text("another run's file")
    return taken


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path) -> None:
    runs = tmp_path / "train" / "runs"
    taken = _taken(runs, 30)
    mine = _run_dir(tmp_path)
    assert mine.is_dir() and mine not in taken and mine.parent == runs
    assert list(mine.iterdir()) == []
    assert _run_dir(tmp_path) not in taken | {mine}


def _app(tmp_path: Path, *args: str) -> list[dict]:
    proc = run_python(APP, *args, "model_path=m", "input=i", "output=o", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_commands_ddp_ranks_and_multirun_jobs_get_folders_of_their_own(tmp_path) -> None:
    logs = tmp_path / "logs" / "mine"
    taken = _taken(logs / "runs") | _taken(logs / "multiruns")
    [single] = _app(tmp_path)
    assert Path(single["output_dir"]) == Path(single["run_dir"]).resolve()  # rank 0's folder is the workers'
    assert Path(single["output_dir"]).parent == logs / "runs" and Path(single["output_dir"]) not in taken
    jobs = _app(tmp_path, "-m", "mining.seed=1,2")
    sweep = Path(jobs[0]["output_dir"]).parent
    assert [Path(j["output_dir"]) for j in jobs] == [sweep / "0", sweep / "1"] and [j["seed"] for j in jobs] == [1, 2]
    assert sweep.parent == logs / "multiruns" and sweep not in taken
    assert set((logs / "runs").iterdir()) - taken == {Path(single["output_dir"])}  # no other folder claimed
