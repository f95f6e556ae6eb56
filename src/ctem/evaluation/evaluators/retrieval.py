"""Retrieval: exact nearest-neighbour search over a corpus, scored like pytrec_eval.

Search: cosine similarity of query and document embeddings, computed as chunked matrix
products (torch), keeping the top ``max(k_values)`` documents per query. Ties are broken
by document id, descending, as ``trec_eval`` does. Metrics (MTEB / pytrec_eval
definitions, mean over queries that have judgements):

- ``ndcg_at_k``: DCG with linear gains ``rel`` and discount ``log2(rank + 1)``, divided by
  the DCG of the ideal ordering of all judged documents (main: ``ndcg_at_10``);
- ``map_at_k``: sum of precision at each relevant rank <= k, divided by all relevant docs;
- ``recall_at_k``, ``precision_at_k``; ``mrr_at_k``: reciprocal rank of the first relevant.

A document is relevant when its judgement is > 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ctem.evaluation.data import RetrievalData
from ctem.evaluation.evaluators.base import EncodeFn, encode_unique, l2_normalize

DEFAULT_K_VALUES: tuple[int, ...] = (1, 3, 5, 10, 20, 100, 1000)
# Most query-document scores one matrix product of ``exact_search`` makes (128 MB of float32):
# a corpus of a million documents is scored 33 queries at a time, not 1,024 (4 GB).
MAX_SCORES_PER_PRODUCT = 1 << 25


def exact_search(
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    top_k: int,
    doc_tiebreak: np.ndarray | None = None,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``top_k`` documents per query by cosine similarity.

    Args:
        query_emb: ``[Q, D]``; doc_emb: ``[C, D]`` (any norm; cosine is used).
        doc_tiebreak: ``[C]`` ints; among equal scores the larger value ranks first.
        chunk_size: queries per matrix product, fewer where ``chunk_size x C`` would pass
            ``MAX_SCORES_PER_PRODUCT`` (memory: one ``[chunk, C]`` score matrix).

    Returns:
        ``(indices [Q, k], scores [Q, k])`` with ``k = min(top_k, C)``, best first.
    """
    k = min(top_k, doc_emb.shape[0])
    docs = torch.from_numpy(l2_normalize(doc_emb.astype(np.float32)))
    queries = torch.from_numpy(l2_normalize(query_emb.astype(np.float32)))
    tiebreak = None if doc_tiebreak is None else np.asarray(doc_tiebreak)
    all_idx, all_scores = [], []
    chunk_size = max(1, min(chunk_size, MAX_SCORES_PER_PRODUCT // max(1, docs.shape[0])))
    for start in range(0, queries.shape[0], chunk_size):
        sims = queries[start : start + chunk_size] @ docs.T
        scores, idx = torch.topk(sims, k, dim=1)
        scores_np, idx_np = scores.numpy(), idx.numpy()
        if tiebreak is not None:
            for row in range(idx_np.shape[0]):
                order = np.lexsort((-tiebreak[idx_np[row]], -scores_np[row]))
                idx_np[row], scores_np[row] = idx_np[row][order], scores_np[row][order]
        all_idx.append(idx_np)
        all_scores.append(scores_np)
    return np.concatenate(all_idx), np.concatenate(all_scores)


def ranking_metrics(
    ranked_gains: Sequence[np.ndarray],
    judged_gains: Sequence[np.ndarray],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
) -> dict[str, float]:
    """Mean NDCG / MAP / recall / precision / MRR at each k over queries.

    Args:
        ranked_gains: per query, the judgement (0 if unjudged) of each retrieved
            document, best first.
        judged_gains: per query, the judgements of all its judged documents.
    """
    per_metric: dict[str, list[float]] = {}
    for ranked, judged in zip(ranked_gains, judged_gains, strict=True):
        gains = np.maximum(np.asarray(ranked, dtype=np.float64), 0.0)
        relevant = (gains > 0).astype(np.float64)
        ideal = np.sort(np.maximum(np.asarray(judged, dtype=np.float64), 0.0))[::-1]
        n_rel = float((ideal > 0).sum())
        discounts = 1.0 / np.log2(np.arange(2, max(len(gains), len(ideal)) + 2))
        hits = np.cumsum(relevant)
        precisions = hits / np.arange(1, len(gains) + 1)
        first = int(np.argmax(relevant)) if relevant.any() else None
        for k in k_values:
            dcg = float((gains[:k] * discounts[: len(gains[:k])]).sum())
            idcg = float((ideal[:k] * discounts[: len(ideal[:k])]).sum())
            n_hit = float(relevant[:k].sum())
            values = {
                "ndcg_at": dcg / idcg if idcg > 0 else 0.0,
                "map_at": float((precisions[:k] * relevant[:k]).sum()) / n_rel if n_rel else 0.0,
                "recall_at": n_hit / n_rel if n_rel else 0.0,
                "precision_at": n_hit / k,
                "mrr_at": 1.0 / (first + 1) if first is not None and first < k else 0.0,
            }
            for name, value in values.items():
                per_metric.setdefault(f"{name}_{k}", []).append(value)
    if not per_metric:
        raise ValueError("no query has relevance judgements")
    return {name: float(np.mean(values)) for name, values in per_metric.items()}


def evaluate_retrieval(
    encode: EncodeFn,
    data: RetrievalData,
    query_instruction: str | None = None,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Encode judged queries (with ``query_instruction``) and the corpus; search; score."""
    queries = [(qid, text) for qid, text in zip(data.query_ids, data.query_texts) if qid in data.qrels]
    if not queries:
        raise ValueError("no query has relevance judgements")
    titles = data.corpus_titles or [""] * len(data.corpus_texts)
    docs = [f"{title} {text}".strip() if title else text for title, text in zip(titles, data.corpus_texts)]
    doc_emb = encode_unique(encode, docs)
    query_emb = encode_unique(encode, [text for _, text in queries], query_instruction)
    tiebreak = np.argsort(np.argsort(np.asarray(data.corpus_ids, dtype=object), kind="stable"))
    idx, _ = exact_search(query_emb, doc_emb, max(k_values), tiebreak, chunk_size)
    ranked, judged = [], []
    for row, (qid, _) in enumerate(queries):
        qrel = data.qrels[qid]
        ranked.append(np.array([qrel.get(data.corpus_ids[i], 0) for i in idx[row]]))
        judged.append(np.array(list(qrel.values())))
    return ranking_metrics(ranked, judged, k_values)
