"""``curate``: decontaminate, deduplicate and score-filter C-MTP-style JSON-lines files.

The work runs as datatrove pipeline stages (``ctem.curation.engine``) over ``tasks``
contiguous line ranges of the input, ``workers`` of them at once in their own processes
(1: all in this process); the output is the same for any number of tasks and workers.
Memory holds one task's block of rows, the evaluation index, and in the one-task decision
stage the pairs' digests and band keys (about 300 bytes per pair); no text is kept.

Per row, in this order (each stage sees only what the previous ones kept):

1. bad rows (``ctem.rows.raise_or_skip``): ``on_bad_row=error`` stops at the first with
   file:line:field; ``skip`` counts and logs them;
2. decontamination: the row is dropped when its query or a positive matches an evaluation text;
3. exact, then near deduplication of each (query, positive) pair, keeping the first (a pair
   is a duplicate when its query and its positive both repeat one earlier kept pair's);
4. scoring: each remaining pair gets its cosine; pairs below ``threshold`` are dropped.

A row is written when at least one positive survives: unchanged except that removed
positives leave ``pos`` and ``score`` (the lowest kept pair score, rounded) is set. Output
files keep the input names. They and the report are written into a hidden staging folder
inside the output folder and moved into place together when all are complete
(``ctem.files.staged_files``, ``report.json`` last), so any error (a bad row under
``on_bad_row=error``, a full disk) or interrupt leaves the output folder as it was: no new
file, and the previous run's set intact. Running ``curate`` again on
its output with the same settings writes the same bytes: kept pairs are neither duplicates
nor contaminated, and scores are recomputed exactly (see ``PairScorer``).
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from ctem.rows import (
    BadRowReport,
    DataFormatError,
    OnBadRow,
    check_on_bad_row,
    expand_files,
    raise_or_skip,
    require_rows,
    table_row,
    validate_pair_row,
)

from ctem.curation.decontaminate import CONTAMINATED, Decontaminator
from ctem.curation.engine import (
    DUPLICATE_REASONS,
    ROW_BAD,
    ROW_CONTAMINATED,
    CurationPlan,
    DedupSettings,
    Segment,
    SignedShard,
    SlurmSettings,
    console,
    duplicate_reasons,
    load_concatenated,
    plan_segments,
    run_stage,
    segment_rows,
    sign_task,
)
from ctem.curation.report import BAD_ROW, LOW_SCORE, REASONS, REPORT_FILES, CurationReport, FileStats, ScoreDistribution
from ctem.curation.scoring import PairScorer
from ctem.curation.textnorm import TextNormalizer
from ctem.files import OutputPathError, check_not_inputs, staged_files

log = logging.getLogger(__name__)

# The columns of a bad row (its ``error`` holds the record, see ``ctem.rows.table_row``).
EMPTY_ROW = {"query": "", "pos": [], "raw": "", "prior_score": None, "source": None, "line": None}
KEEP = ""
# What the error for a bad row adds after the message.
SKIP_NOTE = "on_bad_row=skip skips and counts bad rows"


def validate_curation_row(value: Any, location: str) -> dict[str, Any]:
    """A training row as curation keeps it: validated ``query`` / ``pos``, the row's JSON
    (``raw``, written back with its ``pos`` and ``score`` updated) and its numeric ``score``
    if any (``prior_score``)."""
    row = validate_pair_row(value, location)
    prior = value.get("score")
    if isinstance(prior, bool) or not isinstance(prior, (int, float)):
        prior = None
    return {"query": row["query"], "pos": row["pos"], "raw": json.dumps(value, ensure_ascii=False), "prior_score": prior}


class ScoreFilter:
    """Batched map: ``scores`` (rounded cosine per positive, ``None`` where not scored) and
    ``low_score`` reasons for pairs below ``threshold``.

    A row's existing ``score`` (``prior_score``) is kept for a pair whose recomputed cosine
    lies within one unit of the last decimal of it: float32 kernels can change an embedding
    in its last bits when batch shapes change, and such noise must not flip a rounded score
    (or a threshold decision) when curated output is curated again. Any other scorer or
    setting gives scores that differ by far more and are written instead.
    """

    def __init__(self, scorer: PairScorer, threshold: float, decimals: int) -> None:
        self.scorer = scorer
        self.threshold = threshold
        self.decimals = decimals
        self.unit = 10.0**-decimals

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        where = [
            (i, j)
            for i, reasons in enumerate(batch["reasons"])
            for j, reason in enumerate(reasons)
            if reason == KEEP
        ]
        values = self.scorer.score([batch["query"][i] for i, _ in where], [batch["pos"][i][j] for i, j in where])
        scores: list[list[float | None]] = [[None] * len(r) for r in batch["reasons"]]
        reasons = [list(r) for r in batch["reasons"]]
        for (i, j), value in zip(where, values):
            prior = batch["prior_score"][i]
            stable = prior is not None and abs(float(value) - prior) <= self.unit
            score = prior if stable else round(float(value), self.decimals)
            scores[i][j] = score
            if score < self.threshold:
                reasons[i][j] = LOW_SCORE
        return {"scores": scores, "reasons": reasons}


def output_names(files: Sequence[str], output_dir: Path) -> list[str]:
    """The names of the outputs, in the order they are put in place: ``<input name>`` per
    file, then the report (``report.json`` last, the mark of a complete set). Refuses name
    clashes (``OutputPathError``) and an output that is an input."""
    names = [Path(f).name for f in files]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise OutputPathError(f"input files share the names {clashes}; curate them into separate output_dir folders")
    names += list(REPORT_FILES)
    check_not_inputs([output_dir / name for name in names], files)
    return names


# ------------------------------------------------------------------------------ stages
# (run, scorer) of the last run this process scored for. A run is named by its work folder
# (a fresh temporary folder per ``curate`` call, and the same in every worker, which gets
# its own copy of the plan per task). An ``id()`` of the builder is no key: a later call's
# builder can get a freed one's id and would silently score with the old model.
_LAST_SCORER: list[tuple[str, PairScorer]] = []


def _scorer(plan: CurationPlan) -> PairScorer:
    """The plan's scorer, built once per process and run."""
    if not _LAST_SCORER or _LAST_SCORER[0][0] != plan.work_dir:
        _LAST_SCORER[:] = [(plan.work_dir, plan.scorer())]
    return _LAST_SCORER[0][1]


def _shard_path(plan: CurationPlan, stage: str, rank: int, suffix: str) -> Path:
    return plan.path(stage, f"{rank:05d}{suffix}")


def sign(plan: CurationPlan, rank: int) -> None:
    """Stage 1: task ``rank``'s rows checked and its pairs signed (``engine.sign_task``)."""
    sign_task(plan, rank).save(_shard_path(plan, "sign", rank, ".npz"))


def decide(plan: CurationPlan, rank: int) -> None:
    """Stage 2 (one task): every pair's duplicate decision, saved per task of stage 1."""
    shard, counts = load_concatenated([_shard_path(plan, "sign", r, ".npz") for r in range(plan.tasks)])
    reasons = duplicate_reasons(shard, plan.dedup)
    del shard
    bounds = np.cumsum(counts)[:-1]
    for r, part in enumerate(np.split(reasons, bounds)):
        path = _shard_path(plan, "decide", r, ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, part)


def _checked_rows(plan: CurationPlan, rank: int) -> Iterator[tuple[Segment, Iterator[dict[str, Any]]]]:
    """Task ``rank``'s rows per segment, each with ``reasons`` per positive (``KEEP`` = kept
    so far) and the evaluation ``tasks`` it overlaps, from stages 1 and 2."""
    shard = SignedShard.load_rows(_shard_path(plan, "sign", rank, ".npz"))
    decided = _shard_path(plan, "decide", rank, ".npy")
    reasons = np.load(decided) if decided.exists() else None
    contaminated = iter(shard.contaminated)
    cursor = {"row": 0, "pair": 0}

    def rows(segment: Segment) -> Iterator[dict[str, Any]]:
        for row in segment_rows(plan.files[segment.file], segment, plan.validate):
            status = int(shard.row_status[cursor["row"]])
            cursor["row"] += 1
            out = table_row(row, EMPTY_ROW)
            if status == ROW_BAD:
                out.update(reasons=[], tasks=[])
            elif status == ROW_CONTAMINATED:
                out.update(reasons=[CONTAMINATED] * len(row["pos"]), tasks=next(contaminated))
            else:
                start = cursor["pair"]
                cursor["pair"] += len(row["pos"])
                codes = reasons[start : cursor["pair"]] if reasons is not None else [0] * len(row["pos"])
                out.update(reasons=[DUPLICATE_REASONS.get(int(c), KEEP) for c in codes], tasks=[])
            yield out

    for segment in plan.segments[rank]:
        yield segment, rows(segment)


def _batched(rows: Iterator[dict[str, Any]], size: int, apply: Callable[[dict[str, list]], dict[str, list]]) -> Iterator[dict[str, Any]]:
    """``rows`` with the columns ``apply`` computes on batches of ``size`` rows added."""
    while True:
        block = [row for _, row in zip(range(size), rows)]
        if not block:
            return
        columns = apply({key: [row[key] for row in block] for key in block[0]})
        for i, row in enumerate(block):
            yield {**row, **{key: values[i] for key, values in columns.items()}}


def write(plan: CurationPlan, rank: int) -> None:
    """Stage 3: task ``rank``'s kept rows scored and written to its part of each output
    file, with its part of the report (``.report.pkl``)."""
    report = CurationReport(scores=ScoreDistribution(plan.score_decimals) if plan.scorer is not None else None)
    bad_rows = BadRowReport()
    score_filter = ScoreFilter(_scorer(plan), plan.threshold, plan.score_decimals) if plan.scorer is not None else None
    for segment, rows in _checked_rows(plan, rank):
        if score_filter is not None:
            rows = _batched(rows, plan.rows_per_batch, score_filter)
        source = plan.files[segment.file]
        part = _shard_path(plan, "write", rank, f".{segment.file}.jsonl")
        part.parent.mkdir(parents=True, exist_ok=True)
        with tqdm(rows, desc=Path(source).name, unit="row", disable=not plan.show_progress, file=console()) as progress:
            report.files.append(_write_rows(progress, source, Path(source), part, plan.on_bad_row, bad_rows, report))
    _shard_path(plan, "write", rank, ".report.pkl").write_bytes(pickle.dumps((report, bad_rows)))


def _first_bad_row(plan: CurationPlan) -> DataFormatError | None:
    """The first bad row of the input (stage 1's records, in input order)."""
    for rank in range(plan.tasks):
        shard = SignedShard.load_rows(_shard_path(plan, "sign", rank, ".npz"))
        if shard.errors:
            return DataFormatError.from_record(shard.errors[0])
    return None


def curate(
    input_files: str | Sequence[str],
    output_dir: str | Path,
    scorer: PairScorer | Callable[[], PairScorer] | None = None,
    threshold: float = 0.43,
    score_decimals: int = 4,
    dedup: DedupSettings | None = None,
    decontaminator: Decontaminator | None = None,
    normalizer: TextNormalizer = TextNormalizer(),
    on_bad_row: OnBadRow = "error",
    rows_per_batch: int = 1024,
    hist_bin_width: float = 0.02,
    threshold_table: Sequence[float] = (),
    show_progress: bool = True,
    settings: dict[str, Any] | None = None,
    tasks: int | None = None,
    workers: int = 1,
    slurm: SlurmSettings | None = None,
) -> CurationReport:
    """Curate ``input_files`` (paths, globs, folders) into ``output_dir`` and save the report.

    Args:
        scorer: pair scorer, or a function building one (each process calls it once per call;
            pass a function when ``workers > 1`` to not copy a model into every process);
            ``None``: no score filter, no ``score`` written.
        threshold: pairs with rounded cosine >= ``threshold`` are kept.
        score_decimals: decimals of the written and compared scores.
        dedup: which pairs are duplicates (``None``: no deduplication).
        decontaminator: the evaluation index (``None``: no decontamination).
        normalizer: text normalisation of the duplicate checks.
        on_bad_row: ``error`` (stop with file:line:field) or ``skip`` (count and report).
        rows_per_batch: rows per scoring batch.
        hist_bin_width: width of the report's score histogram bins.
        threshold_table: thresholds for the report's "pairs kept at threshold" table.
        show_progress: a progress bar per file (when the work runs in this process).
        settings: recorded as-is in the report (the run's configuration).
        tasks: contiguous line ranges the input is cut into (default: ``workers``).
        workers: tasks run at once, each in its own process (1: in this process; with
            ``slurm``, SLURM array tasks at once).
        slurm: run each stage as a SLURM job array (``None``: on this machine).
    Returns:
        The report (also written as ``report.json`` / ``report.md`` / ``score_hist.png``).
    """
    check_on_bad_row(on_bad_row)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    started = time.perf_counter()
    files = expand_files(input_files)
    require_rows(files)  # nothing to curate is an error, not an empty result
    out_dir = Path(output_dir)
    names = output_names(files, out_dir)
    build_scorer = None
    if scorer is not None:
        build_scorer = scorer if not isinstance(scorer, PairScorer) else (lambda: scorer)
    # Every output is written into a staging folder inside out_dir and moved into place only
    # when all are complete: an error (a bad row under on_bad_row=error, a full disk) or an
    # interrupt leaves out_dir as it was.
    with staged_files(out_dir, names) as staging:
        plan = CurationPlan(
            files=files, segments=plan_segments(files, tasks or workers), work_dir=str(staging / "work"),
            validate=validate_curation_row, normalizer=normalizer, dedup=dedup, decontaminator=decontaminator,
            scorer=build_scorer, threshold=threshold, score_decimals=score_decimals, rows_per_batch=rows_per_batch,
            on_bad_row=on_bad_row, show_progress=show_progress and workers == 1 and slurm is None, slurm=slurm,
        )  # fmt: skip
        run_stage(plan, sign, plan.tasks, workers)
        if on_bad_row == "error" and (error := _first_bad_row(plan)) is not None:
            raise error.with_note(SKIP_NOTE)
        if dedup is not None and (dedup.exact or dedup.near):
            run_stage(plan, decide, 1, 1)
        try:
            run_stage(plan, write, plan.tasks, workers)
        finally:
            _LAST_SCORER.clear()  # the model is not held after the run, nor after a failed one
        report = _assemble(plan, staging, out_dir)
        report.scores = report.scores if scorer is not None else None
        report.threshold = threshold if scorer is not None else None
        report.threshold_table = tuple(threshold_table)
        report.hist_bin_width = hist_bin_width
        report.eval_tasks = dict(decontaminator.task_sizes) if decontaminator is not None else {}
        report.settings = settings or {}
        shutil.rmtree(plan.work_dir)
        report.seconds = time.perf_counter() - started
        report.save(staging)
    return report


def _assemble(plan: CurationPlan, staging: Path, out_dir: Path) -> CurationReport:
    """Each output file from the tasks' parts in order, and the tasks' reports merged."""
    parts = [pickle.loads(_shard_path(plan, "write", r, ".report.pkl").read_bytes()) for r in range(plan.tasks)]
    report = CurationReport(scores=ScoreDistribution(plan.score_decimals) if plan.scorer is not None else None)
    bad_rows = BadRowReport()
    for task_report, task_bad_rows in parts:
        report.merge(task_report)
        for example in task_bad_rows.examples:
            if len(bad_rows.examples) < bad_rows.keep:
                bad_rows.examples.append(example)
        bad_rows.count += task_bad_rows.count
    report.files = [FileStats(input=source, output=str(out_dir / Path(source).name)) for source in plan.files]
    for task_report, _ in parts:
        for stats in task_report.files:
            report.files[plan.files.index(stats.input)].add(stats)
    for index, source in enumerate(plan.files):
        with open(staging / Path(source).name, "wb") as out:
            for rank in range(plan.tasks):
                part = _shard_path(plan, "write", rank, f".{index}.jsonl")
                if part.exists():
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 20)
    report.bad_row_examples = bad_rows.examples
    if bad_rows.count:
        log.warning("skipped %d bad row(s) (on_bad_row=skip):\n  %s", bad_rows.count, "\n  ".join(bad_rows.examples))
    return report


def _write_rows(
    rows: Any,
    source: str,
    target: Path,
    staged: Path,
    on_bad_row: OnBadRow,
    bad_rows: BadRowReport,
    report: CurationReport,
) -> FileStats:
    """Consume one file's rows: count them, write kept rows to ``staged`` (``curate`` moves
    it to ``target`` once every file is done)."""
    stats = FileStats(input=source, output=str(target))
    with open(staged, "w", encoding="utf-8") as out:
        for row in rows:
            stats.rows_in += 1
            if row["error"] is not None:
                raise_or_skip(DataFormatError.from_record(row["error"]), on_bad_row, bad_rows, SKIP_NOTE)
                stats.rows_removed[BAD_ROW] += 1
                continue
            positives, reasons = row["pos"], row["reasons"]
            scores = row.get("scores") or [None] * len(positives)
            stats.pairs_in += len(positives)
            report.lengths["query_in"].add(row["query"])
            for text in positives:
                report.lengths["pos_in"].add(text)
            for task in row["tasks"]:
                report.contamination[task] += 1
            if report.scores is not None:
                report.scores.add([s for s in scores if s is not None])
            kept = [j for j, reason in enumerate(reasons) if reason == KEEP]
            for reason in reasons:
                if reason != KEEP:
                    stats.pairs_removed[reason] += 1
            if not kept:
                stats.rows_removed[max(reasons, key=REASONS.index)] += 1
                continue
            stats.rows_out += 1
            stats.pairs_out += len(kept)
            report.lengths["query_out"].add(row["query"])
            obj = json.loads(row["raw"])
            if len(kept) < len(positives):
                obj["pos"] = [positives[j] for j in kept]
            for j in kept:
                report.lengths["pos_out"].add(positives[j])
            if report.scores is not None:
                obj["score"] = min(scores[j] for j in kept)
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return stats
