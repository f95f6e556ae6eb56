"""Pair classification: are two sentences a positive pair (label 1) or not (label 0)?

MTEB's definition, for cosine similarity, dot product, euclidean and manhattan distance:
average precision of the similarity (sklearn), and the best accuracy and F1 over all
thresholds that do not split tied scores. ``ap`` (cosine AP) is the C-Pack paper's main
score; ``max_accuracy`` (best over the four similarities) is MTEB's current main score.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from ctem.evaluation.data import SentencePairs
from ctem.evaluation.evaluators.base import EncodeFn, encode_unique, paired_cosine

THRESHOLD_METRICS: tuple[str, ...] = ("accuracy", "f1", "precision", "recall", "ap")


def best_accuracy(similarity: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best accuracy of ``similarity > t`` over thresholds ``t``; returns ``(accuracy, t)``.

    ``similarity`` ``[N]``: higher means more likely positive. Thresholds lie between
    consecutive distinct sorted scores (never inside a tie; "all positive" is excluded,
    as in MTEB). Returns ``(0.0, -1.0)`` when no threshold exists.
    """
    s, y = _sorted_desc(similarity, labels)
    cum_pos = np.cumsum(y)[:-1]
    cum_neg = np.cumsum(1 - y)[:-1]
    valid = s[:-1] != s[1:]
    if not valid.any():
        return 0.0, -1.0
    acc = (cum_pos + (len(y) - y.sum()) - cum_neg) / len(y)
    acc = np.where(valid, acc, -np.inf)
    i = int(np.argmax(acc))
    return float(acc[i]), float((s[i] + s[i + 1]) / 2)


def best_f1(similarity: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, float]:
    """Best F1 of ``similarity > t``; returns ``(f1, precision, recall, t)`` (zeros if none)."""
    s, y = _sorted_desc(similarity, labels)
    total_pos = y.sum()
    cum_pos = np.cumsum(y)[:-1].astype(np.float64)
    n_pred = np.arange(1, len(y), dtype=np.float64)
    valid = (s[:-1] != s[1:]) & (cum_pos > 0)
    if not valid.any():
        return 0.0, 0.0, 0.0, 0.0
    precision = cum_pos / n_pred
    recall = cum_pos / total_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(valid, 2 * precision * recall / (precision + recall), -np.inf)
    i = int(np.argmax(f1))
    return float(f1[i]), float(precision[i]), float(recall[i]), float((s[i] + s[i + 1]) / 2)


def pair_classification_scores(
    emb1: np.ndarray, emb2: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """All metrics for embeddings ``[N, D]`` x2 and 0/1 labels ``[N]``."""
    y = np.asarray(labels)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("pair classification labels must be 0 or 1")
    if len(np.unique(y)) < 2:
        raise ValueError("pair classification needs both labels 0 and 1 in the data")
    y = y.astype(np.int64)
    a, b = emb1.astype(np.float64), emb2.astype(np.float64)
    similarities = {
        "cosine": paired_cosine(a, b),
        "dot": np.einsum("nd,nd->n", a, b),
        "euclidean": -np.linalg.norm(a - b, axis=1),
        "manhattan": -np.abs(a - b).sum(axis=1),
    }
    out: dict[str, float] = {}
    for name, sim in similarities.items():
        acc, _ = best_accuracy(sim, y)
        f1, precision, recall, _ = best_f1(sim, y)
        out.update(
            {
                f"{name}_accuracy": acc,
                f"{name}_f1": f1,
                f"{name}_precision": precision,
                f"{name}_recall": recall,
                f"{name}_ap": float(average_precision_score(y, sim)),
            }
        )
    for metric in THRESHOLD_METRICS:
        out[f"max_{metric}"] = max(out[f"{name}_{metric}"] for name in similarities)
    out["ap"] = out["cosine_ap"]
    return out


def evaluate_pair_classification(
    encode: EncodeFn, data: SentencePairs, instruction: str | None = None
) -> dict[str, float]:
    """Encode both sides (each distinct sentence once, with ``instruction``); score the pairs."""
    n = len(data.sentences1)
    emb = encode_unique(encode, data.sentences1 + data.sentences2, instruction)
    return pair_classification_scores(emb[:n], emb[n:], np.asarray(data.scores))


def _sorted_desc(similarity: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(similarity, dtype=np.float64), kind="stable")
    return np.asarray(similarity, dtype=np.float64)[order], np.asarray(labels, dtype=np.int64)[order]
