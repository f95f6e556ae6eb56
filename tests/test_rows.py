"""``ctem.rows``: the bad-row record, the one bad-row policy (``raise_or_skip``) and the one row loader."""

from __future__ import annotations

import logging
import pickle

import datasets
import pytest

from ctem.rows import (
    BadRowReport,
    DataFormatError,
    RowLocation,
    error_feature,
    good_rows,
    iter_rows,
    iter_valid_rows,
    raise_or_skip,
    require_text,
    table_row,
)


def _text_row(value, location):
    return {"text": require_text(value, "text", location)}


def test_the_error_is_a_record_and_its_text_is_file_line_field_message() -> None:
    error = DataFormatError(RowLocation("a.jsonl", 7), "text", "empty")
    assert (error.file, error.line, error.field, error.message) == ("a.jsonl", 7, "text", "empty")
    assert str(error) == "a.jsonl:7: field 'text': empty" and error.location == "a.jsonl:7"
    assert str(DataFormatError("a.jsonl (dataset 'a')", None, "no rows")) == "a.jsonl (dataset 'a'): no rows"
    for copy in (DataFormatError.from_record(error.record()), pickle.loads(pickle.dumps(error))):
        assert copy.record() == error.record() and str(copy) == str(error)
    noted = error.with_note("how to skip")
    assert noted.message == "empty (how to skip)" and (noted.file, noted.line, noted.field) == ("a.jsonl", 7, "text")


def test_raise_or_skip_raises_under_error_and_counts_and_warns_under_skip(caplog) -> None:
    error = DataFormatError(RowLocation("a.jsonl", 2), "query", "missing")
    with pytest.raises(DataFormatError) as raised:
        raise_or_skip(error, "error", BadRowReport())
    assert raised.value is error
    with pytest.raises(DataFormatError, match=r"^a\.jsonl:2: field 'query': missing \(set skip\)$") as noted:
        raise_or_skip(error, "error", None, note="set skip")
    assert (noted.value.file, noted.value.line, noted.value.field) == ("a.jsonl", 2, "query")
    report = BadRowReport(keep=1)
    with caplog.at_level(logging.WARNING, logger="ctem.rows"):
        raise_or_skip(error, "skip", report, note="not used when skipping")
        raise_or_skip(DataFormatError(RowLocation("a.jsonl", 5), None, "invalid JSON"), "skip", report)
    assert report.count == 2 and report.examples == ["a.jsonl:2: field 'query': missing"]
    assert caplog.messages == ["skipping bad row: a.jsonl:2: field 'query': missing", "skipping bad row: a.jsonl:5: invalid JSON"]
    with pytest.raises(ValueError, match="needs a BadRowReport"):
        raise_or_skip(error, "skip", None)
    with pytest.raises(ValueError, match="on_bad_row=.*: must be 'error' or 'skip'"):
        raise_or_skip(error, "ignore", report)


def test_iter_rows_yields_rows_with_source_and_line_and_bad_lines_as_records(tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"text": "a"}\n\n{"text": ""}\n{oops\n{"text": "b"}\n')
    text = tmp_path / "t.txt"
    text.write_bytes(b"first\n\xff\n")
    rows = list(iter_rows([str(data), str(text)], _text_row, validate_text=lambda t, location: {"text": t}))
    assert [r if isinstance(r, dict) else (r.file, r.line, r.field) for r in rows] == [
        {"text": "a", "source": str(data), "line": 1},
        (str(data), 3, "text"),
        (str(data), 4, None),
        {"text": "b", "source": str(data), "line": 5},
        {"text": "first", "source": str(text), "line": 1},
        (str(text), 2, None),
    ]
    report = BadRowReport()
    assert [r["text"] for r in iter_valid_rows([str(data)], _text_row, "skip", report)] == ["a", "b"]
    assert report.count == 2
    with pytest.raises(DataFormatError, match=rf"^{data}:3: field 'text': empty$"):
        list(iter_valid_rows([str(data)], _text_row))


def test_a_table_keeps_the_record_and_good_rows_rebuilds_it(tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a"}\n{"text": 3}\n', encoding="utf-8")
    features = datasets.Features(
        {"text": datasets.Value("string"), "source": datasets.Value("string"), "line": datasets.Value("int64"), "error": error_feature()}
    )
    empty = {"text": "", "source": None, "line": None}
    table = datasets.Dataset.from_list([table_row(r, empty) for r in iter_rows([str(data)], _text_row)], features=features)
    assert table[1]["error"] == {"file": str(data), "line": 2, "field": "text", "message": "expected a string, got int"}
    with pytest.raises(DataFormatError) as err:
        list(good_rows(table, "error", None, note="skip it"))
    assert (err.value.file, err.value.line, err.value.field) == (str(data), 2, "text")
    assert err.value.message == "expected a string, got int (skip it)"
    report = BadRowReport()
    assert [r["text"] for r in good_rows(table, "skip", report)] == ["a"] and report.count == 1
