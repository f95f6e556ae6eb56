"""ctem-curate's outputs (curated files and report) change as one set: a failure or a kill at
any point, the report included, leaves the previous set exactly as it was."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ctem.curation import curate
from ctem.curation.report import CurationReport
from tests.reliability.conftest import run_python, snapshot, write_pairs

KILL_DURING_REPORT = """
import os, signal, sys
from ctem.curation import curate
from ctem.curation.report import CurationReport

def kill(self):
    os.kill(os.getpid(), signal.SIGKILL)

CurationReport.to_markdown = kill
curate(sys.argv[1:3], sys.argv[3], show_progress=False)
"""

KILL_WHILE_MOVING = """
import os, signal, sys
from ctem import files
from ctem.curation import curate

moved = []
replace = os.replace

def replace_then_kill(src, dst):
    replace(src, dst)
    if os.path.dirname(os.path.abspath(dst)) == os.path.abspath(sys.argv[3]):
        moved.append(dst)
    if len(moved) == 2:  # two new files are in place, the rest of the set is not
        os.kill(os.getpid(), signal.SIGKILL)

files.os.replace = replace_then_kill
curate(sys.argv[1:3], sys.argv[3], show_progress=False)
"""


def _inputs(root: Path, seed: int) -> list[str]:
    return [str(write_pairs(root / "in" / "a.jsonl", 6, seed=seed)), str(write_pairs(root / "in" / "b.jsonl", 6, seed=seed + 1))]


def _first_set(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "out"
    curate(_inputs(tmp_path, seed=0), out, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl", "b.jsonl", "report.json", "report.md"]
    return out, snapshot(out)


def test_an_interrupt_or_a_full_disk_at_any_point_leaves_the_previous_set(tmp_path, monkeypatch) -> None:
    out, before = _first_set(tmp_path)
    from ctem.curation import pipeline

    write = pipeline._write_rows

    def interrupted(rows, source, *args):
        if source.endswith("b.jsonl"):
            raise KeyboardInterrupt
        return write(rows, source, *args)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):  # Ctrl-C in the second file
        patch.setattr(pipeline, "_write_rows", interrupted)
        curate(_inputs(tmp_path, seed=5), out, show_progress=False)
    assert snapshot(out) == before

    def full(self):  # the disk fills up while the report is written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(CurationReport, "to_markdown", full)
    with pytest.raises(OSError) as raised:
        curate(_inputs(tmp_path, seed=5), out, show_progress=False)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(out)
    assert snapshot(out) == before  # no new file, no temporary, the old report with its data


@pytest.mark.slow
def test_a_kill_during_the_report_leaves_the_previous_set_and_the_next_run_cleans_up(tmp_path) -> None:
    out, before = _first_set(tmp_path)
    proc = run_python(KILL_DURING_REPORT, *_inputs(tmp_path, seed=5), str(out), cwd=tmp_path)
    assert proc.returncode == -9, proc.stderr[-3000:]
    visible = {name: data for name, data in snapshot(out).items() if not name.startswith(".")}
    assert visible == before
    report = curate(_inputs(tmp_path, seed=5), out, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl", "b.jsonl", "report.json", "report.md"]
    assert report.total.rows_in == 12 and snapshot(out) != before


@pytest.mark.slow
def test_a_kill_while_the_set_is_moved_in_leaves_no_report_beside_a_mixed_set(tmp_path) -> None:
    out, before = _first_set(tmp_path)
    proc = run_python(KILL_WHILE_MOVING, *_inputs(tmp_path, seed=5), str(out), cwd=tmp_path)
    assert proc.returncode == -9, proc.stderr[-3000:]
    visible = {name: data for name, data in snapshot(out).items() if not name.startswith(".")}
    assert visible != before and "report.json" not in visible  # mixed, and marked incomplete
    curate(_inputs(tmp_path, seed=5), out, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl", "b.jsonl", "report.json", "report.md"]
