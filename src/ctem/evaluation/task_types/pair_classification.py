"""Pair classification: ``test.jsonl`` rows of sentence1, sentence2, label (0 or 1);
scored by ``evaluators.pair_classification`` (main: ``ap``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctem.encoding import EncodeFn
from ctem.evaluation.data import SentencePairs
from ctem.evaluation.evaluators.pair_classification import THRESHOLD_METRICS, evaluate_pair_classification
from ctem.evaluation.task_io import hub_columns, read_pairs
from ctem.evaluation.task_type import HubFetch, TaskType, register

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec
    from ctem.evaluation.runner import EvalSettings
    from ctem.evaluation.tasks import Task


def load_local(folder: Path) -> SentencePairs:
    """The pairs of ``test.jsonl``; both labels must occur."""
    return read_pairs(folder / "test.jsonl", "label", lambda v: v in (0, 1), "0 or 1")


def load_hub(spec: "HubTaskSpec", fetch: HubFetch) -> SentencePairs:
    """The pairs of the evaluated split (labels as ``scores``)."""
    cols = hub_columns(fetch(spec.hub_id, spec.subset, spec.split), spec, ["sentence1", "sentence2", "label"])
    return SentencePairs(cols["sentence1"], cols["sentence2"], cols["label"])


def evaluate(encode: EncodeFn, task: "Task", settings: "EvalSettings", instruction: str | None) -> dict[str, float]:
    """Average precision and best-threshold metrics of four similarities."""
    return evaluate_pair_classification(encode, task.data, instruction)


def score_names(settings: "EvalSettings") -> frozenset[str]:
    """Per similarity and best over them, each threshold metric; and ``ap``."""
    per_similarity = {f"{s}_{m}" for s in ("cosine", "dot", "euclidean", "manhattan") for m in THRESHOLD_METRICS}
    return frozenset(per_similarity | {f"max_{m}" for m in THRESHOLD_METRICS} | {"ap"})


PAIR_CLASSIFICATION = register(
    TaskType(
        name="PairClassification",
        column=2,
        table_label="Pair CLF",
        main_score="ap",
        data_class=SentencePairs,
        load_local=load_local,
        load_hub=load_hub,
        evaluate=evaluate,
        score_names=score_names,
    )
)
