"""Score filter: pairs at or above the threshold are kept, exactly, with their score."""

from __future__ import annotations

import random

import numpy as np
import torch
import pytest

from ctem.curation import PairScorer, curate
from tests.curation_helpers import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.curation_helpers import KNOWN_COSINE_TO_A, known_scores_encoder, read_jsonl, write_jsonl
from tests.helpers.tiny import sentences, tiny_encoder, write_vocab


def test_known_encoder_gives_the_designed_cosines(tmp_path):
    scorer = PairScorer(known_scores_encoder(tmp_path), device="cpu")
    tokens = list(KNOWN_COSINE_TO_A)
    scores = scorer.score(["a"] * len(tokens), tokens)
    np.testing.assert_allclose(scores, [KNOWN_COSINE_TO_A[t] for t in tokens], atol=1e-6)


@pytest.mark.parametrize("threshold", [0.5, 0.43, 0.0, 1.0])
def test_threshold_keeps_exactly_the_pairs_at_or_above_it(tmp_path, threshold):
    scorer = PairScorer(known_scores_encoder(tmp_path), device="cpu")
    rows = [{"query": "a", "pos": [t], "neg": [], "id": i} for i, t in enumerate("abcd")]
    rows.append({"query": "a", "pos": ["c", "a", "b"], "neg": ["d"], "id": 4})  # mixed row
    src = write_jsonl(tmp_path / "in" / "pairs.jsonl", rows)
    report = curate(str(src), tmp_path / "out", scorer=scorer, threshold=threshold, show_progress=False)
    out = read_jsonl(tmp_path / "out" / "pairs.jsonl")

    expected = []
    for row in rows:
        kept = [p for p in row["pos"] if KNOWN_COSINE_TO_A[p] >= threshold]
        if kept:
            expected.append((row["id"], kept, min(KNOWN_COSINE_TO_A[p] for p in kept)))
    assert [(r["id"], r["pos"], r["score"]) for r in out] == expected
    assert all(r["neg"] == rows[r["id"]]["neg"] for r in out)  # other fields untouched
    total = report.total
    assert total.pairs_out == sum(len(k) for _, k, _ in expected)
    assert total.pairs_removed["low_score"] == 7 - total.pairs_out
    assert report.scores.total == 7 and report.scores.kept_at(threshold) == total.pairs_out


def test_scores_barely_depend_on_batch_company(tmp_path):
    """Batching by token length without padding: a pair's score is the same, up to float32
    noise, whatever else is scored with it."""
    encoder = tiny_encoder(write_vocab(tmp_path), initializer_range=0.5)
    scorer = PairScorer(encoder, batch_size=8, device="cpu")
    queries, positives = sentences(60, seed=1), sentences(60, seed=2, max_len=30)
    full = scorer.score(queries, positives)
    some = scorer.score(queries[::3], positives[::3])
    np.testing.assert_allclose(full[::3], some, rtol=0, atol=1e-6)
    assert len(set(np.round(full, 4))) > 10  # a real spread, not a constant


def test_instruction_changes_query_embedding_only(tmp_path):
    encoder = tiny_encoder(write_vocab(tmp_path), initializer_range=0.5)
    plain = PairScorer(encoder, device="cpu")
    instructed = PairScorer(encoder, query_instruction="为这个句子", device="cpu")
    q, p = sentences(5, seed=3), sentences(5, seed=4)
    assert not np.allclose(plain.score(q, p), instructed.score(q, p))
    rng = random.Random(0)
    same = [rng.choice(p) for _ in range(3)]
    np.testing.assert_allclose(plain.score(same, same), 1.0, atol=1e-6)



def test_each_call_builds_its_own_scorer(tmp_path):
    """Every ``curate`` call builds its scorer once, even from the same builder: a cache keyed
    by the builder's ``id()`` once handed a call the model of an earlier call whose freed
    builder had the same id, and the scores were silently the old model's."""
    designed = PairScorer(known_scores_encoder(tmp_path), device="cpu")
    flat = PairScorer(known_scores_encoder(tmp_path), device="cpu")
    emb = flat.encoder.backbone.embeddings.word_embeddings.weight
    with torch.no_grad():
        for token in "bcd":  # every text embeds as "a": every cosine is 1
            emb[flat.encoder.tokenizer.convert_tokens_to_ids(token)] = emb[flat.encoder.tokenizer.convert_tokens_to_ids("a")]
    built = []
    scorers = iter([designed, flat, designed])

    def build() -> PairScorer:
        built.append(next(scorers))
        return built[-1]

    src = write_jsonl(tmp_path / "in" / "pairs.jsonl", [{"query": "a", "pos": [t], "neg": []} for t in "abcd"])
    for n in range(3):
        curate(str(src), tmp_path / f"out{n}", scorer=build, threshold=-1.0, show_progress=False)
        scores = [r["score"] for r in read_jsonl(tmp_path / f"out{n}" / "pairs.jsonl")]
        assert len(built) == n + 1
        assert scores == ([1.0] * 4 if built[-1] is flat else [1.0, 0.5, 0.0, -1.0]), n
