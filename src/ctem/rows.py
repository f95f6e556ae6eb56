"""Reading and validating JSON-lines training data, with file:line:field errors.

Every reader of row files (training pairs, corpora, labeled data, mining input, curation
input, evaluation tasks, vocabulary corpora) goes through ``iter_rows``: it reads the
non-blank lines of each file, parses them (``parse_jsonl_line``; plain-text files with
``decode_text_line``), validates them, and yields each row with its ``source`` file and
``line``, or the bad row's ``DataFormatError``. That error is a record (``file``, ``line``,
``field``, ``message``); readers that keep rows in a ``datasets`` table store it in an
``error`` column (``error_feature``, ``table_row``) and rebuild it with
``DataFormatError.from_record``. Every reader applies the bad-row policy through
``raise_or_skip``: ``on_bad_row="error"`` raises, ``on_bad_row="skip"`` logs the row and
records it in a ``BadRowReport`` that the caller prints at the end of loading; nothing is
skipped silently.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from ctem.errors import CtemInputError
from ctem.settings import SettingError

log = logging.getLogger(__name__)

OnBadRow = Literal["error", "skip"]
# A \uD800-\uDFFF escape: only these can put a lone surrogate into a parsed string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_on_bad_row(on_bad_row: str) -> OnBadRow:
    """``on_bad_row`` if it is ``error`` or ``skip``; else a ``SettingError`` naming the setting."""
    if on_bad_row not in ("error", "skip"):
        raise SettingError("on_bad_row", on_bad_row, "must be 'error' or 'skip'")
    return on_bad_row  # type: ignore[return-value]


class DataSizeError(CtemInputError, ValueError):
    """Training data too small for the configured batches (one line for the command line)."""


class RowLocation(str):
    """Where a row is: the text ``file:line`` (just ``file`` when ``line`` is ``None``), with
    ``file`` and the 1-based ``line`` kept apart. Validators receive one as ``location``."""

    file: str
    line: int | None

    def __new__(cls, file: str, line: int | None = None) -> RowLocation:
        location = super().__new__(cls, file if line is None else f"{file}:{line}")
        location.file, location.line = file, line
        return location

    def __getnewargs__(self) -> tuple[str, int | None]:
        return self.file, self.line


class DataFormatError(CtemInputError, ValueError):
    """A bad row, as a record: ``file``, ``line`` (``None`` when the error is not about one
    line of a file: a whole file, a hub dataset row), ``field`` (the offending key; ``None``
    for the row as a whole) and ``message``. Its text is
    ``<file>:<line>: field '<field>': <message>``.

    ``location`` is a ``RowLocation`` (as readers pass it to validators) or any other text
    naming the place (that text is the ``file``, and ``line`` is ``None``).
    """

    def __init__(self, location: str, field: str | None, message: str) -> None:
        self.file = location.file if isinstance(location, RowLocation) else str(location)
        self.line = location.line if isinstance(location, RowLocation) else None
        self.field = field
        self.message = message
        where = f"{self.location}: field '{field}'" if field else self.location
        super().__init__(f"{where}: {message}")

    @property
    def location(self) -> RowLocation:
        return RowLocation(self.file, self.line)

    def record(self) -> dict[str, Any]:
        """The error as a mapping (the value of a table's ``error`` column, ``error_feature``)."""
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DataFormatError:
        """The error that ``record()`` gave (of this class: a subclass converts a record)."""
        return cls(RowLocation(record["file"], record["line"]), record["field"], record["message"])

    def with_note(self, note: str) -> DataFormatError:
        """The same error with `` (note)`` after its message."""
        return type(self)(self.location, self.field, f"{self.message} ({note})")

    def __reduce__(self) -> tuple[type, tuple[RowLocation, str | None, str]]:
        return type(self), (self.location, self.field, self.message)


@dataclass
class BadRowReport:
    """Counts rows skipped under ``on_bad_row=skip`` and keeps the first few messages."""

    keep: int = 5
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, error: DataFormatError) -> None:
        self.count += 1
        if len(self.examples) < self.keep:
            self.examples.append(str(error))

    def summary(self) -> str:
        lines = [f"skipped {self.count} bad row(s) (data.on_bad_row=skip)"]
        lines += [f"  {m}" for m in self.examples]
        if self.count > len(self.examples):
            lines.append(f"  ... and {self.count - len(self.examples)} more")
        return "\n".join(lines)


def raise_or_skip(error: DataFormatError, on_bad_row: OnBadRow, report: BadRowReport | None, note: str | None = None) -> None:
    """The bad-row policy of every reader: under ``on_bad_row="error"`` raise ``error`` (with
    ``note``, such as how to skip bad rows, after its message); under ``"skip"`` count it in
    ``report`` and log a warning naming it."""
    if check_on_bad_row(on_bad_row) == "error":
        raise error.with_note(note) if note else error
    if report is None:
        raise ValueError("on_bad_row='skip' needs a BadRowReport") from error
    report.add(error)
    log.warning("skipping bad row: %s", error)


def expand_files(patterns: str | Iterable[str]) -> list[str]:
    """Files from paths, globs and folders (``*.jsonl`` inside), in a stable sorted order."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.jsonl"))
        elif any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(pattern, recursive=True))
        elif path.is_file():
            found = [str(path)]
        else:
            raise FileNotFoundError(f"training data not found: {pattern} (relative paths start from {Path.cwd()})")
        if not found:
            raise FileNotFoundError(f"no .jsonl files match {pattern}")
        files.extend(found)
    return files


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _lone_surrogate(value: Any) -> bool:
    """Whether a string in ``value`` holds a lone UTF-16 surrogate (``"\\ud800"``), which no
    UTF-8 file (nor Arrow, nor a tokenizer) can hold."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def parse_jsonl_line(raw: bytes, location: str) -> Any:
    """One line's JSON value; ``DataFormatError`` at ``location`` for bad UTF-8, bad JSON,
    a non-finite number (``NaN``, ``Infinity``, ``1e999``) or a lone UTF-16 surrogate (the
    parser of ``iter_rows``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(location, None, f"invalid UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        value = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise DataFormatError(location, None, f"invalid JSON ({err.msg}, column {err.colno})") from None
    except ValueError as err:
        raise DataFormatError(location, None, f"invalid JSON ({err})") from None
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(value):
        raise DataFormatError(location, None, "invalid text: a lone UTF-16 surrogate (\\ud800-\\udfff escape) in a string")
    return value


def describe_source(files: str | Iterable[str] | None, hub_dataset: str | None = None) -> str:
    """Data as a message names it: its files (comma-separated) or its hub dataset."""
    if files is None:
        return str(hub_dataset)
    return files if isinstance(files, str) else ", ".join(str(f) for f in files)


def no_rows(source: str, report: BadRowReport | None = None) -> DataSizeError:
    """The error for data without a single usable row, naming ``source``: every row bad
    and skipped (``report``), or no row at all."""
    if report is not None and report.count:
        first = f"; first: {report.examples[0]}" if report.examples else ""
        return DataSizeError(f"{source}: no rows left: all {report.count} row(s) are bad and were skipped (on_bad_row=skip){first}")
    return DataSizeError(f"{source}: no rows (empty or blank)")


def require_rows(files: str | Iterable[str]) -> None:
    """``no_rows`` naming ``files`` when none of them has a non-blank line (checked before
    anything is built from them; reads up to the first row)."""
    files = [files] if isinstance(files, str) else list(files)
    if not any(True for path in files for _ in iter_jsonl_lines(path)):
        raise no_rows(describe_source(files))


def iter_jsonl_lines(path: str, start: int = 0, end: int | None = None, first_line: int = 1) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw bytes)`` of each non-blank line (1-based numbers); with ``start``
    / ``end``, the lines in bytes ``[start, end)`` only (``start`` at a line start, whose
    number is ``first_line``)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        for number, raw in enumerate(handle, start=first_line):
            if end is not None and position >= end:
                break
            position += len(raw)
            if raw.strip():
                yield number, raw


def require_object(row: Any, location: str) -> dict:
    """``row`` if it is a JSON object; else ``DataFormatError`` at ``location``."""
    if not isinstance(row, dict):
        raise DataFormatError(location, None, f"expected a JSON object, got {type(row).__name__}")
    return row


def require_text(row: dict, key: str, location: str) -> str:
    """The non-empty string under ``key``; else ``DataFormatError`` naming the field."""
    if key not in row:
        raise DataFormatError(location, key, "missing")
    value = row[key]
    if not isinstance(value, str):
        raise DataFormatError(location, key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataFormatError(location, key, "empty")
    return value


def _text_list(row: dict, key: str, location: str, required: bool) -> list[str]:
    if key not in row or row[key] is None:
        if required:
            raise DataFormatError(location, key, "missing")
        return []
    value = row[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataFormatError(location, key, f"expected a string or a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataFormatError(location, f"{key}[{i}]", f"expected a string, got {type(item).__name__}")
        if not item.strip():
            raise DataFormatError(location, f"{key}[{i}]", "empty")
    if required and not value:
        raise DataFormatError(location, key, "empty list")
    return value


def _optional_text(row: dict, key: str, location: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataFormatError(location, key, f"expected a string, got {type(value).__name__}")
    return value


def _score_list(row: dict, key: str, texts: list[str], texts_key: str, location: str) -> list[float]:
    """The teacher scores under ``key``: one finite number per entry of ``texts`` (the row's
    ``texts_key``); ``[]`` when absent."""
    value = row.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataFormatError(location, key, f"expected a list of numbers, got {type(value).__name__}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise DataFormatError(location, f"{key}[{i}]", f"expected a number, got {type(item).__name__}")
    if len(value) != len(texts):
        raise DataFormatError(location, key, f"has {len(value)} score(s) for {len(texts)} {texts_key} passage(s)")
    return [float(v) for v in value]


def validate_pair_row(row: Any, location: str, min_negatives: int = 0) -> dict[str, Any]:
    """A C-MTP-style row ``{"query", "pos", "neg"?, "pos_scores"?, "neg_scores"?, "prompt"?,
    "type"?}`` in normal form.

    ``pos`` may be a string or a list; the result always has lists and every key.
    ``min_negatives`` > 0 requires that many entries in ``neg``. ``pos_scores`` /
    ``neg_scores`` (FlagEmbedding's fields, written by ``ctem-score``) are a teacher's scores
    of ``pos`` / ``neg``, one number each, given together (``[]`` when absent).
    """
    require_object(row, location)
    query = require_text(row, "query", location)
    pos = _text_list(row, "pos", location, required=True)
    neg = _text_list(row, "neg", location, required=False)
    if len(neg) < min_negatives:
        raise DataFormatError(
            location,
            "neg",
            f"has {len(neg)} negative(s) but train_group_size needs at least {min_negatives}: "
            "mine hard negatives with `ctem-mine` or lower data.train_group_size",
        )
    pos_scores = _score_list(row, "pos_scores", pos, "pos", location)
    neg_scores = _score_list(row, "neg_scores", neg, "neg", location)
    if neg and bool(pos_scores) != bool(neg_scores):
        missing = "neg_scores" if pos_scores else "pos_scores"
        raise DataFormatError(location, missing, "missing: teacher scores need both pos_scores and neg_scores")
    return {
        "query": query,
        "pos": pos,
        "neg": neg,
        "pos_scores": pos_scores,
        "neg_scores": neg_scores,
        "prompt": _optional_text(row, "prompt", location),
        "type": _optional_text(row, "type", location),
    }


Validate = Callable[[Any, str], dict[str, Any]]
JSON_SUFFIXES = (".jsonl", ".json")


def decode_text_line(raw: bytes, location: str) -> str:
    """One line of a plain-text file, stripped; ``DataFormatError`` at ``location`` for bad UTF-8."""
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise DataFormatError(location, None, f"invalid UTF-8 ({err.reason} at byte {err.start})") from None


def check_row(validate: Validate, value: Any, location: str) -> dict[str, Any] | DataFormatError:
    """``validate(value, location)``, or the ``DataFormatError`` it raised: a bad row as a value."""
    try:
        return validate(value, location)
    except DataFormatError as err:
        return err


def iter_rows(
    files: Iterable[str],
    validate: Validate,
    validate_text: Validate | None = None,
) -> Iterator[dict[str, Any] | DataFormatError]:
    """The row loader of every reader: each non-blank line of ``files``, parsed
    (``parse_jsonl_line``) and validated (``validate(value, location)``, ``location`` a
    ``RowLocation``) into a row that also carries ``source`` (its file) and ``line``, or, for
    a bad line, its ``DataFormatError``. Nothing is raised for a bad line: the caller applies
    the bad-row policy (``raise_or_skip``) or stores the error (``table_row``).

    With ``validate_text``, files that are not JSON lines (suffix other than ``.jsonl`` /
    ``.json``) are plain text: each line, stripped (``decode_text_line``), goes to
    ``validate_text`` instead.
    """

    def read_json(raw: bytes, location: str) -> dict[str, Any]:
        return validate(parse_jsonl_line(raw, location), location)

    def read_text(raw: bytes, location: str) -> dict[str, Any]:
        assert validate_text is not None
        return validate_text(decode_text_line(raw, location), location)

    for path in files:
        read = read_text if validate_text is not None and not path.endswith(JSON_SUFFIXES) else read_json
        for number, raw in iter_jsonl_lines(path):
            row = check_row(read, raw, RowLocation(path, number))
            yield row if isinstance(row, DataFormatError) else {**row, "source": path, "line": number}


def iter_valid_rows(
    files: Iterable[str],
    validate: Validate,
    on_bad_row: OnBadRow = "error",
    report: BadRowReport | None = None,
    validate_text: Validate | None = None,
) -> Iterator[dict[str, Any]]:
    """The good rows of ``iter_rows`` (each with ``source`` and ``line``); each bad one goes
    to ``raise_or_skip``."""
    check_on_bad_row(on_bad_row)
    for row in iter_rows(files, validate, validate_text):
        if isinstance(row, DataFormatError):
            raise_or_skip(row, on_bad_row, report)
        else:
            yield row


# --------------------------------------------------------------------------- tables
def error_feature() -> dict[str, Any]:
    """The ``datasets`` feature of a table's ``error`` column: ``DataFormatError.record()``
    of a bad row, ``None`` for a good one."""
    import datasets  # only readers that build tables need it; the others start without it

    return {
        "file": datasets.Value("string"),
        "line": datasets.Value("int64"),
        "field": datasets.Value("string"),
        "message": datasets.Value("string"),
    }


def table_row(row: dict[str, Any] | DataFormatError, empty: dict[str, Any]) -> dict[str, Any]:
    """A row of ``iter_rows`` (or ``check_row``) as a row of a ``datasets`` table with an
    ``error`` column: a good row with ``error`` ``None``; a bad one as ``empty`` (a value for
    every other column) with its error's record."""
    if isinstance(row, DataFormatError):
        return {**empty, "error": row.record()}
    return {**row, "error": None}


def hub_table_row(validate: Validate, value: Any, dataset: str, split: str, index: int, empty: dict[str, Any]) -> dict[str, Any]:
    """Row ``index`` of a hub dataset's split as a table row (``table_row``): validated, with
    ``source`` (the dataset) and ``line`` (the index); a bad row's error names
    ``<dataset>[<split>] row <index>``."""
    row = check_row(validate, value, f"{dataset}[{split}] row {index}")
    return table_row(row if isinstance(row, DataFormatError) else {**row, "source": dataset, "line": index}, empty)


def good_rows(
    rows: Iterable[dict[str, Any]],
    on_bad_row: OnBadRow,
    report: BadRowReport | None,
    note: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The rows of a table with an ``error`` column (``table_row``) that are good; each bad
    one's error, rebuilt from its record, goes to ``raise_or_skip`` (with ``note``)."""
    for row in rows:
        if row["error"] is None:
            yield row
        else:
            raise_or_skip(DataFormatError.from_record(row["error"]), on_bad_row, report, note)
