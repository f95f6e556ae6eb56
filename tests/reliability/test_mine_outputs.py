"""ctem-mine never replaces its own input, and leaves no temporary file behind: not after an
error, and not (once it runs again) after a ``kill -9``."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from ctem.cli import input_errors_as_messages
from ctem.cli.mine import run
from ctem.mining import MiningConfig, mine_jsonl
from tests.reliability.conftest import compose_command, hashed_encode, run_python, write_pairs

KILL_WHILE_WRITING = """
import os, signal, sys
import ctem.mining
from tests.reliability.conftest import hashed_encode

write = ctem.mining.write_jsonl_atomic

def rows_then_kill(rows):
    for number, row in enumerate(rows):
        if number == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        yield row

ctem.mining.write_jsonl_atomic = lambda rows, output: write(rows_then_kill(rows), output)
ctem.mining.mine_jsonl(hashed_encode, sys.argv[1], sys.argv[2], ctem.mining.MiningConfig(range=(0, 20), negative_number=3))
"""


def _refusal(cfg) -> str:
    with pytest.raises(SystemExit) as done, input_errors_as_messages("ctem-mine"):
        run(cfg)
    return str(done.value.code)


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path, tiny_model, spelling) -> None:
    data = write_pairs(tmp_path / "data" / "train.jsonl", 12)
    before = data.read_bytes()
    output = {"same": data, "dotted": tmp_path / "data" / ".." / "data" / "train.jsonl", "symlink": tmp_path / "link.jsonl",
              "hardlink": tmp_path / "hard.jsonl"}[spelling]
    if spelling == "symlink":
        output.symlink_to(data)
    if spelling == "hardlink":
        os.link(data, output)
    cfg = compose_command("mine", f"model_path={tiny_model}", f"input={data}", f"output={output}", "cache_dir=null", "mining.show_progress=false")
    assert _refusal(cfg) == f"ctem-mine: error: output {output} would overwrite its input {data}; write the output elsewhere"
    assert data.read_bytes() == before


def test_an_input_folder_or_candidate_pool_counts_as_input(tmp_path, tiny_model) -> None:
    data = write_pairs(tmp_path / "data" / "train.jsonl", 12)
    pool = write_pairs(tmp_path / "pool.jsonl", 12, seed=1)
    for source, pool_setting in ((tmp_path / "data", "null"), (data, str(pool))):
        target = data if pool_setting == "null" else pool
        cfg = compose_command("mine", f"model_path={tiny_model}", f"input={source}", f"output={target}", f"candidate_pool={pool_setting}",
                              "cache_dir=null")
        assert "would overwrite its input" in _refusal(cfg)
    with pytest.raises(ValueError, match="would overwrite its input"):
        mine_jsonl(lambda texts, q: None, str(data), data, MiningConfig())


@pytest.mark.slow
def test_a_killed_run_leaves_a_temporary_that_the_next_run_removes(tmp_path) -> None:
    data = write_pairs(tmp_path / "train.jsonl", 30)
    output = tmp_path / "out" / "mined.jsonl"
    output.parent.mkdir()
    proc = run_python(KILL_WHILE_WRITING, str(data), str(output), cwd=tmp_path)
    assert proc.returncode == -9, proc.stderr[-3000:]
    left = [p.name for p in output.parent.iterdir()]
    assert not output.exists() and len(left) == 1 and left[0].startswith(".mined.jsonl.")
    # a temporary of a process that still runs (here: this test's parent) is not touched
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
    live = output.parent / f".mined.jsonl.{host}-{os.getppid()}.abc123.tmp"
    live.write_text("being written")
    mine_jsonl(hashed_encode, str(data), output, MiningConfig(range=(0, 20), negative_number=3))
    assert sorted(p.name for p in output.parent.iterdir()) == sorted(["mined.jsonl", live.name])
    assert len(output.read_text(encoding="utf-8").splitlines()) == 30
