"""Clustering: mini-batch k-means on embeddings, scored by V-measure against labels.

MTEB's definition: ``MiniBatchKMeans(n_clusters=number of labels, batch_size,
n_init="auto", random_state=seed)`` on each set; the score is the mean V-measure over
sets (a set with a single label scores 1.0 without encoding).
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import v_measure_score

from ctem.evaluation.data import ClusteringData
from ctem.evaluation.evaluators.base import EncodeFn, encode_unique


def cluster_v_measure(
    emb: np.ndarray, labels: Sequence[Hashable], batch_size: int = 500, seed: int = 42
) -> float:
    """V-measure of k-means clusters of ``emb`` ``[N, D]`` with k = number of labels."""
    k = len(set(labels))
    if k <= 1:
        return 1.0
    model = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init="auto", random_state=seed)
    model.fit(emb)
    return float(v_measure_score(list(labels), model.labels_))


def evaluate_clustering(
    encode: EncodeFn,
    data: ClusteringData,
    batch_size: int = 500,
    seed: int = 42,
    instruction: str | None = None,
) -> dict[str, float]:
    """Mean and standard deviation of the V-measure over the task's sets (texts encoded
    with ``instruction``)."""
    scores = []
    for texts, labels in data.sets:
        if len(set(labels)) <= 1:
            scores.append(1.0)
            continue
        scores.append(cluster_v_measure(encode_unique(encode, texts, instruction), labels, batch_size, seed))
    return {"v_measure": float(np.mean(scores)), "v_measure_std": float(np.std(scores))}
