"""`ctem-curate` on bad rows: one-line error and no output, or skip and report; the shared data."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ctem.cli.curate import run
from ctem.config import config_dir, register_resolvers
from tests.curation_helpers import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.curation_helpers import random_text, read_jsonl, write_jsonl

SHARED = Path(os.environ.get("CTEM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CMRC = SHARED / "train" / "unlabeled" / "cmrc_trial_question_context.jsonl"


def _files_with_an_empty_query(root: Path) -> list[Path]:
    """A clean file, then one whose 3rd line has an empty query (like the shared cmrc file)."""
    rng = random.Random(0)
    rows = [{"query": random_text(rng, 12), "pos": [random_text(rng, 80)], "neg": []} for _ in range(4)]
    good = write_jsonl(root / "in" / "good.jsonl", rows[:2])
    bad = write_jsonl(root / "in" / "bad.jsonl", [rows[2], rows[3], {"query": "", "pos": [random_text(rng, 80)], "neg": []}])
    return [good, bad]


def _config(overrides: list[str]):
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="curate", overrides=[*overrides, "progress=false"])


@pytest.mark.slow
def test_empty_query_under_on_bad_row_error_is_one_line_exit_1_and_no_output(tmp_path):
    files = _files_with_an_empty_query(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "ctem.cli.curate", f"input_files=[{files[0]},{files[1]}]", f"output_dir={tmp_path / 'out'}",
         "progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0] == (
        f"ctem-curate: error: {files[1]}:3: field 'query': empty (on_bad_row=skip skips and counts bad rows)"
    )
    # nothing written: no .partial file, and not even the clean first file's output
    assert list((tmp_path / "out").iterdir()) == []


def test_empty_query_under_on_bad_row_skip_completes_and_reports(tmp_path, capsys, caplog):
    files = _files_with_an_empty_query(tmp_path)
    out = tmp_path / "out"
    report = run(_config([f"input_files=[{files[0]},{files[1]}]", f"output_dir={out}", "on_bad_row=skip"]))
    assert sorted(p.name for p in out.iterdir()) == ["bad.jsonl", "good.jsonl", "report.json", "report.md"]
    assert len(read_jsonl(out / "bad.jsonl")) == 2 and len(read_jsonl(out / "good.jsonl")) == 2
    assert report.total.rows_removed["bad_row"] == 1 and (report.total.rows_in, report.total.rows_out) == (5, 4)
    where = f"{files[1]}:3: field 'query': empty"
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["bad_row_examples"] == [where]
    assert f"- `{where}`" in (out / "report.md").read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    assert "bad.jsonl  " in printed and "[ctem-curate] 5 rows in, 4 out" in printed
    # the warning names this command's setting (not the training data modules' data.on_bad_row)
    assert f"skipped 1 bad row(s) (on_bad_row=skip):\n  {where}" in caplog.messages


@pytest.mark.skipif(not CMRC.is_file(), reason=f"shared data not found at {SHARED}")
def test_shared_question_context_pairs_are_kept_by_the_documented_settings(tmp_path):
    """The shared cmrc file: 2 empty queries are skipped; its 1,000 distinct questions (about
    far fewer passages) are all kept by deduplication."""
    out = tmp_path / "out"
    report = run(_config([f"input_files=[{CMRC}]", f"output_dir={out}", "on_bad_row=skip"]))
    assert report.bad_row_examples == [f"{CMRC}:748: field 'query': empty", f"{CMRC}:809: field 'query': empty"]
    rows = read_jsonl(out / CMRC.name)
    assert len(rows) == 1000 == report.total.rows_out
    assert len({r["pos"][0] for r in rows}) < 300  # 1,000 questions about 256 passages
