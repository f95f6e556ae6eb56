"""Input errors that used to end in a traceback (or, for a token limit below the special
tokens, in a tokenizer that does not truncate at all) are one line naming the file or the
setting, with exit status 1, for every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctem.data_modules import PretrainCorpusDataModule
from ctem.evaluation import EncoderAdapter
from ctem.settings import SettingError
from ctem.tokenization import check_max_length, load_tokenizer
from tests.helpers.tiny import tiny_encoder, write_vocab
from tests.reliability.conftest import run_command, write_pairs
from tests.reliability.probes import command_error, sts_task, tiny_run

SURROGATE = '{"query": "\\ud800", "pos": ["一个句子"]}\n'
MIXED = '{"query": "一", "pos": ["二"], "type": "sts"}\n{"query": "三", "pos": ["四"], "type": "nli"}\n'


def with_data(args: list[str], *data: str) -> list[str]:
    """``args`` with its ``data`` overrides replaced by ``data``."""
    return [a for a in args if not a.startswith("data")] + list(data)


def train_args(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """Overrides of ``case`` and a fragment its error line must hold."""
    vocab, run = write_vocab(tmp_path), tmp_path / "run"
    pairs = write_pairs(tmp_path / "pairs.jsonl", 8)
    if case == "lone_surrogate":
        bad = tmp_path / "bad.jsonl"
        bad.write_text(SURROGATE, encoding="utf-8")
        return tiny_run(vocab, bad, run), f"{bad}:1: invalid text: a lone UTF-16 surrogate"
    if case == "query_max_length":
        return tiny_run(vocab, pairs, run, "model.query_max_length=1"), "query_max_length=1: must be an integer of at least 3"
    if case == "max_seq_length":
        corpus = with_data(tiny_run(vocab, pairs, run, "stage=retromae"), "data=corpus", f"data.train_files=[{pairs}]", "data.text_field=query", "data.max_seq_length=2")
        return corpus, "data.max_seq_length=2: must be an integer of at least 3"
    if case == "instruction_name":  # a name that does not exist, not an instruction text "bge_fr"
        return tiny_run(vocab, pairs, run, "data.query_instruction=bge_fr"), "unknown instruction name 'bge_fr': use one of bge_zh, bge_en, none"
    if case == "missing_tokenizer":  # raised inside Hydra's instantiate, which wraps it in lines of its own
        return tiny_run(tmp_path / "no" / "vocab.txt", pairs, run), f"tokenizer not found: {tmp_path / 'no' / 'vocab.txt'}"
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(MIXED, encoding="utf-8")
    labeled = with_data(tiny_run(vocab, pairs, run, "stage=multitask"), "data=labeled", f"data.datasets=[{mixed}]", "data.train_group_size=1")
    return labeled, f"{mixed} (dataset 'mixed'): field 'type': mixes task types ['nli', 'sts']"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["lone_surrogate", "query_max_length", "max_seq_length", "instruction_name", "missing_tokenizer", "mixed_task_types"])
def test_train_input_errors_are_one_line(tmp_path, case) -> None:
    args, fragment = train_args(tmp_path, case)
    proc = run_command("ctem.cli.train", *args, cwd=tmp_path)
    assert fragment in command_error(proc)
    assert not (tmp_path / "run" / "final_model").exists()


@pytest.mark.slow
def test_an_english_task_folder_with_a_missing_file_is_one_line(tmp_path, tiny_model) -> None:
    """ctem-eval lang=en on a task folder whose queries file is missing: one line naming it."""
    task = tmp_path / "tasks" / "EnRetrieval"
    task.mkdir(parents=True)
    (task / "task.json").write_text('{"name": "EnRetrieval", "type": "Retrieval", "language": "en"}', encoding="utf-8")
    (task / "corpus.jsonl").write_text('{"id": "d1", "text": "cells divide"}\n', encoding="utf-8")
    (task / "qrels.jsonl").write_text('{"qid": "q1", "pid": "d1", "score": 1}\n', encoding="utf-8")
    proc = run_command("ctem.cli.eval", "lang=en", f"model_path={tiny_model}", f"tasks_dir={tmp_path / 'tasks'}", f"output_dir={tmp_path / 'out'}",
                       f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert f"{task / 'queries.jsonl'}" in command_error(proc, "ctem-eval")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_eval_max_length_below_the_special_tokens_is_one_line(tmp_path, tiny_model) -> None:
    proc = run_command("ctem.cli.eval", f"model_path={tiny_model}", f"tasks_dir={sts_task(tmp_path)}", f"output_dir={tmp_path / 'out'}",
                       "eval.max_length=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert "max_length=1: must be an integer of at least 3" in command_error(proc, "ctem-eval")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["query_max_length", "lone_surrogate"])
def test_mine_input_errors_are_one_line(tmp_path, tiny_model, case) -> None:
    data = write_pairs(tmp_path / "train.jsonl", 4)
    extra, fragment = ["query_max_length=1"], "query_max_length=1: must be an integer of at least 3"
    if case == "lone_surrogate":
        data.write_text(SURROGATE, encoding="utf-8")
        extra, fragment = [], f"{data}:1: invalid text: a lone UTF-16 surrogate"
    proc = run_command("ctem.cli.mine", f"model_path={tiny_model}", f"input={data}", f"output={tmp_path / 'mined.jsonl'}",
                       "mining.use_gpu=false", *extra, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert fragment in command_error(proc, "ctem-mine")
    assert not (tmp_path / "mined.jsonl").exists()


@pytest.mark.parametrize("max_length", [0, 1, 2, -5, 2.5, True])
def test_a_token_limit_without_room_for_text_is_refused_everywhere(tmp_path, max_length) -> None:
    vocab = write_vocab(tmp_path)
    tokenizer = load_tokenizer(str(vocab))
    with pytest.raises(SettingError, match="setting_name="):
        check_max_length(tokenizer, max_length, "setting_name")
    with pytest.raises(SettingError, match="passage_max_length="):
        tiny_encoder(vocab, passage_max_length=max_length or -1)
    with pytest.raises(SettingError, match="max_length="):
        EncoderAdapter(tiny_encoder(vocab), max_length=max_length or -1)
    with pytest.raises(SettingError, match="data.max_seq_length="):
        PretrainCorpusDataModule(tokenizer, train_files=["unused.jsonl"], max_seq_length=max_length or -1)
    assert check_max_length(tokenizer, 3, "setting_name") == 3
