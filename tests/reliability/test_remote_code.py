"""A model folder that ships its own Python code (``auto_map``) never runs it unless
``trust_remote_code`` is set: every command refuses it with one line and exit status 1,
even with "y" waiting on stdin (transformers would otherwise ask "[y/N]" and run it)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from ctem import TextEncoder
from ctem.cli import input_errors_as_messages
from ctem.config import ASSETS_DIR
from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import compose_command, one_line_error, run_command, write_pairs

CODE = """
import pathlib
pathlib.Path({sentinel!r}).write_text("the model's own code ran")
from transformers import BertConfig, BertModel, BertTokenizerFast
class ProbeConfig(BertConfig):
    model_type = "ctem_probe"
class ProbeModel(BertModel):
    config_class = ProbeConfig
class ProbeTokenizer(BertTokenizerFast):
    pass
"""
SIZES = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 400}


def custom_code_model(root: Path, where: str = "config") -> tuple[Path, Path]:
    """A folder whose ``config.json`` (or ``tokenizer_config.json``) maps the Auto classes to
    its own ``custom.py`` (unknown ``model_type``); importing that file writes the sentinel."""
    folder, sentinel = root / "custom_model", root / "SENTINEL"
    folder.mkdir()
    write_vocab(folder)
    (folder / "custom.py").write_text(CODE.format(sentinel=str(sentinel)), encoding="utf-8")
    config: dict = {"model_type": "ctem_probe", **SIZES}
    if where == "config":
        config["auto_map"] = {"AutoConfig": "custom.ProbeConfig", "AutoModel": "custom.ProbeModel"}
    else:
        tokenizer = {"tokenizer_class": "ProbeTokenizer", "auto_map": {"AutoTokenizer": [None, "custom.ProbeTokenizer"]}}
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder, sentinel


@pytest.fixture
def yes_on_stdin(monkeypatch):
    """What a user who types "y" at every prompt would give."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))


def _message(command: str, run, cfg) -> str:
    with pytest.raises(SystemExit) as done, input_errors_as_messages(command):
        run(cfg)
    return str(done.value.code)


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_text_encoder_refuses_the_code_and_never_prompts(tmp_path, yes_on_stdin, where) -> None:
    folder, sentinel = custom_code_model(tmp_path, where)
    with pytest.raises(ValueError, match=r"the model needs its own Python code \(auto_map\); set trust_remote_code=true"):
        TextEncoder.from_pretrained(folder)
    assert not sentinel.exists()


def test_the_tokenizer_source_is_checked_too_and_ctem_folders_load_without_a_question(tmp_path, tiny_model, yes_on_stdin) -> None:
    folder, sentinel = custom_code_model(tmp_path, "tokenizer")
    with pytest.raises(ValueError, match=r"needs its own Python code \(auto_map\)"):
        TextEncoder(config={"model_type": "bert", **SIZES}, tokenizer=str(folder))
    assert not sentinel.exists()
    assert TextEncoder.from_pretrained(tiny_model).dim == 32
    assert sys.stdin.read() == "y\n" * 20  # nothing was asked


@pytest.mark.slow
def test_ctem_eval_refuses_with_one_line_even_with_y_on_stdin(tmp_path) -> None:
    folder, sentinel = custom_code_model(tmp_path)
    proc = run_command(
        "ctem.cli.eval", f"model_path={folder}", f"tasks_dir={ASSETS_DIR / 'quickstart' / 'dev'}", f"output_dir={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, stdin="y\n" * 20,
    )
    line = one_line_error(proc, "ctem-eval: error: ")
    assert line == f"ctem-eval: error: {folder}: the model needs its own Python code (auto_map); set trust_remote_code=true to run it"
    assert not sentinel.exists()


def test_ctem_mine_refuses(tmp_path, yes_on_stdin) -> None:
    from ctem.cli.mine import run

    folder, sentinel = custom_code_model(tmp_path)
    data = write_pairs(tmp_path / "train.jsonl", 8)
    cfg = compose_command("mine", f"model_path={folder}", f"input={data}", f"output={tmp_path / 'mined.jsonl'}", "cache_dir=null")
    assert _message("ctem-mine", run, cfg).endswith("set trust_remote_code=true to run it")
    assert not sentinel.exists() and not (tmp_path / "mined.jsonl").exists()


def test_ctem_curate_refuses_naming_its_setting(tmp_path, yes_on_stdin) -> None:
    from ctem.cli.curate import run

    folder, sentinel = custom_code_model(tmp_path)
    data = write_pairs(tmp_path / "in" / "train.jsonl", 8)
    cfg = compose_command("curate", f"input_files=[{data}]", f"scorer.model_path={folder}", f"output_dir={tmp_path / 'out'}", "progress=false")
    assert _message("ctem-curate", run, cfg).endswith("set scorer.trust_remote_code=true to run it")
    assert not sentinel.exists()


def test_training_refuses_naming_its_setting(tmp_path, compose_train, yes_on_stdin) -> None:
    from ctem.cli.train import run

    folder, sentinel = custom_code_model(tmp_path)
    cfg = compose_train("model=hf", f"model.name_or_path={folder}", "logger=none", "callbacks=none", "train=false")
    assert _message("ctem-train", run, cfg) == (
        f"ctem-train: error: {folder}: the model needs its own Python code (auto_map); set model.trust_remote_code=true to run it"
    )
    assert not sentinel.exists()
