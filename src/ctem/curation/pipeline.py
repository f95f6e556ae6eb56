"""``curate``: decontaminate, deduplicate and score-filter C-MTP-style JSON-lines files.

Rows stream through ``datasets`` (``IterableDataset.from_generator`` over validated rows,
a per-row map for the index checks, a batched map for scoring), so memory holds the
duplicate / evaluation indexes (digests and MinHash band hashes) and one batch of rows.

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
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
from tqdm.auto import tqdm

from ctem.rows import (
    BadRowReport,
    DataFormatError,
    OnBadRow,
    check_on_bad_row,
    error_feature,
    expand_files,
    iter_rows,
    raise_or_skip,
    require_rows,
    table_row,
    validate_pair_row,
)

from ctem.curation.decontaminate import CONTAMINATED, Decontaminator
from ctem.curation.dedup import PairDeduplicator
from ctem.curation.report import BAD_ROW, LOW_SCORE, REASONS, REPORT_FILES, CurationReport, FileStats, ScoreDistribution
from ctem.curation.scoring import PairScorer
from ctem.files import OutputPathError, check_not_inputs, staged_files

log = logging.getLogger(__name__)

ROW_FEATURES = datasets.Features(
    {
        "query": datasets.Value("string"),
        "pos": datasets.Sequence(datasets.Value("string")),
        "raw": datasets.Value("string"),
        "prior_score": datasets.Value("float64"),
        "source": datasets.Value("string"),
        "line": datasets.Value("int64"),
        "error": error_feature(),
    }
)
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


def generate_rows(path: str) -> Iterator[dict[str, Any]]:
    """Rows of one JSON-lines file (``validate_curation_row``); a bad line's row holds only
    its error (``ctem.rows.table_row``)."""
    for row in iter_rows([path], validate_curation_row):
        yield table_row(row, EMPTY_ROW)


class IndexChecks:
    """Per-row map: ``reasons`` (one per positive, ``""`` = kept so far) and the evaluation
    ``tasks`` the row overlaps. Stateful: the deduplicator remembers the pairs it saw."""

    def __init__(self, decontaminator: Decontaminator | None, deduplicator: PairDeduplicator | None) -> None:
        self.decontaminator = decontaminator
        self.deduplicator = deduplicator

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["error"] is not None:
            return {"reasons": [], "tasks": []}
        query, positives = row["query"], row["pos"]
        tasks = self.decontaminator.match_row(query, positives) if self.decontaminator else []
        if tasks:
            return {"reasons": [CONTAMINATED] * len(positives), "tasks": tasks}
        reasons = [KEEP] * len(positives)
        if self.deduplicator is not None:
            reasons = [self.deduplicator.check(query, p) or KEEP for p in positives]
        return {"reasons": reasons, "tasks": []}


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


def count_lines(path: str, chunk_bytes: int = 1 << 20) -> int:
    """Newlines in ``path`` (the progress bar's total)."""
    total = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            total += chunk.count(b"\n")
    return total


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


def curate(
    input_files: str | Sequence[str],
    output_dir: str | Path,
    scorer: PairScorer | None = None,
    threshold: float = 0.43,
    score_decimals: int = 4,
    deduplicator: PairDeduplicator | None = None,
    decontaminator: Decontaminator | None = None,
    on_bad_row: OnBadRow = "error",
    rows_per_batch: int = 1024,
    hist_bin_width: float = 0.02,
    threshold_table: Sequence[float] = (),
    show_progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> CurationReport:
    """Curate ``input_files`` (paths, globs, folders) into ``output_dir`` and save the report.

    Args:
        scorer: pair scorer (``None``: no score filter, no ``score`` written).
        threshold: pairs with rounded cosine >= ``threshold`` are kept.
        score_decimals: decimals of the written and compared scores.
        deduplicator / decontaminator: the index checks (``None``: skipped).
        on_bad_row: ``error`` (stop with file:line:field) or ``skip`` (count and report).
        rows_per_batch: rows per scoring batch of the ``datasets`` map.
        hist_bin_width: width of the report's score histogram bins.
        threshold_table: thresholds for the report's "pairs kept at threshold" table.
        show_progress: a progress bar per file.
        settings: recorded as-is in the report (the run's configuration).
    Returns:
        The report (also written as ``report.json`` / ``report.md`` / ``score_hist.png``).
    """
    check_on_bad_row(on_bad_row)
    started = time.perf_counter()
    files = expand_files(input_files)
    require_rows(files)  # nothing to curate is an error, not an empty result
    out_dir = Path(output_dir)
    names = output_names(files, out_dir)
    report = CurationReport(
        scores=ScoreDistribution(score_decimals) if scorer is not None else None,
        threshold=threshold if scorer is not None else None,
        threshold_table=tuple(threshold_table),
        hist_bin_width=hist_bin_width,
        eval_tasks=dict(decontaminator.task_sizes) if decontaminator is not None else {},
        settings=settings or {},
    )
    bad_rows = BadRowReport()
    checks = IndexChecks(decontaminator, deduplicator)
    score_filter = ScoreFilter(scorer, threshold, score_decimals) if scorer is not None else None
    # Every output is written into a staging folder inside out_dir and moved into place only
    # when all are complete: an error (a bad row under on_bad_row=error, a full disk) or an
    # interrupt leaves out_dir as it was.
    with staged_files(out_dir, names) as staging:
        for source in files:
            rows = datasets.IterableDataset.from_generator(generate_rows, features=ROW_FEATURES, gen_kwargs={"path": source})
            rows = rows.map(checks)
            if score_filter is not None:
                rows = rows.map(score_filter, batched=True, batch_size=rows_per_batch)
            target, staged = out_dir / Path(source).name, staging / Path(source).name
            with tqdm(rows, total=count_lines(source), desc=Path(source).name, unit="row", disable=not show_progress) as progress:
                report.files.append(_write_rows(progress, source, target, staged, on_bad_row, bad_rows, report))
        report.bad_row_examples = bad_rows.examples
        if bad_rows.count:
            log.warning("skipped %d bad row(s) (on_bad_row=skip):\n  %s", bad_rows.count, "\n  ".join(bad_rows.examples))
        report.seconds = time.perf_counter() - started
        report.save(staging)
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
