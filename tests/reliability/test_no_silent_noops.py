"""A setting that makes a command do nothing useful is refused or warned about with the count;
an environment that is odd but legal does not move outputs to odd places; an output that
cannot be written is named as the user gave it (not by its hidden temporary)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
from omegaconf import open_dict

from ctem.cli import error_message
from ctem.cli.curate import run as curate
from ctem.files import atomic_writer
from ctem.settings import SettingError
from tests.reliability.conftest import compose_command, write_pairs


def curate_config(tmp_path: Path, *overrides: str):
    cfg = compose_command("curate", f"input_files=[{write_pairs(tmp_path / 'in.jsonl', 6)}]", "progress=false", *overrides)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "out")
    return cfg


@pytest.mark.parametrize("threshold", [2, 1.01, "high"])
def test_a_score_threshold_no_cosine_reaches_is_refused_before_the_scorer_loads(tmp_path, threshold) -> None:
    cfg = curate_config(tmp_path, f"scorer.model_path={tmp_path / 'not_loaded'}", f"threshold={threshold}")
    with pytest.raises(SettingError) as raised:
        curate(cfg)
    assert error_message("ctem-curate", raised.value).startswith(f"ctem-curate: error: threshold={threshold}: must be a number of at most 1")
    assert not (tmp_path / "out").exists()


def test_a_run_that_keeps_no_row_says_so_with_the_count(tmp_path, capsys) -> None:
    cfg = curate_config(tmp_path, "dedup.near=false")
    with open_dict(cfg):
        cfg.input_files = [str(write_pairs(tmp_path / "a.jsonl", 6)), str(write_pairs(tmp_path / "b.jsonl", 6))]
    (tmp_path / "b.jsonl").write_text((tmp_path / "a.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    report = curate(cfg)
    assert (report.files[1].rows_in, report.files[1].rows_out) == (6, 0)  # every row of b.jsonl repeats one of a.jsonl
    assert f"[ctem-curate] warning: {tmp_path / 'b.jsonl'}: all 6 rows were dropped, its output file is empty" in capsys.readouterr().err


@pytest.mark.parametrize("xdg", ["", None, "/cache/home"])
def test_the_embedding_cache_follows_xdg_and_an_empty_xdg_cache_home_is_unset(monkeypatch, xdg) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    cfg = compose_command("mine", "model_path=m", "input=i", "output=o")
    assert cfg.cache_dir == f"{xdg or '/home/someone/.cache'}/ctem/embeddings"  # never /ctem/embeddings


def test_an_output_whose_temporary_cannot_be_created_is_named_as_given(tmp_path, monkeypatch) -> None:
    def forbidden(dir: str, prefix: str, suffix: str):  # noqa: A002 - tempfile's own parameter names
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, prefix + "x1y2" + suffix))

    monkeypatch.setattr(tempfile, "mkstemp", forbidden)
    with pytest.raises(PermissionError) as raised, atomic_writer(tmp_path / "mined.jsonl") as handle:
        handle.write("never")
    assert error_message("ctem-mine", raised.value) == f"ctem-mine: error: {tmp_path / 'mined.jsonl'}: Permission denied"
