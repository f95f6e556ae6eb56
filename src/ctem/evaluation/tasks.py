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

Bad rows raise :class:`TaskFormatError` naming file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ctem.evaluation.data import (
    ClassificationData,
    ClusteringData,
    RerankingData,
    RetrievalData,
    SentencePairs,
    TaskData,
)

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


class TaskFormatError(ValueError):
    """A task file or row does not follow the task format."""


@dataclass
class Task:
    """One evaluation task: its data and how it is scored.

    ``params`` holds per-task evaluator settings that override the run's defaults
    (for example ``n_experiments`` for a classification task).
    """

    name: str
    type: str
    main_score: str
    data: TaskData
    source: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LocalTaskInfo:
    """``task.json`` of a local folder, read without loading the rows."""

    name: str
    type: str
    main_score: str
    folder: Path
    params: dict[str, Any]


# --------------------------------------------------------------------------- rows
_STR = (str,)
_NUM = (int, float)
_LABEL = (str, int)
_STR_LIST = (list,)


def _check(path: Path, line: int, row: Any, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise TaskFormatError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
    for name, types in fields.items():
        if name not in row:
            raise TaskFormatError(f"{path}:{line}: field '{name}': missing")
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise TaskFormatError(
                f"{path}:{line}: field '{name}': expected {expected}, got {type(value).__name__}"
            )
        if types == _STR_LIST and not all(isinstance(v, str) for v in value):
            raise TaskFormatError(f"{path}:{line}: field '{name}': expected a list of strings")
    return row


def read_rows(path: Path, fields: dict[str, tuple[type, ...]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, row)`` for each non-blank JSON line, checked against ``fields``."""
    if not path.is_file():
        raise TaskFormatError(f"{path}: file not found")
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskFormatError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
            yield line_no, _check(path, line_no, row, fields)


def _pairs(path: Path, score_field: str, check: Callable[[Any], bool], expect: str) -> SentencePairs:
    s1, s2, scores = [], [], []
    for line, row in read_rows(path, {"sentence1": _STR, "sentence2": _STR, score_field: _NUM}):
        if not check(row[score_field]):
            raise TaskFormatError(f"{path}:{line}: field '{score_field}': expected {expect}, got {row[score_field]!r}")
        s1.append(row["sentence1"])
        s2.append(row["sentence2"])
        scores.append(row[score_field])
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
    for line, row in read_rows(corpus_path, {"id": _STR, "text": _STR}):
        if row["id"] in seen:
            raise TaskFormatError(f"{corpus_path}:{line}: field 'id': duplicate id {row['id']!r}")
        title = row.get("title", "")
        if not isinstance(title, str):
            raise TaskFormatError(f"{corpus_path}:{line}: field 'title': expected str, got {type(title).__name__}")
        seen.add(row["id"])
        corpus_ids.append(row["id"])
        corpus_texts.append(row["text"])
        titles.append(title)
    query_ids, query_texts = [], []
    for _, row in read_rows(folder / "queries.jsonl", {"id": _STR, "text": _STR}):
        query_ids.append(row["id"])
        query_texts.append(row["text"])
    known_queries = set(query_ids)
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = folder / "qrels.jsonl"
    for line, row in read_rows(qrels_path, {"qid": _STR, "pid": _STR, "score": _NUM}):
        if row["qid"] not in known_queries:
            raise TaskFormatError(f"{qrels_path}:{line}: field 'qid': unknown query id {row['qid']!r}")
        if row["pid"] not in seen:
            raise TaskFormatError(f"{qrels_path}:{line}: field 'pid': unknown corpus id {row['pid']!r}")
        if float(row["score"]) != int(row["score"]):
            raise TaskFormatError(f"{qrels_path}:{line}: field 'score': expected an integer grade, got {row['score']!r}")
        qrels.setdefault(row["qid"], {})[row["pid"]] = int(row["score"])
    return RetrievalData(corpus_ids, corpus_texts, query_ids, query_texts, qrels, titles)


def _reranking(path: Path) -> RerankingData:
    queries, positives, negatives = [], [], []
    for _, row in read_rows(path, {"query": _STR, "positive": _STR_LIST, "negative": _STR_LIST}):
        queries.append(row["query"])
        positives.append(row["positive"])
        negatives.append(row["negative"])
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
        return ClassificationData(train_texts, train_labels, test_texts, test_labels)
    if task_type == "Clustering":
        return ClusteringData([_labelled(test)])
    if task_type == "Retrieval":
        return _retrieval(folder)
    if task_type == "Reranking":
        return _reranking(test)
    raise TaskFormatError(f"{folder / TASK_FILE}: field 'type': unknown task type {task_type!r}; expected one of {TASK_TYPES}")


# --------------------------------------------------------------------------- folders
_META_KEYS = {"name", "type", "main_score", "category", "language", "source", "license", "description", "rows"}


def read_task_info(folder: str | Path) -> LocalTaskInfo:
    """Parse and check ``folder/task.json``."""
    folder = Path(folder)
    path = folder / TASK_FILE
    if not path.is_file():
        raise TaskFormatError(f"{path}: file not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TaskFormatError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    _check(path, 1, meta, {"name": _STR, "type": _STR})
    if meta["type"] not in TASK_TYPES:
        raise TaskFormatError(f"{path}:1: field 'type': unknown task type {meta['type']!r}; expected one of {TASK_TYPES}")
    main_score = meta.get("main_score", DEFAULT_MAIN_SCORES[meta["type"]])
    params = {k: v for k, v in meta.items() if k not in _META_KEYS}
    return LocalTaskInfo(meta["name"], meta["type"], main_score, folder, params)


def load_local_task(folder: str | Path) -> Task:
    """Load one local task folder."""
    info = read_task_info(folder)
    data = load_task_data(info.type, info.folder)
    return Task(info.name, info.type, info.main_score, data, str(info.folder), info.params)


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
    if types:
        unknown = sorted(set(types) - set(TASK_TYPES))
        if unknown:
            raise ValueError(f"unknown task types {unknown}; expected some of {list(TASK_TYPES)}")
        infos = [i for i in infos if i.type in types]
    if names:
        by_name = {i.name: i for i in infos}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"tasks {missing} not found under {root} (with the type filter); available: {sorted(by_name)}")
        infos = [by_name[n] for n in names]
    return sorted(infos, key=lambda i: (TASK_TYPES.index(i.type), i.name))


def load_local_tasks(
    tasks_dir: str | Path,
    names: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
) -> list[Task]:
    """Load the selected task folders under ``tasks_dir``."""
    return [load_local_task(info.folder) for info in select_local_tasks(tasks_dir, names, types)]

