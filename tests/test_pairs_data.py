"""PairDataModule: sampling rules, batches, determinism, and bad-input messages."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ctem.data_modules import DataFormatError, PairDataModule
from ctem.data_modules.pairs import sample_group
from ctem.tokenization import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_vocab):
    return load_tokenizer(str(tiny_vocab))


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


GOOD = [{"query": f"问题{i}", "pos": [f"答案{i}"], "neg": [f"错{i}a", f"错{i}b", f"错{i}c"]} for i in range(10)]


def test_sample_group_rules() -> None:
    rng = random.Random(0)
    row = {"pos": ["p"], "neg": ["a", "b", "c"]}
    for _ in range(20):
        group = sample_group(row, 3, rng)["passages"]
        assert group[0] == "p" and len(set(group[1:])) == 2  # without replacement
    few = sample_group({"pos": ["p"], "neg": ["a"]}, 4, rng)
    assert few == {"passages": ["p", "a", "a", "a"]}  # repeats only when too few
    assert sample_group(row, 1, rng) == {"passages": ["p"]}


def test_sample_group_carries_the_teacher_scores_of_its_passages() -> None:
    rng = random.Random(0)
    row = {"pos": ["p", "q"], "neg": ["a", "b", "c"], "pos_scores": [0.9, 0.8], "neg_scores": [0.1, 0.2, 0.3]}
    score = {"p": 0.9, "q": 0.8, "a": 0.1, "b": 0.2, "c": 0.3}
    for _ in range(20):
        group = sample_group(row, 3, rng)
        assert group["teacher_scores"] == [score[p] for p in group["passages"]]
    assert "teacher_scores" not in sample_group({**row, "neg_scores": []}, 3, rng)  # after a negative refresh


def test_batches_layout_and_determinism(tmp_path, tokenizer) -> None:
    f = write_rows(tmp_path / "a.jsonl", GOOD + [{"query": "单个", "pos": "字符串正例", "neg": ["负"]}])
    def first_batch(seed):
        dm = PairDataModule(tokenizer, train_files=str(f), batch_size=4, train_group_size=3, query_max_length=8,
                            passage_max_length=10, query_instruction="大的", seed=seed, cache_dir=str(tmp_path / "c"))
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))
    b = first_batch(1)
    assert b["group_size"] == 3
    assert b["query"]["input_ids"].shape[0] == 4 and b["passages"]["input_ids"].shape[0] == 12
    assert b["query"]["input_ids"].shape[1] <= 8 and b["passages"]["input_ids"].shape[1] <= 10
    assert tokenizer.decode(b["query"]["input_ids"][0]).replace(" ", "").startswith("[CLS]大的问题")
    again = first_batch(1)
    assert (again["passages"]["input_ids"] == b["passages"]["input_ids"]).all()


def test_ranks_read_distinct_shards(tmp_path, tokenizer) -> None:
    f = write_rows(tmp_path / "a.jsonl", GOOD)
    dm = PairDataModule(tokenizer, train_files=str(f), batch_size=1, train_group_size=1, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    from ctem.data_modules.base import EpochSeededSampler

    shards = [list(EpochSeededSampler(dm.train_dataset, num_replicas=2, rank=r, seed=0)) for r in (0, 1)]
    assert not {i for i, _ in shards[0]} & {i for i, _ in shards[1]}
    assert len(shards[0]) + len(shards[1]) == len(GOOD)


BAD_CASES = [
    ({"pos": ["x"]}, "field 'query': missing"),
    ({"query": "  ", "pos": ["x"]}, "field 'query': empty"),
    ({"query": 3, "pos": ["x"]}, "field 'query': expected a string, got int"),
    ({"query": "q"}, "field 'pos': missing"),
    ({"query": "q", "pos": []}, "field 'pos': empty list"),
    ({"query": "q", "pos": [""]}, "field 'pos[0]': empty"),
    ({"query": "q", "pos": {"a": 1}}, "field 'pos': expected a string or a list of strings, got dict"),
    ({"query": "q", "pos": ["x"], "neg": [1]}, "field 'neg[0]': expected a string, got int"),
    ('{"query": "q", "pos": ["x"]', "invalid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_CASES)
def test_bad_row_error_names_file_line_and_field(tmp_path, tokenizer, bad, message) -> None:
    f = write_rows(tmp_path / "bad.jsonl", GOOD[:3] + [bad] + GOOD[3:])
    dm = PairDataModule(tokenizer, train_files=str(f), train_group_size=1, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataFormatError) as err:
        dm.setup("fit")
    assert f"{f}:4" in str(err.value) and message in str(err.value)
    assert (err.value.file, err.value.line) == (str(f), 4)  # the record, not text to parse
    assert str(err.value).endswith("(data.on_bad_row=skip skips bad rows)")


def test_bad_row_record_names_file_line_and_field_map_style_and_streamed(tmp_path, tokenizer) -> None:
    f = write_rows(tmp_path / "bad.jsonl", GOOD[:2] + [{"query": "q", "pos": [""]}] + GOOD[2:])
    for streaming in (False, True):
        dm = PairDataModule(tokenizer, train_files=str(f), train_group_size=1, streaming=streaming, cache_dir=str(tmp_path / "c"))
        with pytest.raises(DataFormatError) as err:
            dm.setup("fit")
            list(dm.train_dataset)  # a streamed source meets its bad row when read
        error = err.value
        assert (error.file, error.line, error.field) == (str(f), 3, "pos[0]")
        assert error.message == "empty (data.on_bad_row=skip skips bad rows)"
        assert str(error) == f"{f}:3: field 'pos[0]': empty (data.on_bad_row=skip skips bad rows)"


def test_invalid_utf8_is_reported(tmp_path, tokenizer) -> None:
    f = tmp_path / "bin.jsonl"
    f.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + b'{"query": "\xff\xfe", "pos": ["a"]}\n')
    dm = PairDataModule(tokenizer, train_files=str(f), train_group_size=1, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataFormatError, match=rf"{f}:2: invalid UTF-8"):
        dm.setup("fit")


def test_missing_negatives_for_group_size(tmp_path, tokenizer) -> None:
    f = write_rows(tmp_path / "noneg.jsonl", [{"query": "q", "pos": ["p"]}])
    dm = PairDataModule(tokenizer, train_files=str(f), train_group_size=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataFormatError, match=r"noneg.jsonl:1: field 'neg': has 0 negative\(s\).*ctem-mine"):
        dm.setup("fit")


def test_skip_mode_reports_count_and_locations(tmp_path, tokenizer, caplog) -> None:
    bad = [c[0] for c in BAD_CASES]
    f = write_rows(tmp_path / "mixed.jsonl", GOOD + bad)
    dm = PairDataModule(tokenizer, train_files=str(f), train_group_size=1, on_bad_row="skip", cache_dir=str(tmp_path / "c"))
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert len(dm.train_dataset) == len(GOOD)
    assert dm.bad_rows.count == len(bad)
    assert f"{f}:11" in dm.bad_rows.examples[0]
    assert f"skipped {len(bad)} bad row(s)" in caplog.text
    assert f"skipping bad row: {f}:11: field 'query': missing" in caplog.messages  # each row as it is skipped


def test_missing_file_and_empty_glob(tmp_path, tokenizer) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        PairDataModule(tokenizer, train_files=str(tmp_path / "nope.jsonl")).setup("fit")
    with pytest.raises(FileNotFoundError, match="no .jsonl files match"):
        PairDataModule(tokenizer, train_files=str(tmp_path / "*.jsonl")).setup("fit")


def test_edited_file_is_read_again(tmp_path, tokenizer) -> None:
    f = write_rows(tmp_path / "a.jsonl", GOOD[:4])
    kwargs = dict(train_files=str(f), train_group_size=1, cache_dir=str(tmp_path / "c"))
    dm = PairDataModule(tokenizer, **kwargs)
    dm.setup("fit")
    assert len(dm.train_dataset) == 4
    write_rows(f, GOOD[:7])
    dm = PairDataModule(tokenizer, **kwargs)
    dm.setup("fit")
    assert len(dm.train_dataset) == 7


def test_streaming_yields_groups(tmp_path, tokenizer) -> None:
    f = write_rows(tmp_path / "a.jsonl", GOOD)
    dm = PairDataModule(tokenizer, train_files=str(f), batch_size=5, train_group_size=2, streaming=True)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and batches[0]["passages"]["input_ids"].shape[0] == 10


def test_teacher_scores_reach_the_batch(tmp_path, tokenizer) -> None:
    rows = [{**r, "pos_scores": [1.0], "neg_scores": [0.5, 0.25, 0.0]} for r in GOOD]
    dm = PairDataModule(tokenizer, train_files=str(write_rows(tmp_path / "s.jsonl", rows)), batch_size=4,
                        train_group_size=3, query_max_length=16, passage_max_length=16, seed=0, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["teacher_scores"].shape == (4, 3) and (batch["teacher_scores"][:, 0] == 1.0).all()


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"pos_scores": [1.0, 2.0], "neg_scores": [0.1, 0.2, 0.3]}, "pos_scores", "2 score(s) for 1 pos passage(s)"),
        ({"pos_scores": [1.0], "neg_scores": [0.1, "x", 0.3]}, "neg_scores[1]", "expected a number, got str"),
        ({"pos_scores": [1.0]}, "neg_scores", "need both pos_scores and neg_scores"),
        ({"pos_scores": 1.0, "neg_scores": [0.1, 0.2, 0.3]}, "pos_scores", "expected a list of numbers"),
    ],
)
def test_bad_teacher_scores_name_file_line_and_field(tmp_path, tokenizer, row, field, message) -> None:
    f = write_rows(tmp_path / "bad.jsonl", [GOOD[0], {**GOOD[1], **row}])
    dm = PairDataModule(tokenizer, train_files=str(f), train_group_size=3, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataFormatError) as err:
        dm.setup("fit")
    assert (err.value.file, err.value.line, err.value.field) == (str(f), 2, field) and message in str(err.value)


def test_the_data_language_is_checked_against_the_rows(tmp_path, tokenizer, caplog) -> None:
    """The language the data is configured with (conf/lang, recorded in the model card) is
    kept when the rows are written in its script; English rows under the default lang=zh
    are a loud warning and the card names no language."""
    chinese = write_rows(tmp_path / "zh.jsonl", GOOD)
    english = write_rows(tmp_path / "en.jsonl", [{"query": f"what is item {i}", "pos": [f"item {i} is a thing"]} for i in range(8)])
    dm = PairDataModule(tokenizer, train_files=str(chinese), train_group_size=1, cache_dir=str(tmp_path / "c"), language="zh")
    dm.setup("fit")
    assert dm.language == "zh" and "not written in its script" not in caplog.text
    dm = PairDataModule(tokenizer, train_files=str(english), train_group_size=1, cache_dir=str(tmp_path / "c"), language="zh")
    dm.setup("fit")
    assert dm.language is None
    assert "configured as language 'zh' (lang=zh) but 8 sampled texts are not written in its script" in caplog.text
    dm = PairDataModule(tokenizer, train_files=str(english), train_group_size=1, cache_dir=str(tmp_path / "c"), language="en")
    dm.setup("fit")
    assert dm.language == "en"
