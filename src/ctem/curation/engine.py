"""Curation as datatrove pipeline stages: one process, N local worker processes, the same output.

``curate`` cuts its input into ``tasks`` contiguous line ranges (``plan_segments``: byte
ranges cut at line starts, in input order) and runs three stages, each a datatrove
``LocalPipelineExecutor`` (``workers`` tasks at once, each in its own process; 1 worker runs
every task in this process). A stage starts when every task of the previous one is done:

1. ``SignPairs`` (one task per range): validate each row, decontaminate it, and write each
   (query, positive) pair's normalised digests and MinHash LSH band keys (``minhash``) to
   ``sign/<task>.npz``, with the task's bad and contaminated rows.
2. ``DecidePairs`` (one task): read every task's pairs in input order and decide which are
   exact or near duplicates (``duplicate_reasons``), with ``PairDeduplicator``'s keep-first
   semantics over the whole stream (a pair is a near duplicate of an earlier *kept* pair when
   both its query and its positive match that pair's). The decisions are a few integers per
   pair, computed by sorting (memory: the band keys, about 300 bytes per pair).
3. ``WritePairs`` (one task per range): read the rows again, score the kept pairs, write the
   task's part of each output file and of the report.

``curate`` then concatenates the parts in order and merges the reports. Every intermediate
file lives in ``work_dir`` (inside ``curate``'s staging folder). Tasks and workers change
how the work is cut, never the result: the output files and report counts equal those of
one task.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

import multiprocess
import numpy as np
from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from ctem.curation.decontaminate import Decontaminator
from ctem.curation.dedup import EXACT_DUPLICATE, NEAR_DUPLICATE
from ctem.curation.minhash import KEY_BYTES, MinHasher, band_keys, lsh_bands
from ctem.curation.textnorm import TextNormalizer, text_digest
from ctem.errors import CtemInputError
from ctem.rows import DataFormatError, RowLocation, check_row, iter_jsonl_lines, parse_jsonl_line

# A pair's decision (``duplicate_reasons``): kept so far, or the duplicate reason's index.
KEPT, EXACT, NEAR = 0, 1, 2
DUPLICATE_REASONS = {EXACT: EXACT_DUPLICATE, NEAR: NEAR_DUPLICATE}
# Row status in a signed shard.
ROW_OK, ROW_CONTAMINATED, ROW_BAD = 0, 1, 2
DIGEST_BYTES = 16
# Rows whose texts are signed in one array operation.
SIGN_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class DedupSettings:
    """Which pairs count as duplicates (see ``ctem.curation.dedup``; ``conf/curate.yaml`` dedup)."""

    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    ngram: int = 3
    num_perm: int = 128
    min_chars: int = 10
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class Segment:
    """Lines of one input file: bytes ``[start, end)`` (both at line starts); the line at
    ``start`` is number ``first_line`` (1-based)."""

    file: int
    start: int
    end: int
    first_line: int


def plan_segments(files: Sequence[str], tasks: int) -> list[list[Segment]]:
    """``tasks`` lists of segments covering ``files`` in order, each about the same number of
    bytes; a cut moves forward to the next line start (so a task may get nothing)."""
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    sizes = [os.path.getsize(f) for f in files]
    total = sum(sizes)
    # global byte offset of each cut, moved to a line start of the file it falls in
    cuts = [0]
    for r in range(1, tasks):
        cuts.append(max(cuts[-1], _line_start(files, sizes, r * total // tasks)))
    cuts.append(total)
    starts = np.cumsum([0, *sizes])
    plan: list[list[Segment]] = [[] for _ in range(tasks)]
    lines_before: dict[tuple[int, int], int] = {}
    for r in range(tasks):
        lo, hi = cuts[r], cuts[r + 1]
        for f, path in enumerate(files):
            a, b = max(lo, starts[f]) - starts[f], min(hi, starts[f + 1]) - starts[f]
            if a < b:
                plan[r].append(Segment(f, int(a), int(b), _count_lines(path, int(a), lines_before, f) + 1))
    return plan


def _line_start(files: Sequence[str], sizes: Sequence[int], offset: int) -> int:
    """The global offset of the first line start at or after global ``offset``."""
    base = 0
    for path, size in zip(files, sizes):
        if offset < base + size:
            local = offset - base
            if local == 0:
                return offset
            with open(path, "rb") as handle:
                handle.seek(local - 1)  # a line starts at ``local`` when the byte before is a newline
                position = local - 1
                while chunk := handle.read(1 << 16):
                    newline = chunk.find(b"\n")
                    if newline >= 0:
                        return base + position + newline + 1
                    position += len(chunk)
            return base + size
        base += size
    return base


def _count_lines(path: str, offset: int, memo: dict[tuple[int, int], int], file: int) -> int:
    """Newlines in ``path`` before byte ``offset`` (counted on from the last offset asked)."""
    done = [o for (f, o) in memo if f == file and o <= offset]
    start = max(done, default=0)
    count = memo.get((file, start), 0)
    with open(path, "rb") as handle:
        handle.seek(start)
        left = offset - start
        while left > 0 and (chunk := handle.read(min(left, 1 << 20))):
            count += chunk.count(b"\n")
            left -= len(chunk)
    memo[(file, offset)] = count
    return count


def segment_rows(path: str, segment: Segment, validate: Callable[[Any, str], dict[str, Any]]) -> Iterator[dict[str, Any] | DataFormatError]:
    """Each non-blank line of ``segment`` validated into a row (with ``source`` and ``line``)
    or its ``DataFormatError``, as ``ctem.rows.iter_rows`` reads a whole file."""

    def read(raw: bytes, location: str) -> dict[str, Any]:
        return validate(parse_jsonl_line(raw, location), location)

    for number, raw in iter_jsonl_lines(path, segment.start, segment.end, segment.first_line):
        row = check_row(read, raw, RowLocation(path, number))
        yield row if isinstance(row, DataFormatError) else {**row, "source": path, "line": number}


@dataclass
class CurationPlan:
    """What every stage reads: the inputs and their cut, the checks and where files go."""

    files: list[str]
    segments: list[list[Segment]]
    work_dir: str
    validate: Callable[[Any, str], dict[str, Any]]
    normalizer: TextNormalizer = field(default_factory=TextNormalizer)
    dedup: DedupSettings | None = None
    decontaminator: Decontaminator | None = None
    # stage 3: the pair scorer (built once per process by ``scorer``; ``None``: no score
    # filter), the kept scores' threshold and decimals, rows per scoring batch
    scorer: Callable[[], Any] | None = None
    threshold: float = 0.43
    score_decimals: int = 4
    rows_per_batch: int = 1024
    on_bad_row: str = "error"
    # progress bars (only where the stages run in the calling process)
    show_progress: bool = False
    # where the stages run: None, this machine (datatrove's local executor); else SLURM
    slurm: "SlurmSettings | None" = None

    @property
    def tasks(self) -> int:
        return len(self.segments)

    def path(self, *parts: str) -> Path:
        return Path(self.work_dir, *parts)


# ------------------------------------------------------------------------------ stage 1
@dataclass
class SignedShard:
    """One task's rows as stage 1 saw them.

    Attributes:
        row_status: ``[rows]`` ``ROW_OK`` / ``ROW_CONTAMINATED`` / ``ROW_BAD`` per non-blank line.
        errors: the bad rows' ``DataFormatError.record()`` in order.
        contaminated: the evaluation tasks each contaminated row overlaps, in order.
        pair_digest / query_digest / positive_digest: ``[pairs, 16]`` uint8 digests of the
            normalised pair, query and positive of each pair of the ``ROW_OK`` rows.
        query_keys / positive_keys: ``[pairs, bands, 16]`` uint8 LSH band keys (zeros where
            ``query_signed`` / ``positive_signed`` is false: a text under ``min_chars``).
    """

    row_status: np.ndarray
    errors: list[dict[str, Any]]
    contaminated: list[list[str]]
    pair_digest: np.ndarray
    query_digest: np.ndarray
    positive_digest: np.ndarray
    query_keys: np.ndarray
    positive_keys: np.ndarray
    query_signed: np.ndarray
    positive_signed: np.ndarray

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in ARRAY_FIELDS}
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        path.with_suffix(".pkl").write_bytes(pickle.dumps((self.errors, self.contaminated)))

    @classmethod
    def load_rows(cls, path: Path) -> "SignedShard":
        """The shard saved at ``path`` without its pair arrays (``None``): its rows' status,
        errors and contamination, what stage 3 reads."""
        errors, contaminated = pickle.loads(path.with_suffix(".pkl").read_bytes())
        with np.load(path) as data:
            values = {k: data[k] if k == "row_status" else None for k in ARRAY_FIELDS}
        return cls(errors=errors, contaminated=contaminated, **values)


ARRAY_FIELDS = ("row_status", "pair_digest", "query_digest", "positive_digest", "query_keys", "positive_keys", "query_signed", "positive_signed")


class PairSigner:
    """Digests and band keys of pairs, a block of rows at a time (``SignedShard`` arrays)."""

    def __init__(self, normalizer: TextNormalizer, dedup: DedupSettings | None) -> None:
        self.normalizer = normalizer
        self.dedup = dedup
        self.near = dedup is not None and dedup.near
        self.bands, self.rows_per_band = lsh_bands(dedup.threshold, dedup.num_perm) if self.near else (0, 0)
        self.hasher = MinHasher(dedup.num_perm, dedup.seed) if self.near else None
        self._blocks: list[dict[str, np.ndarray]] = []

    def add_block(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Digests (and, for near deduplication, band keys) of ``(query, positive)`` pairs."""
        queries = [self.normalizer(q) for q, _ in pairs]
        positives = [self.normalizer(p) for _, p in pairs]
        block = {
            "pair_digest": _digests([text_digest(q, p) for q, p in zip(queries, positives)]),
            "query_digest": _digests([text_digest(q) for q in queries]),
            "positive_digest": _digests([text_digest(p) for p in positives]),
        }
        for side, texts in (("query", queries), ("positive", positives)):
            block[f"{side}_keys"], block[f"{side}_signed"] = self._keys(texts)
        self._blocks.append(block)

    def _keys(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        signed = np.array([self.near and len(t) >= self.dedup.min_chars for t in texts], dtype=bool)
        keys = np.zeros((len(texts), self.bands, KEY_BYTES), dtype=np.uint8)
        if signed.any():
            # a query repeated over a row's positives is signed once
            distinct = {t: None for t, s in zip(texts, signed) if s}
            order = list(distinct)
            sigs = self.hasher.signatures([self.normalizer.shingles(t, self.dedup.ngram) for t in order])
            found = band_keys(sigs, self.bands, self.rows_per_band)
            where = {t: i for i, t in enumerate(order)}
            rows = np.flatnonzero(signed)
            keys[rows] = found[[where[texts[i]] for i in rows]]
        return keys, signed

    def arrays(self) -> dict[str, np.ndarray]:
        empty = {
            "pair_digest": np.zeros((0, DIGEST_BYTES), np.uint8),
            "query_digest": np.zeros((0, DIGEST_BYTES), np.uint8),
            "positive_digest": np.zeros((0, DIGEST_BYTES), np.uint8),
            "query_keys": np.zeros((0, self.bands, KEY_BYTES), np.uint8),
            "positive_keys": np.zeros((0, self.bands, KEY_BYTES), np.uint8),
            "query_signed": np.zeros(0, bool),
            "positive_signed": np.zeros(0, bool),
        }
        if not self._blocks:
            return empty
        # one field at a time, each block's part released as it is copied: the blocks and
        # their concatenation never coexist whole
        return {k: np.concatenate([block.pop(k) for block in self._blocks]) for k in empty}


def _digests(values: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), DIGEST_BYTES)


def sign_task(plan: CurationPlan, rank: int) -> SignedShard:
    """Stage 1 of task ``rank``: its rows' status and its pairs' digests and band keys."""
    status: list[int] = []
    errors: list[dict[str, Any]] = []
    contaminated: list[list[str]] = []
    signer = PairSigner(plan.normalizer, plan.dedup)
    pending: list[tuple[str, str]] = []
    rows_pending = 0
    for segment in plan.segments[rank]:
        for row in segment_rows(plan.files[segment.file], segment, plan.validate):
            if isinstance(row, DataFormatError):
                status.append(ROW_BAD)
                errors.append(row.record())
                continue
            tasks = plan.decontaminator.match_row(row["query"], row["pos"]) if plan.decontaminator else []
            if tasks:
                status.append(ROW_CONTAMINATED)
                contaminated.append(tasks)
                continue
            status.append(ROW_OK)
            pending.extend((row["query"], p) for p in row["pos"])
            rows_pending += 1
            if rows_pending >= SIGN_BLOCK_ROWS:
                signer.add_block(pending)
                pending, rows_pending = [], 0
    if pending:
        signer.add_block(pending)
    return SignedShard(np.array(status, dtype=np.int8), errors, contaminated, **signer.arrays())


# ------------------------------------------------------------------------------ stage 2
def _void(rows: np.ndarray) -> np.ndarray:
    """``[n, k]`` uint8 rows as ``[n]`` opaque values (equal rows, equal values; sortable)."""
    rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, rows.shape[1]))).ravel()


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, group)``: a stable sort of ``keys`` and each sorted position's group number
    (equal keys, one group)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    new = np.ones(len(ordered), dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    return order, np.cumsum(new) - 1


def _pairs_within(members: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered ``(a, b)``, ``a != b``, of ``members`` in the same ``group`` (``group``
    sorted, numbered 0..g-1)."""
    sizes = np.bincount(group)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    size = sizes[group]
    src = np.repeat(members, size)
    offset = np.arange(len(src)) - np.repeat(np.cumsum(size) - size, size)
    dst = members[np.repeat(first[group], size) + offset]
    keep = src != dst
    return src[keep], dst[keep]


def _neighbours(digests: np.ndarray, keys: np.ndarray, signed: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texts and the texts they match, among the pairs ``items`` (indices into the arrays,
    which are read in place: the band keys are never copied whole). Returns
    ``(text, indptr, adjacent)``: ``text[i]`` is item ``i``'s distinct-text id, and text ``t``
    matches ``adjacent[indptr[t]:indptr[t+1]]`` (itself included): equal digests, or both
    signed and one LSH band key equal."""
    _, first, text = np.unique(_void(digests[items]), return_index=True, return_inverse=True)
    count = len(first)
    src, dst = [np.arange(count)], [np.arange(count)]
    signed_texts = first[signed[items[first]]]
    ids = text[signed_texts]
    for band in range(keys.shape[1]):
        order, group = _groups(_void(keys[items[signed_texts], band]))
        sizes = np.bincount(group)
        shared = sizes[group] > 1
        if shared.any():
            _, renumbered = np.unique(group[shared], return_inverse=True)
            a, b = _pairs_within(ids[order][shared], renumbered)
            src.append(a)
            dst.append(b)
    edges = np.unique(np.concatenate(src) * count + np.concatenate(dst))
    adjacent = edges % count
    indptr = np.searchsorted(edges // count, np.arange(count + 1))
    return text.ravel(), indptr, adjacent


def _expand(items: np.ndarray, indptr: np.ndarray, adjacent: np.ndarray, of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(item, neighbour)`` for every item and every neighbour of text ``of[item]``."""
    counts = indptr[of + 1] - indptr[of]
    item = np.repeat(items, counts)
    offset = np.arange(len(item)) - np.repeat(np.cumsum(counts) - counts, counts)
    return item, adjacent[np.repeat(indptr[of], counts) + offset]


def near_duplicates(shard: SignedShard, items: np.ndarray) -> np.ndarray:
    """``[len(items)]`` bool: pair ``items[k]`` matches an earlier kept pair of ``items``
    (query matches query AND positive matches positive), deciding pairs in order as
    ``PairDeduplicator`` does (``items`` ascending)."""
    n = len(items)
    q_text, q_ptr, q_adj = _neighbours(shard.query_digest, shard.query_keys, shard.query_signed, items)
    p_text, p_ptr, p_adj = _neighbours(shard.positive_digest, shard.positive_keys, shard.positive_signed, items)
    width = int(p_text.max(initial=0)) + 1
    # candidate (query text, positive text) combinations each pair matches ...
    k, q = _expand(np.arange(n), q_ptr, q_adj, q_text)
    k2, p = _expand(np.arange(len(k)), p_ptr, p_adj, p_text[k])
    wanted = q[k2] * width + p
    k = k[k2]
    # ... and the pairs that are those combinations
    have = q_text * width + p_text
    order = np.argsort(have, kind="stable")
    lo = np.searchsorted(have[order], wanted, side="left")
    hi = np.searchsorted(have[order], wanted, side="right")
    hits = hi - lo
    later = np.repeat(k, hits)
    offset = np.arange(len(later)) - np.repeat(np.cumsum(hits) - hits, hits)
    earlier = order[np.repeat(lo, hits) + offset]
    keep = earlier < later
    later, earlier = later[keep], earlier[keep]
    dropped = np.zeros(n, dtype=bool)
    if len(later) == 0:
        return dropped
    by = np.lexsort((earlier, later))
    later, earlier = later[by], earlier[by]
    bounds = np.flatnonzero(np.diff(later)) + 1
    for pair, candidates in zip(later[np.concatenate([[0], bounds])], np.split(earlier, bounds)):
        if not dropped[candidates].all():
            dropped[pair] = True
    return dropped


def duplicate_reasons(shard: SignedShard, dedup: DedupSettings) -> np.ndarray:
    """``[pairs]`` int8: ``KEPT``, ``EXACT`` (the normalised pair equals an earlier one's) or
    ``NEAR`` (``near_duplicates`` among the pairs not exact duplicates)."""
    reasons = np.zeros(len(shard.pair_digest), dtype=np.int8)
    if dedup.exact:
        _, first = np.unique(_void(shard.pair_digest), return_index=True)
        reasons[:] = EXACT
        reasons[first] = KEPT
    if dedup.near:
        live = np.flatnonzero(reasons == KEPT)
        reasons[live[near_duplicates(shard, live)]] = NEAR
    return reasons


def load_concatenated(paths: Sequence[Path]) -> tuple[SignedShard, list[int]]:
    """The pair arrays and row status of the signed shards at ``paths`` as one, in task order
    (errors and contamination are not read: stage 2 needs neither), and each shard's pair
    count. Read one field at a time, so the parts and the whole coexist for one field only
    (memory: about one copy of every pair's digests and band keys, ~340 bytes a pair)."""
    values: dict[str, np.ndarray] = {}
    counts: list[int] = []
    for key in ARRAY_FIELDS:
        parts = []
        for path in paths:
            with np.load(path) as data:
                parts.append(data[key])
        if key == "pair_digest":
            counts = [len(part) for part in parts]
        values[key] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        del parts
    return SignedShard(errors=[], contaminated=[], **values), counts


# ------------------------------------------------------------------------------ the steps
class CurationStep(PipelineStep):
    """A datatrove step running one stage of ``plan`` for its task (``rank``)."""

    type = "ctem-curate"

    def __init__(self, plan: CurationPlan, work: Callable[[CurationPlan, int], None]) -> None:
        super().__init__()
        self.plan = plan
        self.work = work
        self.name = work.__name__

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        self.work(self.plan, rank)


@dataclass(frozen=True)
class SlurmSettings:
    """``engine.executor=slurm``: each stage is a SLURM job array submitted with
    ``sbatch --wait`` (datatrove's ``SlurmPipelineExecutor``), one array task per curation
    task. The work folder (inside ``output_dir``) must be on a file system the nodes share."""

    partition: str | None = None
    time: str = "04:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str | None = None
    # more #SBATCH directives, e.g. {"account": "proj"}
    sbatch_args: dict[str, Any] = field(default_factory=dict)
    # a shell line run before each job (e.g. "source .venv/bin/activate"); None: the
    # submitting shell's environment is exported as is
    env_command: str | None = None


EXECUTORS = ("local", "slurm")


class StageFailed(CtemInputError):
    """A stage's tasks did not all complete (a SLURM job failed or was cancelled, for its
    resources or environment, which the user fixes): one line naming the stage's logs."""


def run_stage(plan: CurationPlan, work: Callable[[CurationPlan, int], None], tasks: int, workers: int) -> None:
    """Run ``work(plan, rank)`` for every rank in ``range(tasks)``, ``workers`` at a time, on
    datatrove's local executor (``plan.slurm`` ``None``) or as a SLURM job array (returns
    when the array has ended). Logs, stats and completion marks go to
    ``work_dir/logs/<stage>``, and so does what the stage writes to standard error
    (datatrove's log lines); progress bars in this process go to the real standard error."""
    folder = plan.path("logs", work.__name__)
    folder.mkdir(parents=True, exist_ok=True)
    steps = [CurationStep(plan, work)]
    if plan.slurm is not None:
        s = plan.slurm
        executor: LocalPipelineExecutor | SlurmPipelineExecutor = SlurmPipelineExecutor(
            steps, tasks=tasks, workers=workers, time=s.time, partition=s.partition, cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos, job_name=f"ctem-curate-{work.__name__}", env_command=s.env_command,
            sbatch_args={"wait": "", **s.sbatch_args}, logging_dir=str(folder), skip_completed=False, requeue=False,
            with_srun=False,
        )  # fmt: skip
    else:
        executor = LocalPipelineExecutor(
            steps, tasks=tasks, workers=min(workers, tasks), logging_dir=str(folder), skip_completed=False, start_method="forkserver"
        )
        # Worker processes fork from one server process that has imported curation (and
        # torch) once, instead of each importing it again.
        multiprocess.get_context("forkserver").set_forkserver_preload(["ctem.curation.pipeline"])
    with _stderr_to(folder / "stderr.log"):
        try:
            executor.run()
        except subprocess.CalledProcessError as err:
            raise StageFailed(f"stage {work.__name__}: {' '.join(map(str, err.cmd[:1]))} exited with status {err.returncode}; "
                              f"logs in {folder}") from None  # fmt: skip
    if plan.slurm is not None:
        executor.skip_completed = True  # count the completion marks the array's tasks left
        missing = executor.get_incomplete_ranks()
        if missing:
            raise StageFailed(f"stage {work.__name__}: {len(missing)} of {tasks} SLURM task(s) did not complete "
                              f"(first: {missing[0]}); logs in {folder}")  # fmt: skip


_CONSOLE: list[TextIO] = []


def console() -> TextIO:
    """Where progress bars go: the real standard error, also while a stage runs."""
    return _CONSOLE[-1] if _CONSOLE else sys.stderr


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 (and so ``sys.stderr`` and worker processes started meanwhile)
    appended to ``path``; ``console()`` keeps the real one."""
    sys.stderr.flush()
    saved = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _CONSOLE.append(os.fdopen(os.dup(saved), "w"))
    try:
        yield
    finally:
        sys.stderr.flush()
        _CONSOLE.pop().close()
        os.dup2(saved, 2)
        os.close(saved)


__all__ = [
    "CurationPlan",
    "CurationStep",
    "DedupSettings",
    "Segment",
    "SignedShard",
    "SlurmSettings",
    "StageFailed",
    "console",
    "duplicate_reasons",
    "load_concatenated",
    "near_duplicates",
    "plan_segments",
    "run_stage",
    "segment_rows",
    "sign_task",
]
