"""Clustering: ``test.jsonl`` rows of text, label; scored by ``evaluators.clustering``
(main: ``v_measure``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctem.encoding import EncodeFn
from ctem.evaluation.data import ClusteringData
from ctem.evaluation.evaluators.clustering import evaluate_clustering
from ctem.evaluation.task_io import labelled, two_labels
from ctem.evaluation.task_type import HubFetch, TaskType, register, task_param

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec
    from ctem.evaluation.runner import EvalSettings
    from ctem.evaluation.tasks import Task


def load_local(folder: Path) -> ClusteringData:
    """One set: the texts of ``test.jsonl``; they need two labels."""
    test = folder / "test.jsonl"
    texts, labels = labelled(test)
    two_labels(test, labels, "clustering")
    return ClusteringData([(texts, labels)])


def load_hub(spec: "HubTaskSpec", fetch: HubFetch) -> ClusteringData:
    """One set per row of the evaluated split (``sentences``, ``labels``)."""
    rows = fetch(spec.hub_id, spec.subset, spec.split)
    return ClusteringData([(list(r["sentences"]), list(r["labels"])) for r in rows])


def evaluate(encode: EncodeFn, task: "Task", settings: "EvalSettings", instruction: str | None) -> dict[str, float]:
    """Mean V-measure of mini-batch k-means over the sets; the task's ``params`` override the settings."""
    return evaluate_clustering(encode, task.data, task_param(task, settings, "clustering_batch_size"), task_param(task, settings, "seed"), instruction)


CLUSTERING = register(
    TaskType(
        name="Clustering",
        column=5,
        table_label="Cluster",
        main_score="v_measure",
        data_class=ClusteringData,
        load_local=load_local,
        load_hub=load_hub,
        evaluate=evaluate,
        score_names=lambda settings: frozenset({"v_measure", "v_measure_std"}),
    )
)
