"""Classification: logistic regression trained on embeddings of a few labelled texts.

MTEB's protocol: ``n_experiments`` runs; in each, the training indices are shuffled
(``numpy.random.RandomState(seed)``, re-applied cumulatively run after run) and the first
``samples_per_label`` texts of every label are kept; ``LogisticRegression(max_iter)`` is
fit on their embeddings and predicts the evaluation split. Scores are the mean over runs
of accuracy (main), macro F1 and weighted F1.
"""

from __future__ import annotations

import warnings
from typing import Hashable, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from ctem.evaluation.data import ClassificationData
from ctem.evaluation.evaluators.base import EncodeFn, encode_unique


def undersample_indices(
    labels: Sequence[Hashable], n_experiments: int, samples_per_label: int, seed: int
) -> list[list[int]]:
    """Training indices of each experiment: at most ``samples_per_label`` per label."""
    order = list(range(len(labels)))
    runs: list[list[int]] = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(order)
        counts: dict[Hashable, int] = {}
        picked = []
        for i in order:
            if counts.get(labels[i], 0) < samples_per_label:
                picked.append(i)
                counts[labels[i]] = counts.get(labels[i], 0) + 1
        runs.append(picked)
    return runs


def classification_scores(
    train_emb: np.ndarray,
    train_labels: Sequence[Hashable],
    test_emb: np.ndarray,
    test_labels: Sequence[Hashable],
    n_experiments: int = 10,
    samples_per_label: int = 32,
    max_iter: int = 100,
    seed: int = 42,
) -> dict[str, float]:
    """Mean accuracy / macro F1 / weighted F1 over experiments; embeddings ``[N, D]``."""
    y_train = np.asarray(train_labels)
    runs = undersample_indices(list(train_labels), n_experiments, samples_per_label, seed)
    per_run: dict[str, list[float]] = {"accuracy": [], "f1": [], "f1_weighted": []}
    for idx in runs:
        clf = LogisticRegression(max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():  # a capped max_iter is part of the protocol
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(train_emb[idx], y_train[idx])
        pred = clf.predict(test_emb)
        per_run["accuracy"].append(accuracy_score(test_labels, pred))
        per_run["f1"].append(f1_score(test_labels, pred, average="macro"))
        per_run["f1_weighted"].append(f1_score(test_labels, pred, average="weighted"))
    out = {name: float(np.mean(values)) for name, values in per_run.items()}
    out["accuracy_std"] = float(np.std(per_run["accuracy"]))
    return out


def evaluate_classification(
    encode: EncodeFn,
    data: ClassificationData,
    n_experiments: int = 10,
    samples_per_label: int = 32,
    max_iter: int = 100,
    seed: int = 42,
    instruction: str | None = None,
) -> dict[str, float]:
    """Encode (with ``instruction``) the training texts some experiment uses and the
    evaluation split; run the experiments."""
    runs = undersample_indices(data.train_labels, n_experiments, samples_per_label, seed)
    used = sorted(set().union(*runs))
    emb = encode_unique(encode, [data.train_texts[i] for i in used] + data.test_texts, instruction)
    train_emb = np.zeros((len(data.train_texts), emb.shape[1]), dtype=np.float32)
    train_emb[used] = emb[: len(used)]
    return classification_scores(
        train_emb,
        data.train_labels,
        emb[len(used) :],
        data.test_labels,
        n_experiments=n_experiments,
        samples_per_label=samples_per_label,
        max_iter=max_iter,
        seed=seed,
    )
