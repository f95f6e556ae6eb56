"""Reading and validating JSON-lines training data, with file:line:field errors.

Every reader of training files goes through here, so bad input is reported the same way
everywhere: ``DataFormatError`` names the file, the 1-based line and the field. With
``on_bad_row="skip"`` the row is dropped and recorded in a ``BadRowReport`` that the caller
prints at the end of loading; nothing is skipped silently.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

log = logging.getLogger(__name__)

OnBadRow = Literal["error", "skip"]
# A \uD800-\uDFFF escape: only these can put a lone surrogate into a parsed string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_on_bad_row(on_bad_row: str) -> OnBadRow:
    """``on_bad_row`` if it is ``error`` or ``skip``; else a ``ValueError`` naming the setting."""
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    return on_bad_row  # type: ignore[return-value]


class DataSizeError(ValueError):
    """Training data too small for the configured batches (one line for the command line)."""


class DataFormatError(ValueError):
    """A bad training row: ``location`` is ``file:line`` and ``field`` the offending key."""

    def __init__(self, location: str, field: str | None, message: str) -> None:
        self.location = location
        self.field = field
        where = f"{location}: field '{field}'" if field else location
        super().__init__(f"{where}: {message}")


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
    a non-finite number (``NaN``, ``Infinity``, ``1e999``) or a lone UTF-16 surrogate. Every
    reader of JSON lines (training data, mining, curation, evaluation tasks, vocabulary
    corpora) parses through here."""
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


def iter_jsonl_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw bytes)`` of each non-blank line (1-based numbers)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
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


def validate_pair_row(row: Any, location: str, min_negatives: int = 0) -> dict[str, Any]:
    """A C-MTP-style row ``{"query", "pos", "neg"?, "prompt"?, "type"?}`` in normal form.

    ``pos`` may be a string or a list; the result always has lists and every key.
    ``min_negatives`` > 0 requires that many entries in ``neg``.
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
    return {
        "query": query,
        "pos": pos,
        "neg": neg,
        "prompt": _optional_text(row, "prompt", location),
        "type": _optional_text(row, "type", location),
    }


def iter_valid_rows(
    files: Iterable[str],
    validate: Callable[[Any, str], dict[str, Any]],
    on_bad_row: OnBadRow = "error",
    report: BadRowReport | None = None,
) -> Iterator[dict[str, Any]]:
    """Validated rows of every file; each row also carries ``source`` (the file) and ``line``."""
    check_on_bad_row(on_bad_row)
    for path in files:
        for number, raw in iter_jsonl_lines(path):
            location = f"{path}:{number}"
            try:
                row = validate(parse_jsonl_line(raw, location), location)
            except DataFormatError as err:
                if on_bad_row == "error":
                    raise
                if report is None:
                    raise ValueError("on_bad_row='skip' needs a BadRowReport") from err
                report.add(err)
                continue
            yield {**row, "source": path, "line": number}
