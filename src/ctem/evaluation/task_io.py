"""Reading task rows: the errors, the row check and the helpers every task type's loaders share.

Rows are read like training data, with ``ctem.rows.iter_valid_rows``. Bad rows raise
:class:`TaskDataError` (a :class:`TaskFormatError` that is also a
``ctem.rows.DataFormatError`` record) naming file, line and field; so does data a task
cannot be scored on, naming the file.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ctem.errors import CtemInputError
from ctem.evaluation.data import SentencePairs
from ctem.rows import DataFormatError, RowLocation, iter_valid_rows

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec

# Accepted JSON types of a row field.
STR = (str,)
NUM = (int, float)
LABEL = (str, int)
STR_LIST = (list,)


class TaskFormatError(CtemInputError, ValueError):
    """A task file or row does not follow the task format."""


class TaskDataError(DataFormatError, TaskFormatError):
    """A bad row or field of a task file, or data a task cannot be scored on: a
    ``DataFormatError`` record (``file``, ``line``, ``field``, ``message``)."""


def check_row(row: Any, location: RowLocation, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """``row`` when it is a JSON object whose ``fields`` have the given types, else ``TaskDataError``."""
    if not isinstance(row, dict):
        raise TaskDataError(location, None, f"expected a JSON object, got {type(row).__name__}")
    for name, types in fields.items():
        if name not in row:
            raise TaskDataError(location, name, "missing")
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise TaskDataError(location, name, f"expected {expected}, got {type(value).__name__}")
        if types == STR_LIST and not all(isinstance(v, str) for v in value):
            raise TaskDataError(location, name, "expected a list of strings")
    return row


def _checked_row(value: Any, location: RowLocation, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    return {"row": check_row(value, location, fields)}


def read_rows(path: Path, fields: dict[str, tuple[type, ...]]) -> list[tuple[RowLocation, dict[str, Any]]]:
    """``(location, row)`` for each non-blank JSON line, checked against ``fields``; read
    with ``ctem.rows.iter_valid_rows`` as training data is (bad UTF-8, non-finite numbers and
    lone surrogates are errors). A bad row raises ``TaskDataError`` naming file:line:field;
    a file without rows is an error too."""
    if not path.is_file():
        raise TaskDataError(str(path), None, "file not found")
    try:
        rows = [
            (RowLocation(row["source"], row["line"]), row["row"])
            for row in iter_valid_rows([str(path)], partial(_checked_row, fields=fields))
        ]
    except DataFormatError as err:
        raise TaskDataError.from_record(err.record()) from None
    if not rows:
        raise TaskDataError(str(path), None, "no rows (the file is empty)")
    return rows


def require(ok: bool, path: Path, field: str | None, problem: str) -> None:
    """``TaskDataError`` naming ``path`` (and ``field``) unless ``ok``: data a task cannot be scored on."""
    if not ok:
        raise TaskDataError(str(path), field, problem)


def two_labels(path: Path, labels: Sequence[Any], needs: str) -> None:
    """``TaskDataError`` naming ``path`` when ``labels`` hold a single value (``needs``: what needs two)."""
    distinct = set(labels)
    require(len(distinct) >= 2, path, "label", f"every row has label {next(iter(distinct))!r}; {needs} needs at least 2 labels")


def labelled(path: Path) -> tuple[list[str], list[Any]]:
    """Texts and labels of a file of ``text``, ``label`` rows."""
    texts, labels = [], []
    for _, row in read_rows(path, {"text": STR, "label": LABEL}):
        texts.append(row["text"])
        labels.append(row["label"])
    return texts, labels


def read_pairs(path: Path, score_field: str, check: Callable[[Any], bool], expect: str) -> SentencePairs:
    """Sentence pairs of a file of ``sentence1``, ``sentence2``, ``score_field`` rows: a
    ``score`` must vary (a correlation needs it), a ``label`` must take two values."""
    s1, s2, scores = [], [], []
    for location, row in read_rows(path, {"sentence1": STR, "sentence2": STR, score_field: NUM}):
        if not check(row[score_field]):
            raise TaskDataError(location, score_field, f"expected {expect}, got {row[score_field]!r}")
        s1.append(row["sentence1"])
        s2.append(row["sentence2"])
        scores.append(row[score_field])
    if score_field == "score":
        require(len(set(scores)) >= 2, path, "score", f"all {len(scores)} scores are {scores[0]!r}; a correlation with constant scores is undefined")
    else:
        two_labels(path, scores, "average precision")
    return SentencePairs(s1, s2, scores)


def hub_columns(rows: Any, spec: "HubTaskSpec", wanted: list[str]) -> dict[str, list[Any]]:
    """Columns of a hub split by ctem name (``spec.columns`` renames hub columns); unwraps
    MTEB's v1 one-row-of-lists layout."""
    renamed = {spec.columns.get(col, col): col for col in rows.column_names}
    missing = [w for w in wanted if w not in renamed]
    if missing:
        raise TaskFormatError(f"{spec.hub_id} ({spec.split}): columns {missing} missing; has {rows.column_names}")
    out = {w: list(rows[renamed[w]]) for w in wanted}
    if len(rows) == 1 and isinstance(out[wanted[0]][0], list):
        out = {w: list(v[0]) for w, v in out.items()}
    return out
