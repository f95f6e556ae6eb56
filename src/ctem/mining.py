"""Hard-negative mining: embed queries and a candidate pool, search with faiss, sample negatives.

``HardNegativeMiner`` sees only an encode function (``ctem.encoding.EncodeFn``, called as
``encode(texts, is_query=...) -> [N, H]``; a :class:`ctem.TextEncoder` is wrapped in
``ctem.encoding.EncoderAdapter``) and texts; ``ctem-mine`` and the
``ctem.callbacks.HardNegativeRefresh`` callback both use it, so offline mining and refreshing
negatives during training follow one code path.

Rank range (the same slice as FlagEmbedding's ``range_for_sampling 2-200``): ``range=[lo, hi]``
keeps the search results at **0-based** ranks ``lo <= rank < hi`` of the whole pool, i.e.
1-based ranks ``lo+1`` to ``hi``; ``[2, 200]`` skips the two most similar passages (usually
the positive and a near-duplicate) and uses the next 198. Ranks count every pool entry,
positives included. Inside that slice the positives, the query itself and any text equal
to them are removed (the pool holds each text once), optionally also candidates scoring
within ``false_negative_margin`` of the positive (likely unlabeled positives); then
``negative_number`` of the rest are drawn with a per-row seeded RNG and written in rank
order. A row with fewer usable candidates gets fewer negatives: they are never padded with
positives or repeats.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch.distributed as dist
from tqdm.auto import tqdm

from ctem.distributed import RankShards
from ctem.encoder import TextEncoder
from ctem.encoding import EncodeFn, EncoderAdapter
from ctem.files import atomic_path, atomic_writer, check_not_inputs
from ctem.finite import check_finite_embeddings
from ctem.instructions import resolve_instruction
from ctem.rows import (
    BadRowReport,
    DataFormatError,
    OnBadRow,
    describe_source,
    expand_files,
    iter_valid_rows,
    no_rows,
    validate_pair_row,
)
from ctem.instructions import with_instruction
from ctem.settings import SettingError

log = logging.getLogger(__name__)

IndexType = Literal["flat", "ivf"]


@dataclass
class MiningConfig:
    """Settings of one mining pass (``conf/mining/default.yaml``, the ``mining`` node of
    ``ctem-mine`` and of the ``HardNegativeRefresh`` callback). A bad value raises
    ``SettingError`` naming it (``mining.nprobe=0: must be at least 1``).

    Args:
        range: ``[lo, hi]`` 0-based ranks to sample from, ``lo`` inclusive, ``hi`` exclusive
            (``[2, 200]`` = 1-based ranks 3..200, as BGE). The search returns ``hi`` results.
        negative_number: negatives per row (fewer when fewer usable candidates exist).
        seed: seed of the per-row sampling; equal seeds and embeddings give equal output.
        query_instruction: prepended to queries without their own ``prompt`` when encoding
            (the written rows keep the original query); text or a name such as ``bge_zh``.
        false_negative_margin: drop candidates whose score exceeds the lowest positive's
            score minus this margin (``None``: no such filter). Scores are inner products of
            the embeddings (cosine for normalised encoders).
        keep_existing: keep each row's given negatives first and mine only the rest.
        use_gpu: ``"auto"`` (faiss GPU index when faiss sees a GPU), ``True`` or ``False``.
        gpu_ids: GPUs to shard the index over (``None``: all that faiss sees; the refresh
            callback under DDP uses each rank's own GPU).
        index: ``flat`` (exact ``IndexFlatIP``) or ``ivf`` (``IndexIVFFlat``, for very large pools).
        nlist / nprobe: IVF cells and cells searched per query.
        search_batch_size: queries per faiss search call (and rows whose results are held at once).
        batch_size: texts per forward pass when the encoder is a ``TextEncoder``.
        show_progress: progress bars for encoding and search.
    """

    range: tuple[int, int] = (2, 200)
    negative_number: int = 15
    seed: int = 0
    query_instruction: str | None = None
    false_negative_margin: float | None = None
    keep_existing: bool = False
    use_gpu: bool | Literal["auto"] = "auto"
    gpu_ids: list[int] | None = None
    index: IndexType = "flat"
    nlist: int = 1024
    nprobe: int = 32
    search_batch_size: int = 1024
    batch_size: int = 64
    show_progress: bool = True

    def __post_init__(self) -> None:
        lo, hi = (int(v) for v in self.range)
        if not 0 <= lo < hi:
            raise SettingError("mining.range", [lo, hi], "must be [lo, hi] with 0 <= lo < hi")
        self.range = (lo, hi)
        self.query_instruction = resolve_instruction(self.query_instruction)
        if self.index not in ("flat", "ivf"):
            raise SettingError("mining.index", self.index, "must be flat or ivf")
        if self.use_gpu not in ("auto", True, False):
            raise SettingError("mining.use_gpu", self.use_gpu, "must be auto, true or false")
        for name in ("negative_number", "nlist", "nprobe", "search_batch_size", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(f"mining.{name}", getattr(self, name), "must be at least 1")
        if self.gpu_ids is not None:
            self.gpu_ids = [int(g) for g in self.gpu_ids]


@dataclass
class MiningResult:
    """Negatives of the mined rows (in the order asked for) and what happened."""

    negatives: list[list[str]]
    pool_size: int
    short_rows: int = 0
    dropped_false_negatives: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self, negative_number: int) -> str:
        total = sum(len(n) for n in self.negatives)
        rows = max(len(self.negatives), 1)
        return (
            f"mined {total} negatives for {len(self.negatives)} rows from a pool of {self.pool_size} "
            f"in {self.seconds:.1f}s ({total / rows:.2f} per row; {self.short_rows} row(s) got fewer "
            f"than {negative_number}; {self.dropped_false_negatives} candidate(s) dropped as likely false negatives)"
        )


# --------------------------------------------------------------------------- embedding cache
class EmbeddingCache:
    """Embeddings stored as ``<cache_dir>/<key>.npy``, keyed by model and texts.

    ``model_key`` must change whenever the model's weights do (``model_fingerprint`` gives
    one for a folder); the texts, their order and the query/passage side complete the key.
    """

    def __init__(self, cache_dir: str | os.PathLike, model_key: str) -> None:
        self.cache_dir = Path(cache_dir)
        self.model_key = model_key

    def key(self, texts: Sequence[str], is_query: bool) -> str:
        digest = hashlib.sha256()
        digest.update(f"{self.model_key}\0{'query' if is_query else 'passage'}\0{len(texts)}\0".encode())
        for text in texts:
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        return digest.hexdigest()

    def wrap(self, encode: EncodeFn) -> EncodeFn:
        """``encode`` that reads and writes this cache."""

        def cached(texts: Sequence[str], instruction: str | None = None, is_query: bool = False) -> np.ndarray:
            if instruction:
                texts = [instruction + t for t in texts]
            path = self.cache_dir / f"{self.key(texts, is_query)}.npy"
            if path.is_file():
                emb = np.load(path)
                if emb.shape[0] == len(texts):
                    log.info("embeddings of %d %s texts read from %s", len(texts), _side(is_query), path)
                    return emb
            emb = np.ascontiguousarray(encode(texts, is_query=is_query), dtype=np.float32)
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, emb)
            return emb

        return cached


def model_fingerprint(model_path: str | os.PathLike) -> str:
    """Cache key of a model: its resolved folder plus the size and mtime of every file in
    it (a hub id is used as is)."""
    root = Path(model_path)
    if not root.is_dir():
        return str(model_path)
    stats = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    return f"{root.resolve()}:{hashlib.sha256(repr(stats).encode()).hexdigest()}"


def _side(is_query: bool) -> str:
    return "query" if is_query else "passage"


# --------------------------------------------------------------------------- faiss search
def _use_faiss_gpu(config: MiningConfig, faiss: Any) -> bool:
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if config.use_gpu is True and gpus == 0:
        raise RuntimeError("use_gpu=true but faiss sees no GPU: install faiss-gpu (`pip install ctem[gpu]`)")
    return bool(config.use_gpu) and gpus > 0


def build_index(passages: np.ndarray, config: MiningConfig) -> Any:
    """A faiss inner-product index over ``passages [P, H]`` (on GPU, sharded, when asked)."""
    import faiss

    dim = passages.shape[1]
    if config.index == "ivf":
        if config.nlist > len(passages):
            raise ValueError(f"index=ivf with nlist={config.nlist} needs at least that many candidates, the pool has {len(passages)}")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, config.nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(passages)
        index.nprobe = config.nprobe
    else:
        index = faiss.IndexFlatIP(dim)
    if _use_faiss_gpu(config, faiss):
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        if config.gpu_ids is None:
            index = faiss.index_cpu_to_all_gpus(index, co=options)
        else:
            resources = [faiss.StandardGpuResources() for _ in config.gpu_ids]
            index = faiss.index_cpu_to_gpu_multiple_py(resources, index, co=options, gpus=list(config.gpu_ids))
        if config.index == "ivf":
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", config.nprobe)
    index.add(passages)
    return index


def search(index: Any, queries: np.ndarray, top_k: int, config: MiningConfig) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The queries' nearest passages in ``index`` (``build_index``), ``config.search_batch_size``
    queries at a time: ``(start, scores, ids)`` with scores and pool indices ``[block, top_k]``
    of queries ``start, start + 1, ...``, best first (index ``-1`` where the pool has fewer
    than ``top_k`` entries). One block's results are held at a time, never every query's."""
    top_k = min(top_k, index.ntotal)
    step = config.search_batch_size
    for start in tqdm(range(0, len(queries), step), desc="search", disable=not config.show_progress, leave=False):
        scores, ids = index.search(np.ascontiguousarray(queries[start : start + step], dtype=np.float32), top_k)
        yield start, scores, ids


# --------------------------------------------------------------------------- the miner
def _key(text: str) -> str:
    """Texts equal up to surrounding whitespace count as duplicates."""
    return text.strip()


def candidate_pool(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every positive and negative of ``rows``, each text once, in first-seen order."""
    seen: dict[str, str] = {}
    for row in rows:
        for text in [*row["pos"], *row.get("neg", [])]:
            seen.setdefault(_key(text), text)
    return list(seen.values())


def _dedupe(texts: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for text in texts:
        seen.setdefault(_key(text), text)
    return list(seen.values())


class HardNegativeMiner:
    """Mines hard negatives for query / positive rows (see the module docstring).

    Args:
        encoder: an ``EncodeFn`` (called as ``encode(texts, is_query=...)``) or a
            ``TextEncoder`` (encoded in ``config.batch_size`` batches). Under DDP it may be
            collective (every rank called with the same texts, each encoding a share);
            ``mine`` calls it identically on every rank.
        config: a :class:`MiningConfig`.
        cache: an :class:`EmbeddingCache` (``None``: no caching).
    """

    def __init__(
        self,
        encoder: EncodeFn | TextEncoder,
        config: MiningConfig | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.config = config or MiningConfig()
        raw: EncodeFn = encoder
        if isinstance(encoder, TextEncoder):
            raw = EncoderAdapter(
                encoder, self.config.batch_size, cache_tokenization=False, show_progress=self.config.show_progress
            )

        def encode(texts: Sequence[str], instruction: str | None = None, is_query: bool = False) -> np.ndarray:
            return check_finite_embeddings(raw(texts, instruction, is_query=is_query), "the model")  # NaN weights: refuse, never cache

        self.encode: EncodeFn = cache.wrap(encode) if cache is not None else encode

    def mine(
        self,
        rows: Sequence[dict[str, Any]],
        pool: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
    ) -> MiningResult:
        """Negatives for ``rows`` (``{"query", "pos", "neg"?, "prompt"?}``).

        ``pool``: the candidate passages (``None``: every positive and negative of ``rows``).
        ``indices``: the rows to search and sample for (``None``: all); every row's query is
        still encoded, so a collective encoder sees the same calls on every rank.
        """
        cfg = self.config
        start = time.perf_counter()
        timings: dict[str, float] = {}
        pool = _dedupe(pool) if pool is not None else candidate_pool(rows)
        if not pool:
            raise ValueError("the candidate pool is empty")
        encoded_queries = [with_instruction(r["query"], r.get("prompt"), cfg.query_instruction) for r in rows]
        q_emb = self.encode(encoded_queries, is_query=True)
        p_emb = self.encode(pool)
        timings["encode"] = time.perf_counter() - start
        positive_floor = self._positive_floor(rows, pool, q_emb, p_emb)
        queries = q_emb if indices is None else q_emb[list(indices)]  # a copy only for a shard
        indices = list(range(len(rows))) if indices is None else list(indices)
        result = MiningResult(negatives=[], pool_size=len(pool), timings=timings)
        pool_keys = [_key(text) for text in pool]
        timings["search"], tick = 0.0, time.perf_counter()
        index = build_index(np.ascontiguousarray(p_emb, dtype=np.float32), cfg) if indices else None
        del p_emb  # the index holds its own copy of the passages: this one is freed
        # each block of search results is consumed (negatives chosen) before the next is made
        for first, scores, ids in search(index, queries, cfg.range[1], cfg) if indices else ():
            timings["search"] += time.perf_counter() - tick
            for slot, row_index in enumerate(indices[first : first + len(ids)]):
                floor = None if positive_floor is None else float(positive_floor[row_index])
                negatives, dropped = self._select(
                    row_index, rows[row_index], encoded_queries[row_index], scores[slot], ids[slot], pool, pool_keys, floor
                )
                result.negatives.append(negatives)
                result.dropped_false_negatives += dropped
                result.short_rows += len(negatives) < cfg.negative_number
            tick = time.perf_counter()
        result.seconds = time.perf_counter() - start
        return result

    def _positive_floor(
        self, rows: Sequence[dict[str, Any]], pool: Sequence[str], q_emb: np.ndarray, p_emb: np.ndarray
    ) -> np.ndarray | None:
        """Per row: lowest positive score minus the margin (``None`` without a margin)."""
        margin = self.config.false_negative_margin
        if margin is None:
            return None
        where = {_key(text): i for i, text in enumerate(pool)}
        missing = _dedupe(p for r in rows for p in r["pos"] if _key(p) not in where)
        extra = self.encode(missing) if missing else np.empty((0, p_emb.shape[1]), np.float32)
        extra_where = {_key(text): i for i, text in enumerate(missing)}
        floor = np.empty(len(rows), dtype=np.float32)
        for i, row in enumerate(rows):
            vectors = [p_emb[where[_key(p)]] if _key(p) in where else extra[extra_where[_key(p)]] for p in row["pos"]]
            floor[i] = float(np.min(np.stack(vectors) @ q_emb[i])) - margin
        return floor

    def _select(
        self,
        row_index: int,
        row: dict[str, Any],
        encoded_query: str,
        scores: np.ndarray,
        ids: np.ndarray,
        pool: Sequence[str],
        pool_keys: Sequence[str],
        floor: float | None,
    ) -> tuple[list[str], int]:
        cfg = self.config
        excluded = {_key(p) for p in row["pos"]} | {_key(row["query"]), _key(encoded_query)}
        kept: list[str] = []
        if cfg.keep_existing:
            kept = [n for n in _dedupe(row.get("neg", [])) if _key(n) not in excluded][: cfg.negative_number]
            excluded |= {_key(n) for n in kept}
        lo, hi = cfg.range
        candidates: list[int] = []  # pool indices, in rank order
        dropped = 0
        window = ids[lo:hi].tolist()
        window_scores = scores[lo:hi].tolist() if floor is not None else None
        for offset, index in enumerate(window):
            if index < 0:
                break
            if pool_keys[index] in excluded:
                continue
            if window_scores is not None and window_scores[offset] > floor:
                dropped += 1
                continue
            candidates.append(index)
        need = cfg.negative_number - len(kept)
        if len(candidates) > need:
            rng = random.Random(f"{cfg.seed}:{row_index}")
            candidates = [candidates[i] for i in sorted(rng.sample(range(len(candidates)), need))]
        return kept + [pool[index] for index in candidates], dropped


# --------------------------------------------------------------------------- files
def _validate_mining_row(raw: Any, location: str) -> dict[str, Any]:
    """A pair row in normal form plus the original object (to write back unchanged)."""
    return {**validate_pair_row(raw, location), "original": raw}


def _validate_text_row(raw: Any, location: str) -> dict[str, Any]:
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, dict):
        if "text" not in raw:
            raise DataFormatError(location, "text", "missing")
        text = raw["text"]
    else:
        raise DataFormatError(location, None, f"expected {{\"text\": ...}} or a string, got {type(raw).__name__}")
    if not isinstance(text, str):
        raise DataFormatError(location, "text", f"expected a string, got {type(text).__name__}")
    if not text.strip():
        raise DataFormatError(location, "text", "empty")
    return {"text": text}


def read_mining_rows(input_files: str | Sequence[str], on_bad_row: OnBadRow = "error") -> tuple[list[dict[str, Any]], BadRowReport]:
    """Validated rows of JSON-lines training files, each with its ``original`` object."""
    report = BadRowReport()
    files = expand_files(input_files if isinstance(input_files, str) else list(input_files))
    rows = list(iter_valid_rows(files, _validate_mining_row, on_bad_row, report))
    return rows, report


def read_candidate_pool(pool_files: str | Sequence[str], on_bad_row: OnBadRow = "error") -> tuple[list[str], BadRowReport]:
    """Texts of a corpus file (``{"text": ...}`` per line, or a JSON string per line)."""
    report = BadRowReport()
    files = expand_files(pool_files if isinstance(pool_files, str) else list(pool_files))
    return [row["text"] for row in iter_valid_rows(files, _validate_text_row, on_bad_row, report)], report


def check_mining_paths(
    input_files: str | Sequence[str], output: str | os.PathLike, candidate_pool_files: str | Sequence[str] | None = None
) -> None:
    """``ctem.files.OutputPathError`` when ``output`` is one of the input or candidate-pool
    files (it would replace the data it is mined from)."""
    inputs = expand_files(input_files if isinstance(input_files, str) else list(input_files))
    if candidate_pool_files is not None:
        inputs += expand_files(candidate_pool_files if isinstance(candidate_pool_files, str) else list(candidate_pool_files))
    check_not_inputs([output], inputs)


def stale_scores_dropped(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without its teacher scores (``pos_scores`` / ``neg_scores``), which describe its old negatives."""
    return {key: value for key, value in row.items() if key not in ("pos_scores", "neg_scores")}


def write_jsonl_atomic(rows: Iterable[dict[str, Any]], output: str | os.PathLike) -> Path:
    """Write JSON lines to a temporary file beside ``output``, then rename it into place."""
    with atomic_writer(output) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(output)


def _merge(results: list[MiningResult]) -> MiningResult:
    merged = MiningResult(negatives=[], pool_size=sum(r.pool_size for r in results))
    for r in results:
        merged.negatives.extend(r.negatives)
        merged.short_rows += r.short_rows
        merged.dropped_false_negatives += r.dropped_false_negatives
        merged.seconds += r.seconds
        for name, seconds in r.timings.items():
            merged.timings[name] = merged.timings.get(name, 0.0) + seconds
    return merged


def _mine_shared(miner: HardNegativeMiner, rows: list[dict[str, Any]], pool: Sequence[str] | None, ranks: tuple[int, int]) -> MiningResult:
    """``miner.mine(rows, pool)`` with the search and sampling shared over ``ranks``
    (``(rank, world)``; every rank encodes alike): each rank takes every ``world``-th row,
    and the negatives and counts are gathered."""
    rank, world = ranks
    shards = RankShards.split(len(rows), rank, world)
    result = miner.mine(rows, pool, indices=shards.mine.tolist())
    if world == 1:
        return result
    counts: list[Any] = [None] * world
    dist.all_gather_object(counts, (result.short_rows, result.dropped_false_negatives))
    return MiningResult(
        negatives=shards.gather_objects(result.negatives),
        pool_size=result.pool_size,
        short_rows=sum(c[0] for c in counts),
        dropped_false_negatives=sum(c[1] for c in counts),
        seconds=result.seconds,
        timings=result.timings,
    )


def mine_jsonl(
    encoder: EncodeFn | TextEncoder,
    input_files: str | Sequence[str],
    output: str | os.PathLike,
    config: MiningConfig | None = None,
    candidate_pool_files: str | Sequence[str] | None = None,
    cache: EmbeddingCache | None = None,
    on_bad_row: OnBadRow = "error",
    pool_scope: Literal["file", "all"] = "file",
    write: bool = True,
    ranks: tuple[int, int] = (0, 1),
) -> MiningResult:
    """Mine negatives for the rows of ``input_files`` and write them to ``output``
    (atomically; refused when ``output`` is an input; ``write=False``: mine only, as the
    ranks but the first of a sharded run do).

    Without ``candidate_pool_files`` the pool is every positive and negative of the same
    input file (``pool_scope="file"``, in-domain negatives, as when FlagEmbedding is run per
    file) or of all input files (``"all"``). Output rows are the input objects unchanged
    except ``neg``, which holds the mined negatives (a teacher's ``pos_scores`` /
    ``neg_scores`` no longer match it and are dropped: score again with ``ctem-score``); rows skipped under
    ``on_bad_row=skip`` are left out and reported.

    ``ranks`` = ``(rank, world)`` of a sharded run (every rank calls this together, with a
    collective ``encoder``): each rank searches and samples for every ``world``-th row and
    the negatives are gathered in row order, equal to one process's.
    """
    config = config or MiningConfig()
    if pool_scope not in ("file", "all"):
        raise ValueError(f"pool_scope must be 'file' or 'all', got {pool_scope!r}")
    check_mining_paths(input_files, output, candidate_pool_files)
    rows, report = read_mining_rows(input_files, on_bad_row)
    if report.count:
        log.warning(report.summary())
    if not rows:
        raise no_rows(describe_source(input_files), report)
    miner = HardNegativeMiner(encoder, config, cache)
    if candidate_pool_files is not None:
        pool, pool_report = read_candidate_pool(candidate_pool_files, on_bad_row)
        if pool_report.count:
            log.warning("candidate pool: %s", pool_report.summary())
        if not pool:
            raise no_rows(f"candidate pool {describe_source(candidate_pool_files)}", pool_report)
        result = _mine_shared(miner, rows, pool, ranks)
    elif pool_scope == "all":
        result = _mine_shared(miner, rows, None, ranks)
    else:
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row["source"], []).append(row)
        results = []
        for source, group in groups.items():
            log.info("mining %d rows of %s", len(group), source)
            results.append(_mine_shared(miner, group, None, ranks))
        result = _merge(results)
        rows = [row for group in groups.values() for row in group]
    written = ({**stale_scores_dropped(row["original"]), "neg": negatives} for row, negatives in zip(rows, result.negatives))
    if write:
        write_jsonl_atomic(written, output)
    return result
