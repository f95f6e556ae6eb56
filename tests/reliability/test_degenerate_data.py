"""Data without a usable row is an error naming the file, for every reader: training never
"trains" 0 steps on it, exits 0 and writes an untrained model, and no command scores,
mines or builds a vocabulary from nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ctem.data_modules import LabeledDataModule, PairDataModule, PretrainCorpusDataModule
from ctem.rows import DataFormatError, DataSizeError
from ctem.tokenization import load_tokenizer
from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import one_line_error, run_command, write_pairs
from tests.reliability.probes import command_error, tiny_run

# Bad rows only: each is skipped under on_bad_row=skip.
ALL_BAD = '{"query": ""}\n{"text": 3}\n[1, 2]\n'


def data_file(tmp_path: Path, kind: str) -> Path:
    """An ``empty`` file, a ``blank`` one (whitespace lines) or one whose rows are ``all_bad``."""
    path = tmp_path / f"{kind}.jsonl"
    path.write_text({"empty": "", "blank": "\n  \n\t\n", "all_bad": ALL_BAD}[kind], encoding="utf-8")
    return path


def first_pass(datamodule) -> None:
    """What training does first: set up, then draw a pass of batches."""
    datamodule.setup("fit")
    for _ in datamodule.train_dataloader():
        pass


def make(reader: str, tokenizer, path: Path, streaming: bool):
    common = dict(tokenizer=tokenizer, batch_size=2, on_bad_row="skip", cache_dir=str(path.parent / "cache"))
    if reader == "pairs":
        return PairDataModule(train_files=[str(path)], train_group_size=1, streaming=streaming, **common)
    if reader == "corpus":
        return PretrainCorpusDataModule(train_files=[str(path)], max_seq_length=16, streaming=streaming, **common)
    return LabeledDataModule(datasets={"d": {"files": str(path), "type": "sts"}}, train_group_size=1, **common)


CASES = [
    (reader, kind, streaming)
    for reader in ("pairs", "corpus", "labeled")
    for streaming in ((False, True) if reader != "labeled" else (False,))
    for kind in ("empty", "blank", "all_bad")
]


@pytest.mark.parametrize(("reader", "kind", "streaming"), CASES, ids=[f"{r}-{k}{'-streaming' if s else ''}" for r, k, s in CASES])
def test_training_data_without_rows_is_an_error_naming_the_file(tmp_path, reader, kind, streaming) -> None:
    path = data_file(tmp_path, kind)
    tokenizer = load_tokenizer(str(write_vocab(tmp_path)))
    with pytest.raises(DataSizeError, match=f"^{re.escape(str(path))}"):
        first_pass(make(reader, tokenizer, path, streaming))


@pytest.mark.slow
def test_training_command_on_skipped_rows_exits_1_without_a_model(tmp_path) -> None:
    path = data_file(tmp_path, "all_bad")
    run = tiny_run(write_vocab(tmp_path), path, tmp_path / "run", "data.on_bad_row=skip", "data.streaming=true", "trainer.max_steps=2")
    proc = run_command("ctem.cli.train", *run, cwd=tmp_path)
    line = command_error(proc)
    assert str(path) in line and "no batch" in line
    assert not (tmp_path / "run" / "final_model").exists()


def test_labeled_file_mixing_task_types_is_one_line(tmp_path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"query": "a", "pos": ["b"], "type": "sts"}\n{"query": "c", "pos": ["d"], "type": "nli"}\n', encoding="utf-8")
    tokenizer = load_tokenizer(str(write_vocab(tmp_path)))
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))} .*field 'type': mixes task types"):
        LabeledDataModule(tokenizer, datasets=[str(path)], train_group_size=1).setup("fit")


# --------------------------------------------------------------------------- mining
@pytest.mark.slow
@pytest.mark.parametrize(("which", "kind"), [("input", "empty"), ("candidate_pool", "all_bad")])
def test_mining_without_rows_is_one_line(tmp_path, tiny_model, which, kind) -> None:
    files = {"input": write_pairs(tmp_path / "train.jsonl", 4), "candidate_pool": tmp_path / "pool.jsonl"}
    files["candidate_pool"].write_text('{"text": "一个候选"}\n', encoding="utf-8")
    files[which] = data_file(tmp_path, kind)
    output = tmp_path / "mined.jsonl"
    proc = run_command(
        "ctem.cli.mine", f"model_path={tiny_model}", f"input={files['input']}", f"candidate_pool={files['candidate_pool']}",
        f"output={output}", "on_bad_row=skip", "mining.use_gpu=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    assert str(files[which]) in command_error(proc, "ctem-mine")
    assert not output.exists()


# --------------------------------------------------------------------------- vocabulary
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", "no texts"),
        ("blank.jsonl", b"\n \n", "no texts"),
        ("no_field.jsonl", b'{"title": "x"}\n', "no texts"),
        ("bad.jsonl", b'{"text": "a"}\n{oops\n', "bad.jsonl:2: invalid JSON"),
        ("bad_utf8.txt", b"abc\n\xff\xfe\n", "bad_utf8.txt:2: invalid UTF-8"),
        ("surrogate.jsonl", b'{"text": "\\ud800"}\n', "surrogate.jsonl:1: invalid text: a lone UTF-16 surrogate"),
        ("number.jsonl", b'{"text": "a"}\n{"text": 123}\n', "number.jsonl:2: field 'text': expected a string or a list of strings, got 123"),
    ],
)
@pytest.mark.slow
def test_build_vocab_refuses_a_corpus_without_texts_or_with_bad_lines(tmp_path, name, content, message) -> None:
    corpus = tmp_path / name
    corpus.write_bytes(content)
    proc = run_command("ctem.cli.build_vocab", "--out", str(tmp_path / "vocab"), str(corpus), cwd=tmp_path)
    assert message in one_line_error(proc, "ctem-build-vocab: error:")
    assert not (tmp_path / "vocab").exists()


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [("bad.jsonl", b'{"text": "a"}\n\n[1]\n', 3), ("bad_utf8.txt", b"abc\n\xff\n", 2)],
)
def test_vocabulary_corpus_reader_reports_file_and_line_as_a_record(tmp_path, name, content, line) -> None:
    from ctem.cli.build_vocab import iter_corpus_texts

    corpus = tmp_path / name
    corpus.write_bytes(content)
    with pytest.raises(DataFormatError) as err:
        list(iter_corpus_texts([str(corpus)], ("text",)))
    assert (err.value.file, err.value.line, err.value.field) == (str(corpus), line, None)


# --------------------------------------------------------------------------- evaluation tasks
def sts(score) -> dict:
    return {"sentence1": "一个句子", "sentence2": "另一个句子", "score": score}


def labelled(label) -> dict:
    return {"text": "一段文字", "label": label}


TASKS = {
    "empty_file": ("STS", {"test.jsonl": ""}, "test.jsonl: no rows"),
    "sts_constant_scores": ("STS", {"test.jsonl": [sts(3), sts(3), sts(3)]}, "test.jsonl: field 'score': all 3 scores are 3"),
    "sts_single_pair": ("STS", {"test.jsonl": [sts(1.5)]}, "test.jsonl: field 'score': all 1 scores"),
    "sts_nan_score": ("STS", {"test.jsonl": '{"sentence1": "a", "sentence2": "b", "score": NaN}\n'}, "test.jsonl:1: invalid JSON (NaN is not a JSON number)"),
    "sts_infinite_score": ("STS", {"test.jsonl": '{"sentence1": "a", "sentence2": "b", "score": 1e999}\n'}, "test.jsonl:1: invalid JSON (number 1e999 is out of range)"),
    "pair_classification_one_label": ("PairClassification", {"test.jsonl": [{**sts(0), "label": 1}] * 3}, "test.jsonl: field 'label': every row has label 1"),
    "classification_one_class": ("Classification", {"train.jsonl": [labelled("a")] * 4, "test.jsonl": [labelled("a")]}, "train.jsonl: field 'label': every row has label 'a'"),
    "classification_empty_test": ("Classification", {"train.jsonl": [labelled("a"), labelled("b")], "test.jsonl": "\n"}, "test.jsonl: no rows"),
    "clustering_empty": ("Clustering", {"test.jsonl": ""}, "test.jsonl: no rows"),
    "clustering_one_label": ("Clustering", {"test.jsonl": [labelled(0)] * 5}, "test.jsonl: field 'label': every row has label 0"),
    "retrieval_no_relevant": (
        "Retrieval",
        {"corpus.jsonl": [{"id": "d", "text": "x"}], "queries.jsonl": [{"id": "q", "text": "y"}], "qrels.jsonl": [{"qid": "q", "pid": "d", "score": 0}]},
        "qrels.jsonl: field 'score': no judgement above 0",
    ),
    "reranking_no_negative": ("Reranking", {"test.jsonl": [{"query": "q", "positive": ["p"], "negative": []}]}, "test.jsonl: no row has both"),
    "bad_utf8_rows": ("STS", {"test.jsonl": b'{"sentence1": "\xff", "sentence2": "b", "score": 1}\n'}, "test.jsonl:1: invalid UTF-8"),
    "lone_surrogate": ("STS", {"test.jsonl": '{"sentence1": "\\udc00", "sentence2": "b", "score": 1}\n'}, "test.jsonl:1: invalid text: a lone UTF-16 surrogate"),
    "bad_utf8_task_json": ("STS", {"task.json": b'{"name": "\xff", "type": "STS"}'}, "task.json: invalid UTF-8"),
}


def write_task(root: Path, task_type: str, files: dict) -> Path:
    folder = root / "tasks" / "Bad"
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps({"name": "Bad", "type": task_type}), encoding="utf-8")
    for name, rows in files.items():
        content = rows if isinstance(rows, (str, bytes)) else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


@pytest.mark.parametrize("case", list(TASKS))
def test_a_task_that_cannot_be_scored_is_an_error_naming_its_file(tmp_path, case) -> None:
    from ctem.evaluation import TaskFormatError, load_local_task

    task_type, files, message = TASKS[case]
    folder = write_task(tmp_path, task_type, files)
    with pytest.raises(TaskFormatError) as err:
        load_local_task(folder)
    assert str(err.value).startswith(str(folder)) and message in str(err.value)


@pytest.mark.slow
def test_eval_command_on_an_unscorable_task_is_one_line_and_writes_nothing(tmp_path, tiny_model) -> None:
    folder = write_task(tmp_path, *TASKS["clustering_empty"][:2])
    out = tmp_path / "results"
    proc = run_command("ctem.cli.eval", f"model_path={tiny_model}", f"tasks_dir={folder.parent}", f"output_dir={out}",
                       f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert f"{folder / 'test.jsonl'}: no rows" in one_line_error(proc, "ctem-eval: error:")
    assert not out.exists()
