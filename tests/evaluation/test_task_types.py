"""One record per task type: the registry is the only list of types, and every view of it
(``TASK_TYPES``, ``DEFAULT_MAIN_SCORES``, ``TABLE2_LABELS``) and every step (local loading,
scoring, the main-score check) reads a type's record."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ctem.evaluation.report import TABLE2_LABELS
from ctem.evaluation.runner import EvalSettings, evaluate_task, score_names
from ctem.evaluation.task_type import TaskType, find_task_type, register, task_types
from ctem.evaluation.tasks import DEFAULT_MAIN_SCORES, TASK_TYPES, load_local_tasks
from tests.evaluation.eval_helpers import bag_of_chars, make_tiny_tasks


def test_the_views_are_the_registry_in_table2_order() -> None:
    records = task_types()
    assert TASK_TYPES == ("Retrieval", "STS", "PairClassification", "Classification", "Reranking", "Clustering")
    assert TASK_TYPES == tuple(t.name for t in records)
    assert DEFAULT_MAIN_SCORES == {t.name: t.main_score for t in records}
    assert list(TABLE2_LABELS.values()) == ["Retrieval", "STS", "Pair CLF", "CLF", "Re-rank", "Cluster"]
    settings = EvalSettings()
    for record in records:  # the default main score is one of the type's scores
        assert record.main_score in record.score_names(settings)
    assert find_task_type("Nope") is None


def test_a_task_is_loaded_and_scored_by_its_types_record(tmp_path: Path) -> None:
    tasks = load_local_tasks(make_tiny_tasks(tmp_path))
    settings = EvalSettings()
    for task in tasks:
        record = find_task_type(task.type)
        assert isinstance(task.data, record.data_class)
        assert set(evaluate_task(bag_of_chars, task, settings)) == score_names(task.type, settings)


def test_a_type_is_registered_once() -> None:
    sts = find_task_type("STS")
    with pytest.raises(ValueError, match="registered twice"):
        register(sts)
    with pytest.raises(ValueError, match="column 1 is taken"):
        register(replace(sts, name="STS2"))
    assert isinstance(sts, TaskType) and len(task_types()) == 6
