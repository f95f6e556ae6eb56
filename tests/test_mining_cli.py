"""ctem-mine: the Hydra config, run(cfg) and the console script on a tiny saved model."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ctem.cli.mine import run
from ctem.config import config_dir, register_resolvers
from tests.helpers.tiny import TEST_CHARS


def _input(tmp_path: Path, n: int = 60) -> Path:
    rng = random.Random(0)

    def text() -> str:
        return "".join(rng.choice(TEST_CHARS) for _ in range(rng.randint(4, 12)))

    rows = [{"query": text(), "pos": [text()], "neg": [], "type": "sts"} for _ in range(n)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _cfg(overrides: list[str]):
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="mine", overrides=overrides)


@pytest.mark.parametrize("name", ["mine.yaml", "mining/default.yaml"])
def test_every_mine_field_is_commented(name):
    lines = (Path(config_dir()) / name).read_text("utf-8").splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-", "defaults")):
            assert lines[i - 1].startswith("#"), f"conf/{name}: field without a comment: {line}"


@pytest.mark.slow
def test_a_bad_mining_setting_is_one_line(tmp_path: Path, tiny_model: Path):
    cmd = [
        sys.executable, "-m", "ctem.cli.mine", f"model_path={tiny_model}", f"input={_input(tmp_path, n=4)}",
        f"output={tmp_path / 'out.jsonl'}", "mining.nprobe=0", f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip() == "ctem-mine: error: mining.nprobe=0: must be at least 1"


def test_run_is_deterministic_and_writes_neg(tmp_path: Path, tiny_model: Path):
    src = _input(tmp_path)
    common = [f"model_path={tiny_model}", f"input={src}", "mining.range=[2,30]", "mining.negative_number=4", "mining.show_progress=false"]
    first = run(_cfg(common + [f"output={tmp_path / 'a.jsonl'}", f"cache_dir={tmp_path / 'cache'}"]))
    run(_cfg(common + [f"output={tmp_path / 'b.jsonl'}", "cache_dir=null"]))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text("utf-8").splitlines()]
    assert len(rows) == 60 and first.short_rows == 0
    for row in rows:
        assert len(row["neg"]) == 4 and row["type"] == "sts"
        assert row["pos"][0] not in row["neg"] and row["query"] not in row["neg"]
    run(_cfg(common + [f"output={tmp_path / 'c.jsonl'}", "cache_dir=null", "mining.seed=1"]))
    assert (tmp_path / "c.jsonl").read_bytes() != (tmp_path / "a.jsonl").read_bytes()


@pytest.mark.slow
def test_console_script(tmp_path: Path, tiny_model: Path):
    src = _input(tmp_path, n=20)
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable, "-m", "ctem.cli.mine", f"model_path={tiny_model}", f"input={src}", f"output={out}",
        "mining.range=[0,10]", "mining.negative_number=3", "cache_dir=null", "mining.show_progress=false", f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[ctem-mine] mined 60 negatives for 20 rows" in done.stdout
    assert len(out.read_text("utf-8").splitlines()) == 20

