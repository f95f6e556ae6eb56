"""Evaluation tasks: what a task is, and loading local task folders.

A local task folder holds ``task.json`` (``name``, ``type``, ``main_score``, ...) and
JSON-lines files by type (see ``../shared/data/README.md``):

==================  ============================================  ==========================
type                files                                         row fields
==================  ============================================  ==========================
STS                 test.jsonl                                    sentence1, sentence2, score
PairClassification  test.jsonl                                    sentence1, sentence2, label
Classification      train.jsonl, test.jsonl                       text, label
Clustering          test.jsonl                                    text, label
Retrieval           corpus.jsonl, queries.jsonl, qrels.jsonl      id, text[, title] / id, text /
                                                                  qid, pid, score
Reranking           test.jsonl                                    query, positive, negative
==================  ============================================  ==========================

Rows are read like training data, with ``ctem.rows.iter_valid_rows``. Bad rows raise
:class:`TaskDataError` (a :class:`TaskFormatError` that is also a
``ctem.rows.DataFormatError`` record) naming file, line and field; so does data a task
cannot be scored on, naming the file: an empty file, STS scores that are all equal, a
single label in a classification, clustering or pair-classification file, retrieval
judgements without a relevant passage, reranking rows without a positive and a negative;
and data that would be scored wrongly: a repeated query id, a (query, passage) pair graded
twice with different grades.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ctem.evaluation.data import (
    ClassificationData,
    ClusteringData,
    RerankingData,
    RetrievalData,
    SentencePairs,
    TaskData,
)
from ctem.errors import CtemInputError
from ctem.languages import mteb_language_tag
from ctem.rows import DataFormatError, RowLocation, iter_valid_rows
from ctem.files import OutputPathError, check_file_name

# Task types in the column order of the C-Pack paper's Table 2.
TASK_TYPES: tuple[str, ...] = (
    "Retrieval",
    "STS",
    "PairClassification",
    "Classification",
    "Reranking",
    "Clustering",
)
DEFAULT_MAIN_SCORES: dict[str, str] = {
    "Retrieval": "ndcg_at_10",
    "STS": "cosine_spearman",
    "PairClassification": "ap",
    "Classification": "accuracy",
    "Reranking": "map",
    "Clustering": "v_measure",
}
TASK_FILE = "task.json"


class TaskFormatError(CtemInputError, ValueError):
    """A task file or row does not follow the task format."""


class TaskDataError(DataFormatError, TaskFormatError):
    """A bad row or field of a task file, or data a task cannot be scored on: a
    ``DataFormatError`` record (``file``, ``line``, ``field``, ``message``)."""


@dataclass
class Task:
    """One evaluation task: its data and how it is scored.

    ``params`` holds per-task evaluator settings that override the run's defaults
    (for example ``n_experiments`` for a classification task); ``language`` is the task's
    language (an ISO 639-1 code or an mteb tag, see ``ctem.languages``; ``None``: not known).
    """

    name: str
    type: str
    main_score: str
    data: TaskData
    source: str
    params: dict[str, Any] = field(default_factory=dict)
    language: str | None = None


@dataclass
class LocalTaskInfo:
    """``task.json`` of a local folder, read without loading the rows."""

    name: str
    type: str
    main_score: str
    folder: Path
    params: dict[str, Any]
    language: str | None = None


# --------------------------------------------------------------------------- rows
_STR = (str,)
_NUM = (int, float)
_LABEL = (str, int)
_STR_LIST = (list,)


def _check(row: Any, location: RowLocation, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise TaskDataError(location, None, f"expected a JSON object, got {type(row).__name__}")
    for name, types in fields.items():
        if name not in row:
            raise TaskDataError(location, name, "missing")
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise TaskDataError(location, name, f"expected {expected}, got {type(value).__name__}")
        if types == _STR_LIST and not all(isinstance(v, str) for v in value):
            raise TaskDataError(location, name, "expected a list of strings")
    return row


def _checked_row(value: Any, location: RowLocation, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    return {"row": _check(value, location, fields)}


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


def _require(ok: bool, path: Path, field: str | None, problem: str) -> None:
    """``TaskDataError`` naming ``path`` (and ``field``) unless ``ok``: data a task cannot be scored on."""
    if not ok:
        raise TaskDataError(str(path), field, problem)


def _two_labels(path: Path, labels: Sequence[Any], needs: str) -> None:
    distinct = set(labels)
    _require(len(distinct) >= 2, path, "label", f"every row has label {next(iter(distinct))!r}; {needs} needs at least 2 labels")


def _pairs(path: Path, score_field: str, check: Callable[[Any], bool], expect: str) -> SentencePairs:
    s1, s2, scores = [], [], []
    for location, row in read_rows(path, {"sentence1": _STR, "sentence2": _STR, score_field: _NUM}):
        if not check(row[score_field]):
            raise TaskDataError(location, score_field, f"expected {expect}, got {row[score_field]!r}")
        s1.append(row["sentence1"])
        s2.append(row["sentence2"])
        scores.append(row[score_field])
    if score_field == "score":
        _require(len(set(scores)) >= 2, path, "score", f"all {len(scores)} scores are {scores[0]!r}; a correlation with constant scores is undefined")
    else:
        _two_labels(path, scores, "average precision")
    return SentencePairs(s1, s2, scores)


def _labelled(path: Path) -> tuple[list[str], list[Any]]:
    texts, labels = [], []
    for _, row in read_rows(path, {"text": _STR, "label": _LABEL}):
        texts.append(row["text"])
        labels.append(row["label"])
    return texts, labels


def _retrieval(folder: Path) -> RetrievalData:
    corpus_ids, corpus_texts, titles, seen = [], [], [], set()
    corpus_path = folder / "corpus.jsonl"
    for location, row in read_rows(corpus_path, {"id": _STR, "text": _STR}):
        if row["id"] in seen:
            raise TaskDataError(location, "id", f"duplicate id {row['id']!r}")
        title = row.get("title", "")
        if not isinstance(title, str):
            raise TaskDataError(location, "title", f"expected str, got {type(title).__name__}")
        seen.add(row["id"])
        corpus_ids.append(row["id"])
        corpus_texts.append(row["text"])
        titles.append(title)
    query_ids, query_texts, known_queries = [], [], set()
    for location, row in read_rows(folder / "queries.jsonl", {"id": _STR, "text": _STR}):
        if row["id"] in known_queries:  # a repeated query would be scored once per copy
            raise TaskDataError(location, "id", f"duplicate id {row['id']!r}")
        known_queries.add(row["id"])
        query_ids.append(row["id"])
        query_texts.append(row["text"])
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = folder / "qrels.jsonl"
    for location, row in read_rows(qrels_path, {"qid": _STR, "pid": _STR, "score": _NUM}):
        if row["qid"] not in known_queries:
            raise TaskDataError(location, "qid", f"unknown query id {row['qid']!r}")
        if row["pid"] not in seen:
            raise TaskDataError(location, "pid", f"unknown corpus id {row['pid']!r}")
        if float(row["score"]) != int(row["score"]):
            raise TaskDataError(location, "score", f"expected an integer grade, got {row['score']!r}")
        judged = qrels.setdefault(row["qid"], {})
        if judged.get(row["pid"], int(row["score"])) != int(row["score"]):
            raise TaskDataError(
                location, "score", f"({row['qid']!r}, {row['pid']!r}) is graded {judged[row['pid']]} on an earlier line and {row['score']!r} here"
            )
        judged[row["pid"]] = int(row["score"])
    _require(any(g > 0 for judged in qrels.values() for g in judged.values()), qrels_path, "score", "no judgement above 0, so no query has a relevant passage")
    return RetrievalData(corpus_ids, corpus_texts, query_ids, query_texts, qrels, titles)


def _reranking(path: Path) -> RerankingData:
    queries, positives, negatives = [], [], []
    for _, row in read_rows(path, {"query": _STR, "positive": _STR_LIST, "negative": _STR_LIST}):
        queries.append(row["query"])
        positives.append(row["positive"])
        negatives.append(row["negative"])
    _require(any(p and n for p, n in zip(positives, negatives)), path, None, "no row has both a positive and a negative")
    return RerankingData(queries, positives, negatives)


def load_task_data(task_type: str, folder: Path) -> TaskData:
    """Read and check the rows of a local task folder of type ``task_type``."""
    test = folder / "test.jsonl"
    if task_type == "STS":
        return _pairs(test, "score", lambda v: True, "a number")
    if task_type == "PairClassification":
        return _pairs(test, "label", lambda v: v in (0, 1), "0 or 1")
    if task_type == "Classification":
        train_texts, train_labels = _labelled(folder / "train.jsonl")
        test_texts, test_labels = _labelled(test)
        _two_labels(folder / "train.jsonl", train_labels, "a classifier")
        return ClassificationData(train_texts, train_labels, test_texts, test_labels)
    if task_type == "Clustering":
        texts, labels = _labelled(test)
        _two_labels(test, labels, "clustering")
        return ClusteringData([(texts, labels)])
    if task_type == "Retrieval":
        return _retrieval(folder)
    if task_type == "Reranking":
        return _reranking(test)
    raise TaskDataError(str(folder / TASK_FILE), "type", f"unknown task type {task_type!r}; expected one of {TASK_TYPES}")


# --------------------------------------------------------------------------- folders
_META_KEYS = {"name", "type", "main_score", "category", "language", "source", "license", "description", "rows"}


def read_task_info(folder: str | Path) -> LocalTaskInfo:
    """Parse and check ``folder/task.json``."""
    folder = Path(folder)
    path = folder / TASK_FILE
    if not path.is_file():
        raise TaskDataError(str(path), None, "file not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TaskDataError(RowLocation(str(path), err.lineno), None, f"invalid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise TaskDataError(str(path), None, f"invalid UTF-8 ({err.reason} at byte {err.start})") from None
    location = RowLocation(str(path), 1)
    _check(meta, location, {"name": _STR, "type": _STR})
    try:
        check_file_name(meta["name"], "task name")  # results are written to <output_dir>/<name>.json
    except OutputPathError as err:
        raise TaskDataError(location, "name", str(err)) from None
    if meta["type"] not in TASK_TYPES:
        raise TaskDataError(location, "type", f"unknown task type {meta['type']!r}; expected one of {TASK_TYPES}")
    main_score = meta.get("main_score", DEFAULT_MAIN_SCORES[meta["type"]])
    params = {k: v for k, v in meta.items() if k not in _META_KEYS}
    return LocalTaskInfo(meta["name"], meta["type"], main_score, folder, params, _language(meta, path))


def _language(meta: dict[str, Any], path: Path) -> str | None:
    """The ``language`` of ``task.json`` (checked: a code mteb's results can be tagged with)."""
    language = meta.get("language")
    if language is None:
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    location = RowLocation(str(path), next((i for i, line in enumerate(lines, 1) if '"language"' in line), 1))
    if not isinstance(language, str):
        raise TaskDataError(location, "language", f"expected str, got {type(language).__name__}")
    try:
        mteb_language_tag(language)
    except ValueError as err:
        raise TaskDataError(location, "language", str(err)) from None
    return language


def load_local_task(folder: str | Path) -> Task:
    """Load one local task folder."""
    info = read_task_info(folder)
    data = load_task_data(info.type, info.folder)
    return Task(info.name, info.type, info.main_score, data, str(info.folder), info.params, info.language)


def select_local_tasks(
    tasks_dir: str | Path,
    names: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
) -> list[LocalTaskInfo]:
    """Task folders under ``tasks_dir`` (sorted by type, then name), filtered by name/type.

    Raises when a requested name or type matches nothing.
    """
    root = Path(tasks_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"tasks_dir {root} is not a directory")
    infos = [read_task_info(p) for p in sorted(root.iterdir()) if (p / TASK_FILE).is_file()]
    if not infos:
        raise FileNotFoundError(f"no task folders (with {TASK_FILE}) under {root}")
    check_unique_names([(i.name, str(i.folder / TASK_FILE)) for i in infos])
    if types:
        unknown = sorted(set(types) - set(TASK_TYPES))
        if unknown:
            raise TaskFormatError(f"unknown task types {unknown}; expected some of {list(TASK_TYPES)}")
        infos = [i for i in infos if i.type in types]
    if names:
        by_name = {i.name: i for i in infos}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise TaskFormatError(f"tasks {missing} not found under {root} (with the type filter); available: {sorted(by_name)}")
        infos = [by_name[n] for n in names]
    return sorted(infos, key=lambda i: (TASK_TYPES.index(i.type), i.name))


def check_unique_names(named: Sequence[tuple[str, str]]) -> None:
    """``TaskFormatError`` when two (name, source) pairs share a name: their results would
    overwrite each other. Names differing only in case count as equal (they are one file on
    case-insensitive file systems)."""
    seen: dict[str, str] = {}
    for name, source in named:
        key = name.casefold()
        if key in seen and seen[key] == source:
            raise TaskFormatError(f"task {name!r} is selected twice; list each task once")
        if key in seen:
            raise TaskDataError(source, "name", f"task name {name!r} is also used by {seen[key]}; task names must be unique")
        seen[key] = source


def load_local_tasks(
    tasks_dir: str | Path,
    names: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
) -> list[Task]:
    """Load the selected task folders under ``tasks_dir``."""
    return [load_local_task(info.folder) for info in select_local_tasks(tasks_dir, names, types)]

