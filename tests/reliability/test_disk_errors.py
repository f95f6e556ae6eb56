"""A full disk or a forbidden / read-only output is one line naming the path and exit status
1, and leaves no partial or temporary file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ctem.cli import input_errors_as_messages
from ctem.config import ASSETS_DIR
from tests.reliability.conftest import compose_command, file_size_limit, write_pairs


def _message(command: str, run, cfg) -> str:
    with pytest.raises(SystemExit) as done, input_errors_as_messages(command):
        run(cfg)
    return str(done.value.code)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_ctem_mine_on_a_full_disk(tmp_path, tiny_model) -> None:
    from ctem.cli.mine import run

    data = write_pairs(tmp_path / "train.jsonl", 200)
    out = tmp_path / "out" / "mined.jsonl"
    cfg = compose_command("mine", f"model_path={tiny_model}", f"input={data}", f"output={out}", "cache_dir=null", "mining.show_progress=false",
                          "mining.range=[0,50]", "mining.negative_number=15")
    with file_size_limit(20_000):
        message = _message("ctem-mine", run, cfg)
    assert message == f"ctem-mine: error: {out}: File too large"
    assert os.listdir(out.parent) == []


def test_ctem_eval_on_a_full_disk_leaves_no_truncated_result(tmp_path, tiny_model) -> None:
    from ctem.cli.eval import run

    out = tmp_path / "out"
    cfg = compose_command("eval", f"model_path={tiny_model}", f"tasks_dir={ASSETS_DIR / 'quickstart' / 'dev'}", "eval.tasks=[QuickstartRetrieval]",
                          f"output_dir={out}", "progress=false")
    with file_size_limit(1_000):
        message = _message("ctem-eval", run, cfg)
    # The results are written into a staging folder inside `out` and moved in only as a
    # complete set: the error names the staged file, and `out` is left as it was (empty).
    assert message.startswith(f"ctem-eval: error: {out}") and message.endswith("QuickstartRetrieval.json: File too large"), message
    assert _files(out) == []


def test_ctem_curate_output_folder_not_writable(tmp_path, monkeypatch) -> None:
    from ctem.cli.curate import run

    data = write_pairs(tmp_path / "in" / "train.jsonl", 6)
    out = tmp_path / "out"
    real_mkdtemp = __import__("tempfile").mkdtemp

    def forbidden(dir=None, **kwargs):
        if str(dir) == str(out):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkdtemp(dir=dir, **kwargs)

    monkeypatch.setattr("tempfile.mkdtemp", forbidden)
    cfg = compose_command("curate", f"input_files=[{data}]", f"output_dir={out}", "progress=false")
    assert _message("ctem-curate", run, cfg) == f"ctem-curate: error: {out}: Permission denied"
    assert _files(tmp_path / "out") == []


def test_a_read_only_file_system_while_exporting(tmp_path, monkeypatch) -> None:
    import torch

    from tests.helpers.tiny import tiny_encoder, write_vocab

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    torch.manual_seed(0)
    encoder = tiny_encoder(write_vocab(tmp_path))
    monkeypatch.setattr("ctem.files.os.rename", read_only)
    with pytest.raises(OSError) as raised:
        encoder.save_pretrained(tmp_path / "final_model")
    assert (raised.value.errno, raised.value.filename) == (errno.EROFS, str(tmp_path / "final_model"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.txt"]


def test_an_export_on_a_full_disk_is_one_line_naming_the_folder(tmp_path) -> None:
    import torch

    from tests.helpers.tiny import tiny_encoder, write_vocab

    torch.manual_seed(0)
    encoder = tiny_encoder(write_vocab(tmp_path))
    with file_size_limit(50_000), pytest.raises(SystemExit) as done, input_errors_as_messages("ctem-train"):
        encoder.save_pretrained(tmp_path / "final_model")  # safetensors' own writer fails first
    assert str(done.value.code) == f"ctem-train: error: {tmp_path / 'final_model'}: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_real_read_only_output_folder(tmp_path, tiny_model) -> None:
    from ctem.cli.mine import run

    data = write_pairs(tmp_path / "train.jsonl", 10)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    cfg = compose_command("mine", f"model_path={tiny_model}", f"input={data}", f"output={tmp_path / 'ro' / 'x.jsonl'}", "cache_dir=null")
    try:
        assert _message("ctem-mine", run, cfg).startswith(f"ctem-mine: error: {tmp_path / 'ro'}")
        assert os.listdir(tmp_path / "ro") == []
    finally:
        (tmp_path / "ro").chmod(0o755)
