"""One record per evaluation task type, and the registry of them.

A task type is everything ctem knows about one kind of task: its data container, how a
local folder and a hub dataset become that container, how it is scored, which scores it
gives, its main score and its Table 2 column. Each type registers its record from its own
module under ``ctem.evaluation.task_types``; every module there is imported when the
registry is first read, so adding a type is one new file there (plus its tests).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ctem.encoding import EncodeFn

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec
    from ctem.evaluation.runner import EvalSettings
    from ctem.evaluation.tasks import Task

HubFetch = Callable[[str, "str | None", str], Any]
"""``fetch(hub_id, subset, split) -> rows`` of one hub dataset split (``datasets.Dataset``)."""


@dataclass(frozen=True)
class TaskType:
    """What ctem knows about one evaluation task type.

    Attributes:
        name: the type as ``task.json`` and the settings spell it (``"Retrieval"``).
        column: its position among the types, the column order of the C-Pack paper's Table 2.
        table_label: its column header in the summary table (``"Re-rank"``).
        main_score: the default main score of its tasks.
        data_class: the container its loaders build and its evaluator reads.
        load_local: ``load_local(folder) -> data``: read and check a local task folder.
        load_hub: ``load_hub(spec, fetch) -> data``: build the container from hub splits.
        evaluate: ``evaluate(encode, task, settings, instruction) -> scores``.
        score_names: ``score_names(settings)``: the scores ``evaluate`` gives (the names a
            ``main_score`` may take).
        score_settings: ``score_settings(settings)``: the settings those names depend on,
            as a message fragment (``" with mrr_k=10"``), or ``""``.
    """

    name: str
    column: int
    table_label: str
    main_score: str
    data_class: type
    load_local: Callable[[Path], Any]
    load_hub: Callable[["HubTaskSpec", HubFetch], Any]
    evaluate: Callable[[EncodeFn, "Task", "EvalSettings", "str | None"], dict[str, float]]
    score_names: Callable[["EvalSettings"], frozenset[str]]
    score_settings: Callable[["EvalSettings"], str] = lambda settings: ""


_REGISTRY: dict[str, TaskType] = {}
_DISCOVERED = False


def register(task_type: TaskType) -> TaskType:
    """Add ``task_type`` to the registry (from its own module); a name or column taken twice is an error."""
    if task_type.name in _REGISTRY:
        raise ValueError(f"task type {task_type.name!r} is registered twice")
    if any(t.column == task_type.column for t in _REGISTRY.values()):
        raise ValueError(f"task type {task_type.name!r}: column {task_type.column} is taken")
    _REGISTRY[task_type.name] = task_type
    return task_type


def task_types() -> tuple[TaskType, ...]:
    """Every registered type, in column order (the modules of ``ctem.evaluation.task_types``
    are imported on the first call)."""
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        package = importlib.import_module("ctem.evaluation.task_types")
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    return tuple(sorted(_REGISTRY.values(), key=lambda t: t.column))


def find_task_type(name: str) -> TaskType | None:
    """The record of type ``name``, or ``None`` when no type has that name."""
    return {t.name: t for t in task_types()}.get(name)


def task_param(task: "Task", settings: "EvalSettings", name: str) -> Any:
    """An evaluator setting for ``task``: its ``params`` entry, else the run's setting."""
    return task.params.get(name, getattr(settings, name))
