"""Classification: ``train.jsonl`` and ``test.jsonl`` rows of text, label; scored by
``evaluators.classification`` (main: ``accuracy``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctem.encoding import EncodeFn
from ctem.evaluation.data import ClassificationData
from ctem.evaluation.evaluators.classification import evaluate_classification
from ctem.evaluation.task_io import hub_columns, labelled, two_labels
from ctem.evaluation.task_type import HubFetch, TaskType, register, task_param

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec
    from ctem.evaluation.runner import EvalSettings
    from ctem.evaluation.tasks import Task


def load_local(folder: Path) -> ClassificationData:
    """Training and evaluation split; the training split needs two labels."""
    train_texts, train_labels = labelled(folder / "train.jsonl")
    test_texts, test_labels = labelled(folder / "test.jsonl")
    two_labels(folder / "train.jsonl", train_labels, "a classifier")
    return ClassificationData(train_texts, train_labels, test_texts, test_labels)


def load_hub(spec: "HubTaskSpec", fetch: HubFetch) -> ClassificationData:
    """``spec.train_split`` trains the classifier, ``spec.split`` is evaluated."""
    train = hub_columns(fetch(spec.hub_id, spec.subset, spec.train_split), spec, ["text", "label"])
    test = hub_columns(fetch(spec.hub_id, spec.subset, spec.split), spec, ["text", "label"])
    return ClassificationData(train["text"], train["label"], test["text"], test["label"])


def evaluate(encode: EncodeFn, task: "Task", settings: "EvalSettings", instruction: str | None) -> dict[str, float]:
    """MTEB's few-shot logistic-regression protocol; the task's ``params`` override the settings."""
    return evaluate_classification(
        encode,
        task.data,
        n_experiments=task_param(task, settings, "n_experiments"),
        samples_per_label=task_param(task, settings, "samples_per_label"),
        max_iter=task_param(task, settings, "max_iter"),
        seed=task_param(task, settings, "seed"),
        instruction=instruction,
    )


CLASSIFICATION = register(
    TaskType(
        name="Classification",
        column=3,
        table_label="CLF",
        main_score="accuracy",
        data_class=ClassificationData,
        load_local=load_local,
        load_hub=load_hub,
        evaluate=evaluate,
        score_names=lambda settings: frozenset({"accuracy", "f1", "f1_weighted", "accuracy_std"}),
    )
)
