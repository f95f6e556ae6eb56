"""Evaluator metrics on hand-computed cases and against scipy / sklearn / pytrec_eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, v_measure_score

from ctem.evaluation.evaluators.classification import classification_scores, undersample_indices
from ctem.evaluation.evaluators.clustering import cluster_v_measure
from ctem.evaluation.evaluators.pair_classification import (
    best_accuracy,
    best_f1,
    pair_classification_scores,
)
from ctem.evaluation.evaluators.reranking import rerank_scores
from ctem.evaluation.evaluators.retrieval import exact_search, ranking_metrics
from ctem.evaluation.evaluators.sts import sts_scores


# ----------------------------------------------------------------- retrieval
def test_ranking_metrics_hand_computed() -> None:
    # retrieved: miss, hit, miss, hit; 3 relevant documents in total
    m = ranking_metrics([np.array([0, 1, 0, 1])], [np.array([1, 1, 1])], k_values=(1, 3, 4, 10))
    d = lambda r: 1 / math.log2(r + 1)  # noqa: E731
    assert m["ndcg_at_3"] == pytest.approx(d(2) / (d(1) + d(2) + d(3)))
    assert m["ndcg_at_4"] == pytest.approx((d(2) + d(4)) / (d(1) + d(2) + d(3)))
    assert m["map_at_4"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert m["recall_at_4"] == pytest.approx(2 / 3)
    assert m["precision_at_1"] == 0.0
    assert m["precision_at_4"] == pytest.approx(0.5)
    assert m["mrr_at_1"] == 0.0 and m["mrr_at_10"] == pytest.approx(0.5)


def test_ranking_metrics_graded_gains() -> None:
    # linear gains as trec_eval: DCG = 1/log2(2) + 2/log2(3); ideal = 2 + 1/log2(3)
    m = ranking_metrics([np.array([1, 2])], [np.array([2, 1])], k_values=(2,))
    assert m["ndcg_at_2"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_ranking_metrics_against_pytrec_eval() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    n_docs, k_values = 40, (1, 3, 5, 10, 20)
    qrels, run, ranked, judged = {}, {}, [], []
    for q in range(25):
        rel_docs = rng.choice(n_docs, size=rng.integers(1, 6), replace=False)
        qrels[f"q{q}"] = {f"d{d:02d}": int(rng.integers(1, 3)) for d in rel_docs}
        scores = rng.random(n_docs)
        run[f"q{q}"] = {f"d{d:02d}": float(s) for d, s in enumerate(scores)}
        order = np.argsort(-scores)[: max(k_values)]
        ranked.append(np.array([qrels[f"q{q}"].get(f"d{d:02d}", 0) for d in order]))
        judged.append(np.array(list(qrels[f"q{q}"].values())))
    ks = ",".join(map(str, k_values))
    ref = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}"}).evaluate(run)
    ours = ranking_metrics(ranked, judged, k_values)
    for k in k_values:
        for name, key in (("ndcg_at", "ndcg_cut"), ("map_at", "map_cut"), ("recall_at", "recall"), ("precision_at", "P")):
            expected = np.mean([ref[q][f"{key}_{k}"] for q in qrels])
            assert ours[f"{name}_{k}"] == pytest.approx(expected, abs=1e-9), (name, k)


def test_exact_search_matches_brute_force_and_faiss() -> None:
    rng = np.random.default_rng(1)
    queries, docs = rng.normal(size=(37, 16)), rng.normal(size=(101, 16))
    idx, scores = exact_search(queries, docs, top_k=7, chunk_size=10)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    dn = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    brute = np.argsort(-(qn @ dn.T), axis=1)[:, :7]
    np.testing.assert_array_equal(idx, brute)
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexFlatIP(16)
    index.add(dn.astype(np.float32))
    f_scores, f_idx = index.search(qn.astype(np.float32), 7)
    np.testing.assert_allclose(scores, f_scores, atol=1e-5)


def test_exact_search_bounds_each_score_matrix(monkeypatch) -> None:
    """A large corpus is scored fewer queries at a time (at most
    ``MAX_SCORES_PER_PRODUCT`` scores per product), with the same results."""
    from ctem.evaluation.evaluators import retrieval

    rng = np.random.default_rng(2)
    queries, docs = rng.normal(size=(37, 16)), rng.normal(size=(101, 16))
    expected = exact_search(queries, docs, top_k=7)
    shapes = []
    real_topk = retrieval.torch.topk
    monkeypatch.setattr(retrieval, "MAX_SCORES_PER_PRODUCT", 5 * 101 + 3)  # 5 queries a product
    monkeypatch.setattr(retrieval.torch, "topk", lambda sims, k, dim: (shapes.append(tuple(sims.shape)), real_topk(sims, k, dim=dim))[1])
    idx, scores = exact_search(queries, docs, top_k=7)
    assert shapes[0] == (5, 101) and len(shapes) == 8
    np.testing.assert_array_equal(idx, expected[0])
    np.testing.assert_allclose(scores, expected[1], atol=1e-6)


def test_exact_search_breaks_ties_by_descending_doc_id() -> None:
    docs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # docs 0 and 1 tie
    idx, _ = exact_search(np.array([[1.0, 0.1]]), docs, top_k=3, doc_tiebreak=np.array([0, 1, 2]))
    assert idx[0].tolist() == [1, 0, 2]


# ----------------------------------------------------------------- reranking
def test_rerank_scores_hand_computed() -> None:
    m = rerank_scores([np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.5])], [np.array([0, 1, 1]), np.array([1, 0])])
    assert m["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 2) / 2)
    assert m["mrr_at_10"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_rerank_map_matches_sklearn_average_precision() -> None:
    rng = np.random.default_rng(2)
    sims = [rng.random(12) for _ in range(9)]
    rels = [np.r_[np.ones(3), np.zeros(9)].astype(int) for _ in range(9)]
    expected = np.mean([average_precision_score(r, s) for r, s in zip(rels, sims)])
    assert rerank_scores(sims, rels)["map"] == pytest.approx(expected)


# ----------------------------------------------------------------- STS
def test_sts_scores_against_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b, gold = rng.normal(size=(50, 8)), rng.normal(size=(50, 8)), rng.random(50) * 5
    m = sts_scores(a, b, gold)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert m["cosine_spearman"] == pytest.approx(spearmanr(gold, cos)[0])
    assert m["cosine_pearson"] == pytest.approx(pearsonr(gold, cos)[0])
    assert m["euclidean_spearman"] == pytest.approx(spearmanr(gold, -np.linalg.norm(a - b, axis=1))[0])
    assert m["manhattan_pearson"] == pytest.approx(pearsonr(gold, -np.abs(a - b).sum(1))[0])


def test_sts_perfect_ranking_is_one() -> None:
    angles = np.linspace(0.1, 1.5, 6)
    a = np.tile([1.0, 0.0], (6, 1))
    b = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    gold = np.arange(6)[::-1].astype(float)  # smaller angle = more similar
    assert sts_scores(a, b, gold)["cosine_spearman"] == pytest.approx(1.0)


# ----------------------------------------------------------------- pair classification
def test_best_accuracy_and_f1_hand_computed() -> None:
    sims = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 1, 0, 1, 0])
    acc, thr = best_accuracy(sims, labels)
    assert acc == pytest.approx(4 / 5) and thr in (pytest.approx(0.75), pytest.approx(0.55))
    f1, precision, recall, thr = best_f1(sims, labels)
    assert f1 == pytest.approx(6 / 7) and precision == pytest.approx(3 / 4) and recall == 1.0
    assert thr == pytest.approx(0.55)


def test_thresholds_never_split_ties() -> None:
    # all scores tied: no threshold exists
    assert best_accuracy(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 1]))[0] == 0.0
    # the tie at 0.8 can't be split, so 0.85 or 0.65 are the only thresholds
    acc, _ = best_accuracy(np.array([0.9, 0.8, 0.8, 0.6]), np.array([1, 1, 0, 0]))
    assert acc == pytest.approx(3 / 4)


def test_best_accuracy_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    sims, labels = rng.random(60).round(2), rng.integers(0, 2, 60)
    distinct = np.unique(sims)
    cuts = (distinct[:-1] + distinct[1:]) / 2
    brute = max(accuracy_score(labels, sims > t) for t in cuts)
    assert best_accuracy(sims, labels)[0] == pytest.approx(brute)


def test_pair_classification_ap_is_sklearn_cosine_ap() -> None:
    rng = np.random.default_rng(5)
    a, b, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)), rng.integers(0, 2, 40)
    m = pair_classification_scores(a, b, y)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert m["ap"] == m["cosine_ap"] == pytest.approx(average_precision_score(y, cos))
    assert m["euclidean_ap"] == pytest.approx(average_precision_score(y, -np.linalg.norm(a - b, axis=1)))
    assert m["max_accuracy"] == max(m[f"{s}_accuracy"] for s in ("cosine", "dot", "euclidean", "manhattan"))


def test_pair_classification_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        pair_classification_scores(np.ones((2, 2)), np.ones((2, 2)), np.array([0, 2]))


# ----------------------------------------------------------------- classification
def test_undersampling_follows_mteb_scheme() -> None:
    labels = ["a"] * 5 + ["b"] * 3
    runs = undersample_indices(labels, n_experiments=3, samples_per_label=2, seed=0)
    order = list(range(8))
    for run in runs:  # the same seeded shuffle, applied cumulatively; first 2 per label
        np.random.RandomState(0).shuffle(order)
        expected = [i for i in order if labels[i] == "a"][:2] + [i for i in order if labels[i] == "b"][:2]
        assert sorted(run) == sorted(expected)
        assert [i for i in order if i in run] == run  # kept in shuffled order
    assert runs == undersample_indices(labels, 3, 2, 0)  # deterministic
    assert len({tuple(r) for r in runs}) > 1  # experiments differ


def test_classification_scores_match_sklearn() -> None:
    rng = np.random.default_rng(6)
    centers = rng.normal(size=(3, 5)) * 3
    y_train, y_test = rng.integers(0, 3, 90), rng.integers(0, 3, 40)
    x_train, x_test = centers[y_train] + rng.normal(size=(90, 5)), centers[y_test] + rng.normal(size=(40, 5))
    m = classification_scores(x_train, list(y_train), x_test, list(y_test), n_experiments=1, samples_per_label=8, seed=7)
    idx = undersample_indices(list(y_train), 1, 8, 7)[0]
    ref = LogisticRegression(max_iter=100, random_state=7).fit(x_train[idx], y_train[idx])
    assert m["accuracy"] == pytest.approx(accuracy_score(y_test, ref.predict(x_test)))
    assert m["accuracy"] > 0.8  # well separated classes


# ----------------------------------------------------------------- clustering
def test_cluster_v_measure_separable_and_reference() -> None:
    rng = np.random.default_rng(8)
    labels = np.repeat([0, 1, 2], 30)
    emb = np.eye(3)[labels] * 10 + rng.normal(scale=0.1, size=(90, 3))
    assert cluster_v_measure(emb, list(labels)) == pytest.approx(1.0)
    noisy = rng.normal(size=(90, 4))
    ref = MiniBatchKMeans(n_clusters=3, batch_size=500, n_init="auto", random_state=42).fit(noisy)
    assert cluster_v_measure(noisy, list(labels)) == pytest.approx(v_measure_score(labels, ref.labels_))
    assert cluster_v_measure(noisy, [0] * 90) == 1.0
