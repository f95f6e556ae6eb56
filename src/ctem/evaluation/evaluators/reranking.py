"""Reranking: order each query's candidate passages by cosine similarity.

MTEB's (C-MTEB) definition: per query, average precision of the similarities against
positive/negative labels (sklearn ``average_precision_score``; mean: ``map``, main) and
the reciprocal rank of the first positive within the top 10 (``mrr_at_10``). Queries
without a positive or without a negative are skipped, as in MTEB.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from ctem.evaluation.data import RerankingData
from ctem.evaluation.evaluators.base import EncodeFn, encode_unique, paired_cosine


def rerank_scores(
    similarities: list[np.ndarray], is_relevant: list[np.ndarray], mrr_k: int = 10
) -> dict[str, float]:
    """Mean AP and MRR@``mrr_k`` over queries; per query ``[n_candidates]`` arrays."""
    aps, rrs = [], []
    for sim, rel in zip(similarities, is_relevant, strict=True):
        rel = np.asarray(rel, dtype=np.int64)
        aps.append(float(average_precision_score(rel, sim)))
        top = rel[np.argsort(-np.asarray(sim), kind="stable")[:mrr_k]]
        rrs.append(1.0 / (int(np.argmax(top)) + 1) if top.any() else 0.0)
    if not aps:
        raise ValueError("no query has both a positive and a negative candidate")
    return {"map": float(np.mean(aps)), f"mrr_at_{mrr_k}": float(np.mean(rrs))}


def evaluate_reranking(
    encode: EncodeFn,
    data: RerankingData,
    query_instruction: str | None = None,
    mrr_k: int = 10,
) -> dict[str, float]:
    """Encode queries (with ``query_instruction``) and all candidates; score per query."""
    keep = [i for i in range(len(data.queries)) if data.positives[i] and data.negatives[i]]
    if not keep:
        raise ValueError("no query has both a positive and a negative candidate")
    candidates = [data.positives[i] + data.negatives[i] for i in keep]
    flat = [text for group in candidates for text in group]
    doc_emb = encode_unique(encode, flat)
    query_emb = encode_unique(encode, [data.queries[i] for i in keep], query_instruction)
    sims, rels, start = [], [], 0
    for row, i in enumerate(keep):
        n = len(candidates[row])
        sims.append(paired_cosine(np.repeat(query_emb[row : row + 1], n, axis=0), doc_emb[start : start + n]))
        rels.append(np.array([1] * len(data.positives[i]) + [0] * len(data.negatives[i])))
        start += n
    return rerank_scores(sims, rels, mrr_k)
