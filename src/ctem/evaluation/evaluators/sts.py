"""Semantic textual similarity: correlation of embedding similarity with gold scores.

MTEB's definition: similarity is cosine, negative euclidean and negative manhattan
distance of the two sentence embeddings; each is compared with the gold scores by
Spearman (main: ``cosine_spearman``) and Pearson correlation (scipy).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr

from ctem.evaluation.data import SentencePairs
from ctem.evaluation.evaluators.base import EncodeFn, encode_unique, paired_cosine


def sts_scores(emb1: np.ndarray, emb2: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Correlations for embeddings ``[N, D]`` x2 and gold scores ``[N]`` (any scale)."""
    if len(gold) < 2:
        raise ValueError(f"STS needs at least 2 pairs, got {len(gold)}")
    a, b = emb1.astype(np.float64), emb2.astype(np.float64)
    similarities = {
        "cosine": paired_cosine(a, b),
        "euclidean": -np.linalg.norm(a - b, axis=1),
        "manhattan": -np.abs(a - b).sum(axis=1),
    }
    out: dict[str, float] = {}
    for name, sim in similarities.items():
        out[f"{name}_spearman"] = float(spearmanr(gold, sim)[0])
        out[f"{name}_pearson"] = float(pearsonr(gold, sim)[0])
    return out


def evaluate_sts(encode: EncodeFn, data: SentencePairs, instruction: str | None = None) -> dict[str, float]:
    """Encode both sides (each distinct sentence once, with ``instruction``); score the pairs."""
    n = len(data.sentences1)
    emb = encode_unique(encode, data.sentences1 + data.sentences2, instruction)
    return sts_scores(emb[:n], emb[n:], np.asarray(data.scores, dtype=np.float64))
