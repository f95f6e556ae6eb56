"""A model folder is written as a whole (a temporary sibling renamed into place, then
``ctem_complete.json``): a kill or a full disk leaves the previous folder, never a half one,
and loading a ctem folder that lacks one of its files names that file."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ctem import TextEncoder
from tests.helpers.tiny import sentences, tiny_encoder, write_vocab
from tests.reliability.conftest import REPO, run_python, snapshot

TEXTS = sentences(4, seed=3)
COMPLETE_MARKER = "ctem_complete.json"  # the documented name of the completeness marker
KILL_DURING_EXPORT = """
import os, signal, sys
from pathlib import Path
import torch
import ctem.encoder
from tests.helpers.tiny import tiny_encoder, write_vocab

def kill(*args, **kwargs):  # the model's files are half written: the power goes
    os.kill(os.getpid(), signal.SIGKILL)

torch.manual_seed(1)
encoder = tiny_encoder(write_vocab(Path(sys.argv[2])))
ctem.encoder._write_sentence_transformers_files = kill
encoder.save_pretrained(sys.argv[1])
"""


def _copy(model: Path, root: Path) -> Path:
    return Path(shutil.copytree(model, root / "final_model"))


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


@pytest.mark.slow
def test_kill_9_during_export_leaves_the_previous_model(tmp_path, tiny_model) -> None:
    target = _copy(tiny_model, tmp_path)
    before = snapshot(target)
    expected = TextEncoder.from_pretrained(target).encode(TEXTS)
    (tmp_path / "vocab").mkdir()
    proc = run_python(KILL_DURING_EXPORT, str(target), str(tmp_path / "vocab"), cwd=tmp_path)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert snapshot(target) == before
    np.testing.assert_array_equal(TextEncoder.from_pretrained(target).encode(TEXTS), expected)
    # the killed export's temporary folder is removed by the next export of that folder
    assert any(name.startswith(".final_model.") for name in _siblings(target))
    torch.manual_seed(2)
    tiny_encoder(write_vocab(tmp_path / "vocab")).save_pretrained(target)
    assert _siblings(target) == ["vocab"]
    assert not np.allclose(TextEncoder.from_pretrained(target).encode(TEXTS), expected)


def test_a_full_disk_during_export_leaves_the_previous_model_and_no_temporary(tmp_path, tiny_model, monkeypatch) -> None:
    target = _copy(tiny_model, tmp_path)
    before = snapshot(target)

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("ctem.encoder._write_json", full)
    torch.manual_seed(1)
    with pytest.raises(OSError) as raised:
        tiny_encoder(write_vocab(tmp_path)).save_pretrained(target)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert snapshot(target) == before
    assert _siblings(target) == ["vocab.txt"]


def test_ctem_folders_are_marked_complete_and_plain_folders_need_no_marker(tmp_path) -> None:
    torch.manual_seed(0)
    encoder = tiny_encoder(write_vocab(tmp_path))
    out = encoder.save_pretrained(tmp_path / "m")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "ctem_config.json", "modules.json", COMPLETE_MARKER} <= names
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    assert _siblings(out) == ["vocab.txt"]
    # a plain transformers folder (no ctem files, no marker) loads as before
    encoder.backbone.save_pretrained(tmp_path / "hf")
    encoder.tokenizer.save_pretrained(tmp_path / "hf")
    np.testing.assert_allclose(TextEncoder.from_pretrained(tmp_path / "hf").encode(TEXTS), encoder.encode(TEXTS), atol=1e-6)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "missing", ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "ctem_config.json", "1_Pooling/config.json", COMPLETE_MARKER]
)
def test_loading_a_ctem_folder_without_one_of_its_files_names_it(tmp_path, tiny_model, missing) -> None:
    target = _copy(tiny_model, tmp_path)
    (target / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"^{target / missing}: missing"):
        TextEncoder.from_pretrained(target)


@pytest.mark.slow
def test_the_commands_report_an_incomplete_model_in_one_line(tmp_path, tiny_model) -> None:
    from ctem.cli import input_errors_as_messages
    from ctem.cli.mine import run
    from tests.reliability.conftest import compose_command, write_pairs

    target = _copy(tiny_model, tmp_path)
    (target / "model.safetensors").unlink()
    cfg = compose_command("mine", f"model_path={target}", f"input={write_pairs(tmp_path / 'in.jsonl', 6)}", f"output={tmp_path / 'out.jsonl'}")
    with pytest.raises(SystemExit) as done, input_errors_as_messages("ctem-mine"):
        run(cfg)
    assert str(done.value.code).startswith(f"ctem-mine: error: {target / 'model.safetensors'}: missing")


STUB = """#!/usr/bin/env bash
echo "$@" >> "$(dirname "$0")/calls.txt"
"""


def _pipeline(tmp_path: Path, run_dir: Path) -> list[str]:
    """scripts/cpack_pipeline.sh's contrastive stage with a stand-in for python; its calls."""
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {**os.environ, "STAGES": "contrastive", "START_MODEL": "start", "PYTHON": str(stub)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "cpack_pipeline.sh"), str(run_dir)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = tmp_path / "calls.txt"
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.slow
def test_the_pipeline_resumes_an_interrupted_stage_and_skips_only_complete_models(tmp_path) -> None:
    stage = tmp_path / "run" / "contrastive"
    (stage / "final_model").mkdir(parents=True)
    (stage / "final_model" / "config.json").write_text("{}")  # an export that did not finish
    (stage / "checkpoints").mkdir()
    (stage / "checkpoints" / "last.ckpt").write_bytes(b"")
    calls = _pipeline(tmp_path, tmp_path / "run")
    assert len(calls) == 1 and f"ckpt_path={stage / 'checkpoints' / 'last.ckpt'}" in calls[0].split()
    (stage / "checkpoints" / "interrupted.ckpt").write_bytes(b"")  # a later stop by SIGTERM
    os.utime(stage / "checkpoints" / "interrupted.ckpt", (time.time() + 5, time.time() + 5))
    calls = _pipeline(tmp_path, tmp_path / "run")
    assert len(calls) == 2 and f"ckpt_path={stage / 'checkpoints' / 'interrupted.ckpt'}" in calls[1].split()
    (stage / "final_model" / COMPLETE_MARKER).write_text("{}")
    assert len(_pipeline(tmp_path, tmp_path / "run")) == 2  # done: not run again


@pytest.mark.parametrize("change", ["truncated", "grown"])
def test_a_file_of_another_size_than_its_marker_records_is_named(tmp_path, tiny_model, change) -> None:
    target = _copy(tiny_model, tmp_path)
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if change == "truncated" else data + b"\0")
    with pytest.raises(FileNotFoundError, match=f"^{weights}: {weights.stat().st_size} bytes, but {len(data)} when the folder was completed"):
        TextEncoder.from_pretrained(target)
