"""STS: ``test.jsonl`` rows of sentence1, sentence2, score; scored by ``evaluators.sts``
(main: ``cosine_spearman``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctem.encoding import EncodeFn
from ctem.evaluation.data import SentencePairs
from ctem.evaluation.evaluators.sts import evaluate_sts
from ctem.evaluation.task_io import hub_columns, read_pairs
from ctem.evaluation.task_type import HubFetch, TaskType, register

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec
    from ctem.evaluation.runner import EvalSettings
    from ctem.evaluation.tasks import Task


def load_local(folder: Path) -> SentencePairs:
    """The pairs of ``test.jsonl``; their scores must not all be equal."""
    return read_pairs(folder / "test.jsonl", "score", lambda v: True, "a number")


def load_hub(spec: "HubTaskSpec", fetch: HubFetch) -> SentencePairs:
    """The pairs of the evaluated split."""
    cols = hub_columns(fetch(spec.hub_id, spec.subset, spec.split), spec, ["sentence1", "sentence2", "score"])
    return SentencePairs(cols["sentence1"], cols["sentence2"], cols["score"])


def evaluate(encode: EncodeFn, task: "Task", settings: "EvalSettings", instruction: str | None) -> dict[str, float]:
    """Correlations of the pairs' similarities with their scores."""
    return evaluate_sts(encode, task.data, instruction)


STS = register(
    TaskType(
        name="STS",
        column=1,
        table_label="STS",
        main_score="cosine_spearman",
        data_class=SentencePairs,
        load_local=load_local,
        load_hub=load_hub,
        evaluate=evaluate,
        score_names=lambda settings: frozenset(
            f"{s}_{c}" for s in ("cosine", "euclidean", "manhattan") for c in ("spearman", "pearson")
        ),
    )
)
