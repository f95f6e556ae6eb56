"""HardNegativeMiner / mine_jsonl on constructed embeddings whose neighbours are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctem.mining import (
    EmbeddingCache,
    HardNegativeMiner,
    MiningConfig,
    candidate_pool,
    mine_jsonl,
)
from ctem.rows import DataFormatError

DIM = 24
N_PASSAGES = 400


def _vectors(seed: int = 0) -> dict[str, np.ndarray]:
    """Random unit vectors for passages p000..p399 and queries q000..q059."""
    rng = np.random.default_rng(seed)
    names = [f"p{i:03d}" for i in range(N_PASSAGES)] + [f"q{i:03d}" for i in range(60)]
    vecs = rng.normal(size=(len(names), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return dict(zip(names, vecs))


class TableEncoder:
    """An ``EncodeFn`` from a fixed table; instructions (``I:`` prefix) are stripped;
    records every call."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.calls: list[tuple[int, bool]] = []
        self.query_texts: list[str] = []

    def __call__(self, texts, instruction=None, is_query=False):
        self.calls.append((len(texts), is_query))
        if is_query:
            self.query_texts.extend(texts)
        return np.stack([self.table[t.strip().removeprefix("I:")] for t in texts])


def _rows(table: dict[str, np.ndarray]) -> list[dict]:
    """60 rows: query q_i, positives = its 2 nearest passages, neg = one random passage.
    Row 7's query text also appears as a passage of row 8 (the query must never come back
    as its own negative), and row 9 has a whitespace duplicate of its positive in the pool."""
    passages = np.stack([table[f"p{i:03d}"] for i in range(N_PASSAGES)])
    rows = []
    for i in range(60):
        order = np.argsort(-(passages @ table[f"q{i:03d}"]), kind="stable")
        rows.append({"query": f"q{i:03d}", "pos": [f"p{order[0]:03d}", f"p{order[5]:03d}"], "neg": [f"p{(7 * i) % N_PASSAGES:03d}"]})
    rows[8]["neg"].append("q007")
    rows[9]["neg"].append(f" {rows[9]['pos'][1]} ")
    return rows


def _true_ranking(table: dict[str, np.ndarray], pool: list[str], query: str) -> list[str]:
    pool_vecs = np.stack([table[t.strip()] for t in pool])
    scores = pool_vecs @ table[query]
    return [pool[j] for j in np.argsort(-scores, kind="stable")]


def test_negatives_come_from_rank_range_and_exclude_positives_and_query():
    table = _vectors()
    rows = _rows(table)
    lo, hi = 3, 40
    config = MiningConfig(range=(lo, hi), negative_number=6, seed=1, show_progress=False)
    result = HardNegativeMiner(TableEncoder(table), config).mine(rows)
    pool = candidate_pool(rows)
    assert len(pool) == len({t.strip() for t in pool}), "pool holds each text once"
    assert result.pool_size == len(pool)
    for row, negatives in zip(rows, result.negatives):
        ranking = _true_ranking(table, pool, row["query"])
        allowed = {t.strip() for t in ranking[lo:hi]} - {p.strip() for p in row["pos"]} - {row["query"]}
        assert len(negatives) == 6
        assert len(set(negatives)) == 6, "no repeats"
        for text in negatives:
            assert text.strip() in allowed, (row["query"], text, ranking.index(text))
            assert text.strip() not in {p.strip() for p in row["pos"]}
            assert text.strip() != row["query"]
        ranks = [ranking.index(t) for t in negatives]
        assert ranks == sorted(ranks), "written in rank order"
    # the known near neighbours below `lo` never appear
    for row, negatives in zip(rows, result.negatives):
        top = _true_ranking(table, pool, row["query"])[:lo]
        assert not set(top) & set(negatives)


def test_query_itself_and_duplicates_of_positives_are_excluded():
    table = _vectors()
    rows = _rows(table)
    # the text "q007" is in the pool (row 8's negatives) and is row 7's best match
    config = MiningConfig(range=(0, N_PASSAGES), negative_number=N_PASSAGES, show_progress=False)
    result = HardNegativeMiner(TableEncoder(table), config).mine(rows)
    assert all(t.strip() != "q007" for t in result.negatives[7])
    assert "q007" in result.negatives[6], "other rows may use the text"
    pos9 = rows[9]["pos"][1].strip()
    assert all(t.strip() != pos9 for t in result.negatives[9])
    # range covers the whole pool: everything except positives and query is used, never padded
    pool = candidate_pool(rows)
    assert len(result.negatives[7]) == len(pool) - 2 - 1
    assert result.short_rows == len(rows)


def test_fewer_candidates_than_requested_are_not_padded():
    table = _vectors()
    rows = _rows(table)[:3]
    config = MiningConfig(range=(0, 4), negative_number=15, show_progress=False)
    result = HardNegativeMiner(TableEncoder(table), config).mine(rows)
    for row, negatives in zip(rows, result.negatives):
        assert len(negatives) <= 4
        assert not set(negatives) & set(row["pos"])
    assert result.short_rows == 3


def test_false_negative_margin_drops_candidates_close_to_the_positive():
    table = _vectors()
    rows = _rows(table)
    base = MiningConfig(range=(0, 50), negative_number=50, show_progress=False)
    plain = HardNegativeMiner(TableEncoder(table), base).mine(rows)
    margin = MiningConfig(range=(0, 50), negative_number=50, false_negative_margin=-0.05, show_progress=False)
    filtered = HardNegativeMiner(TableEncoder(table), margin).mine(rows)
    assert filtered.dropped_false_negatives > 0
    for row, negatives in zip(rows, filtered.negatives):
        q = table[row["query"]]
        floor = min(float(table[p.strip()] @ q) for p in row["pos"]) + 0.05
        assert all(float(table[t.strip()] @ q) <= floor + 1e-6 for t in negatives)
    assert sum(map(len, filtered.negatives)) < sum(map(len, plain.negatives))


def test_indices_mine_a_share_but_encode_everything():
    table = _vectors()
    rows = _rows(table)
    config = MiningConfig(range=(2, 30), negative_number=5, seed=3, show_progress=False)
    full = HardNegativeMiner(TableEncoder(table), config).mine(rows)
    encoder = TableEncoder(table)
    part = HardNegativeMiner(encoder, config).mine(rows, indices=range(20, 40))
    assert part.negatives == full.negatives[20:40]
    assert encoder.calls[0] == (len(rows), True)


def test_search_blocks_change_nothing():
    """Results are consumed one block of ``search_batch_size`` queries at a time (bounded
    memory): blocks that do not divide the rows, with and without ``indices``, give the
    one-block negatives."""
    table = _vectors()
    rows = _rows(table)
    one = MiningConfig(range=(2, 30), negative_number=5, seed=3, false_negative_margin=0.0, show_progress=False)
    blocks = MiningConfig(range=(2, 30), negative_number=5, seed=3, false_negative_margin=0.0, show_progress=False, search_batch_size=7)
    full = HardNegativeMiner(TableEncoder(table), one).mine(rows)
    chunked = HardNegativeMiner(TableEncoder(table), blocks).mine(rows)
    assert chunked.negatives == full.negatives
    assert (chunked.short_rows, chunked.dropped_false_negatives) == (full.short_rows, full.dropped_false_negatives)
    part = HardNegativeMiner(TableEncoder(table), blocks).mine(rows, indices=range(11, 53))
    assert part.negatives == full.negatives[11:53]


def test_seed_changes_the_sample():
    table = _vectors()
    rows = _rows(table)
    a = HardNegativeMiner(TableEncoder(table), MiningConfig(range=(2, 60), negative_number=5, seed=0, show_progress=False)).mine(rows)
    b = HardNegativeMiner(TableEncoder(table), MiningConfig(range=(2, 60), negative_number=5, seed=1, show_progress=False)).mine(rows)
    assert a.negatives != b.negatives


def test_ivf_index_finds_candidates_in_range():
    table = _vectors()
    rows = _rows(table)
    config = MiningConfig(range=(2, 20), negative_number=4, index="ivf", nlist=8, nprobe=8, show_progress=False)
    result = HardNegativeMiner(TableEncoder(table), config).mine(rows)
    pool = candidate_pool(rows)
    for row, negatives in zip(rows, result.negatives):
        ranking = _true_ranking(table, pool, row["query"])
        assert len(negatives) == 4
        assert set(negatives) <= set(ranking[2:20])  # nprobe = nlist: exact


def test_config_validation():
    with pytest.raises(ValueError, match="range"):
        MiningConfig(range=(5, 5))
    with pytest.raises(ValueError, match="negative_number"):
        MiningConfig(negative_number=0)
    with pytest.raises(ValueError, match="index"):
        MiningConfig(index="hnsw")  # type: ignore[arg-type]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_mine_jsonl_is_deterministic_keeps_fields_and_uses_instructions(tmp_path: Path):
    table = _vectors()
    rows = _rows(table)
    for i, row in enumerate(rows):
        row["type"] = "retrieval"
        row["id"] = i
    rows[0]["prompt"] = "I:"
    src = _write(tmp_path / "train.jsonl", rows)
    config = MiningConfig(range=(2, 50), negative_number=7, seed=0, query_instruction="I:", show_progress=False)
    encoder = TableEncoder(table)
    mine_jsonl(encoder, str(src), tmp_path / "a.jsonl", config)
    mine_jsonl(TableEncoder(table), str(src), tmp_path / "b.jsonl", config)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert all(t.startswith("I:") for t in encoder.query_texts)
    out = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text("utf-8").splitlines()]
    assert len(out) == len(rows)
    for original, written in zip(rows, out):
        assert written["query"] == original["query"] and written["id"] == original["id"]
        assert written["pos"] == original["pos"] and written["type"] == "retrieval"
        assert len(written["neg"]) == 7 and written["neg"] != original["neg"]
    assert out[0]["prompt"] == "I:"
    assert not list(tmp_path.glob(".*.tmp")), "temporary file renamed away"


def test_candidate_pool_file_and_embedding_cache(tmp_path: Path):
    table = _vectors()
    rows = _rows(table)[:10]
    src = _write(tmp_path / "train.jsonl", rows)
    corpus = _write(tmp_path / "corpus.jsonl", [{"text": f"p{i:03d}"} for i in range(100, 300)])
    config = MiningConfig(range=(0, 30), negative_number=5, show_progress=False)
    first = TableEncoder(table)
    cache = EmbeddingCache(tmp_path / "cache", model_key="table-v1")
    result = mine_jsonl(first, str(src), tmp_path / "out.jsonl", config, candidate_pool_files=str(corpus), cache=cache)
    assert result.pool_size == 200
    assert first.calls == [(10, True), (200, False)]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    second = TableEncoder(table)
    mine_jsonl(second, str(src), tmp_path / "out2.jsonl", config, candidate_pool_files=str(corpus), cache=cache)
    assert second.calls == [], "both sides read from the cache"
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "out2.jsonl").read_bytes()
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        assert all(100 <= int(t[1:]) < 300 for t in json.loads(line)["neg"])
    other = EmbeddingCache(tmp_path / "cache", model_key="table-v2")
    assert other.key(["a"], True) != cache.key(["a"], True) != cache.key(["a"], False)


def test_bad_rows_name_file_line_and_field(tmp_path: Path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"query": "q000", "pos": ["p001"]}\n{"query": "q001"}\n', encoding="utf-8")
    table = _vectors()
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: field 'pos'"):
        mine_jsonl(TableEncoder(table), str(src), tmp_path / "out.jsonl", MiningConfig(show_progress=False))
    assert not (tmp_path / "out.jsonl").exists()
    result = mine_jsonl(
        TableEncoder(table), str(src), tmp_path / "out.jsonl", MiningConfig(range=(0, 2), show_progress=False), on_bad_row="skip"
    )
    assert len(result.negatives) == 1


def test_pool_scope_file_keeps_negatives_inside_each_file(tmp_path: Path):
    table = _vectors()
    rows = _rows(table)
    _write(tmp_path / "a.jsonl", rows[:30])
    _write(tmp_path / "b.jsonl", rows[30:])
    config = MiningConfig(range=(0, 40), negative_number=5, show_progress=False)
    result = mine_jsonl(TableEncoder(table), str(tmp_path), tmp_path / "out" / "file.jsonl", config)
    written = [json.loads(line) for line in (tmp_path / "out" / "file.jsonl").read_text().splitlines()]
    assert [w["query"] for w in written] == [r["query"] for r in rows]
    assert result.pool_size == len(candidate_pool(rows[:30])) + len(candidate_pool(rows[30:]))
    for part in (slice(0, 30), slice(30, 60)):
        texts = {t.strip() for t in candidate_pool(rows[part])}
        assert all(n.strip() in texts for w in written[part] for n in w["neg"])
    mine_jsonl(TableEncoder(table), str(tmp_path), tmp_path / "out" / "all.jsonl", config, pool_scope="all")
    mixed = [json.loads(line) for line in (tmp_path / "out" / "all.jsonl").read_text().splitlines()]
    texts_b = {t.strip() for t in candidate_pool(rows[30:])} - {t.strip() for t in candidate_pool(rows[:30])}
    assert any(n.strip() in texts_b for w in mixed[:30] for n in w["neg"])
