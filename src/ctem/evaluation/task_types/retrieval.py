"""Retrieval: ``corpus.jsonl`` (id, text[, title]), ``queries.jsonl`` (id, text) and
``qrels.jsonl`` (qid, pid, score); scored by ``evaluators.retrieval`` (main: ``ndcg_at_10``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctem.encoding import EncodeFn
from ctem.evaluation.data import RetrievalData
from ctem.evaluation.evaluators.retrieval import evaluate_retrieval
from ctem.evaluation.task_io import NUM, STR, TaskDataError, read_rows, require
from ctem.evaluation.task_type import HubFetch, TaskType, register

if TYPE_CHECKING:
    from ctem.evaluation.registry import HubTaskSpec
    from ctem.evaluation.runner import EvalSettings
    from ctem.evaluation.tasks import Task


def load_local(folder: Path) -> RetrievalData:
    """Corpus, queries and judgements; a repeated id, an unknown id, a non-integer or
    twice-given grade, or judgements without a relevant passage are errors."""
    corpus_ids, corpus_texts, titles, seen = [], [], [], set()
    corpus_path = folder / "corpus.jsonl"
    for location, row in read_rows(corpus_path, {"id": STR, "text": STR}):
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
    for location, row in read_rows(folder / "queries.jsonl", {"id": STR, "text": STR}):
        if row["id"] in known_queries:  # a repeated query would be scored once per copy
            raise TaskDataError(location, "id", f"duplicate id {row['id']!r}")
        known_queries.add(row["id"])
        query_ids.append(row["id"])
        query_texts.append(row["text"])
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = folder / "qrels.jsonl"
    for location, row in read_rows(qrels_path, {"qid": STR, "pid": STR, "score": NUM}):
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
    require(any(g > 0 for judged in qrels.values() for g in judged.values()), qrels_path, "score", "no judgement above 0, so no query has a relevant passage")
    return RetrievalData(corpus_ids, corpus_texts, query_ids, query_texts, qrels, titles)


def load_hub(spec: "HubTaskSpec", fetch: HubFetch) -> RetrievalData:
    """Corpus, queries and judgements in either hub layout (``spec.layout``: ``cmteb`` or ``beir``)."""
    if spec.layout == "beir":
        corpus = fetch(spec.hub_id, "corpus", "corpus")
        queries = fetch(spec.hub_id, "queries", "queries")
        judged, qid, pid, ident = fetch(spec.hub_id, "default", spec.split), "query-id", "corpus-id", "_id"
    else:
        corpus = fetch(spec.hub_id, spec.subset, "corpus")
        queries = fetch(spec.hub_id, spec.subset, "queries")
        judged, qid, pid, ident = fetch(spec.hub_id + "-qrels", None, spec.split), "qid", "pid", "id"
    qrels: dict[str, dict[str, int]] = {}
    for row in judged:
        qrels.setdefault(str(row[qid]), {})[str(row[pid])] = int(row["score"])
    titles = list(corpus["title"]) if "title" in corpus.column_names else []
    return RetrievalData(
        [str(i) for i in corpus[ident]], list(corpus["text"]), [str(i) for i in queries[ident]], list(queries["text"]), qrels, titles
    )


def evaluate(encode: EncodeFn, task: "Task", settings: "EvalSettings", instruction: str | None) -> dict[str, float]:
    """Search the corpus for each judged query (with ``instruction``); score at ``settings.k_values``."""
    return evaluate_retrieval(encode, task.data, instruction, settings.k_values, settings.retrieval_chunk_size)


RETRIEVAL = register(
    TaskType(
        name="Retrieval",
        column=0,
        table_label="Retrieval",
        main_score="ndcg_at_10",
        data_class=RetrievalData,
        load_local=load_local,
        load_hub=load_hub,
        evaluate=evaluate,
        score_names=lambda settings: frozenset(
            f"{m}_at_{k}" for m in ("ndcg", "map", "recall", "precision", "mrr") for k in settings.k_values
        ),
        score_settings=lambda settings: f" with k_values={list(settings.k_values)}",
    )
)
