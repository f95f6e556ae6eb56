"""Reranking: ``test.jsonl`` rows of query, positive (list), negative (list); scored by
``evaluators.reranking`` (main: ``map``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctem.encoding import EncodeFn
from ctem.evaluation.data import RerankingData
from ctem.evaluation.evaluators.reranking import evaluate_reranking
from ctem.evaluation.task_io import STR, STR_LIST, hub_columns, read_rows, require
from ctem.evaluation.task_type import HubFetch, TaskType, register

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec
    from ctem.evaluation.runner import EvalSettings
    from ctem.evaluation.tasks import Task


def load_local(folder: Path) -> RerankingData:
    """The rows of ``test.jsonl``; some row needs both a positive and a negative."""
    path = folder / "test.jsonl"
    queries, positives, negatives = [], [], []
    for _, row in read_rows(path, {"query": STR, "positive": STR_LIST, "negative": STR_LIST}):
        queries.append(row["query"])
        positives.append(row["positive"])
        negatives.append(row["negative"])
    require(any(p and n for p, n in zip(positives, negatives)), path, None, "no row has both a positive and a negative")
    return RerankingData(queries, positives, negatives)


def load_hub(spec: "HubTaskSpec", fetch: HubFetch) -> RerankingData:
    """The rows of the evaluated split."""
    cols = hub_columns(fetch(spec.hub_id, spec.subset, spec.split), spec, ["query", "positive", "negative"])
    return RerankingData(cols["query"], cols["positive"], cols["negative"])


def evaluate(encode: EncodeFn, task: "Task", settings: "EvalSettings", instruction: str | None) -> dict[str, float]:
    """MAP and MRR at ``settings.mrr_k`` of each query's candidates (queries with ``instruction``)."""
    return evaluate_reranking(encode, task.data, instruction, settings.mrr_k)


RERANKING = register(
    TaskType(
        name="Reranking",
        column=4,
        table_label="Re-rank",
        main_score="map",
        data_class=RerankingData,
        load_local=load_local,
        load_hub=load_hub,
        evaluate=evaluate,
        score_names=lambda settings: frozenset({"map", f"mrr_at_{settings.mrr_k}"}),
        score_settings=lambda settings: f" with mrr_k={settings.mrr_k}",
    )
)
