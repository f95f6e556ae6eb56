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

Each type is a :class:`~ctem.evaluation.task_type.TaskType` record registered from its
own module under ``ctem.evaluation.task_types``: its loader reads and checks the rows
(``ctem.evaluation.task_io``). Bad rows raise :class:`TaskDataError` (a
:class:`TaskFormatError` that is also a ``ctem.rows.DataFormatError`` record) naming file,
line and field; so does data a task cannot be scored on, naming the file: an empty file, STS
scores that are all equal, a single label in a classification, clustering or
pair-classification file, retrieval judgements without a relevant passage, reranking rows
without a positive and a negative; and data that would be scored wrongly: a repeated query
id, a (query, passage) pair graded twice with different grades.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ctem.evaluation.data import TaskData
from ctem.evaluation.task_io import STR, TaskDataError, TaskFormatError, check_row, read_rows
from ctem.evaluation.task_type import find_task_type, task_types
from ctem.languages import mteb_language_tag
from ctem.rows import RowLocation
from ctem.files import OutputPathError, check_file_name

__all__ = [
    "DEFAULT_MAIN_SCORES", "TASK_FILE", "TASK_TYPES", "LocalTaskInfo", "Task", "TaskDataError", "TaskFormatError",
    "check_unique_names", "load_local_task", "load_local_tasks", "load_task_data", "read_rows", "read_task_info",
    "select_local_tasks",
]

# Views of the task-type registry: the types in the column order of the C-Pack paper's
# Table 2, and the default main score of each.
TASK_TYPES: tuple[str, ...] = tuple(t.name for t in task_types())
DEFAULT_MAIN_SCORES: dict[str, str] = {t.name: t.main_score for t in task_types()}
TASK_FILE = "task.json"


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


def load_task_data(task_type: str, folder: Path) -> TaskData:
    """Read and check the rows of a local task folder of type ``task_type``."""
    record = find_task_type(task_type)
    if record is None:
        raise TaskDataError(str(folder / TASK_FILE), "type", f"unknown task type {task_type!r}; expected one of {TASK_TYPES}")
    return record.load_local(folder)


# --------------------------------------------------------------------------- folders
_META_KEYS = {"name", "type", "main_score", "category", "language", "source", "license", "description", "rows"}


def read_task_info(folder: str | Path) -> LocalTaskInfo:
    """Parse and check ``folder/task.json``."""
    folder = Path(folder)
    path = folder / TASK_FILE
    if not path.is_file():
        raise TaskDataError(str(path), None, "file not found")
    try:
        text = path.read_text(encoding="utf-8")
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaskDataError(RowLocation(str(path), err.lineno), None, f"invalid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise TaskDataError(str(path), None, f"invalid UTF-8 ({err.reason} at byte {err.start})") from None
    location = RowLocation(str(path), 1)
    check_row(meta, location, {"name": STR, "type": STR})
    try:
        check_file_name(meta["name"], "task name")  # results are written to <output_dir>/<name>.json
    except OutputPathError as err:
        raise TaskDataError(location, "name", str(err)) from None
    if meta["type"] not in TASK_TYPES:
        raise TaskDataError(location, "type", f"unknown task type {meta['type']!r}; expected one of {TASK_TYPES}")
    main_score = meta.get("main_score", DEFAULT_MAIN_SCORES[meta["type"]])
    params = {k: v for k, v in meta.items() if k not in _META_KEYS}
    return LocalTaskInfo(meta["name"], meta["type"], main_score, folder, params, _language(meta, path, text))


def _language(meta: dict[str, Any], path: Path, text: str) -> str | None:
    """The ``language`` of ``task.json`` (``text``: the file as read; checked: a code mteb's
    results can be tagged with)."""
    language = meta.get("language")
    if language is None:
        return None
    lines = text.splitlines()
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

