"""What curation did: rows and pairs in/out per file and reason, contamination per
evaluation task, text-length distributions and the score histogram.

Saved as ``report.json`` (everything), ``report.md`` (tables) and ``score_hist.png``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ctem.curation.decontaminate import CONTAMINATED
from ctem.files import atomic_path, write_text_atomic
from ctem.curation.dedup import EXACT_DUPLICATE, NEAR_DUPLICATE

# The report's files, in the order ctem-curate puts them in place (report.json, last, marks
# a complete set of outputs).
REPORT_FILES: tuple[str, ...] = ("report.md", "score_hist.png", "report.json")
BAD_ROW = "bad_row"
LOW_SCORE = "low_score"
# Reasons in pipeline order: a row with several positives is counted under the stage that
# removed its last positive.
REASONS: tuple[str, ...] = (BAD_ROW, CONTAMINATED, EXACT_DUPLICATE, NEAR_DUPLICATE, LOW_SCORE)


@dataclass
class FileStats:
    """Counts of one input file (or of all files, ``input="total"``)."""

    input: str
    output: str | None = None
    rows_in: int = 0
    rows_out: int = 0
    pairs_in: int = 0
    pairs_out: int = 0
    rows_removed: Counter = field(default_factory=Counter)
    pairs_removed: Counter = field(default_factory=Counter)

    def add(self, other: "FileStats") -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.pairs_in += other.pairs_in
        self.pairs_out += other.pairs_out
        self.rows_removed.update(other.rows_removed)
        self.pairs_removed.update(other.pairs_removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "pairs_in": self.pairs_in,
            "pairs_out": self.pairs_out,
            "rows_removed": {r: self.rows_removed.get(r, 0) for r in REASONS},
            "pairs_removed": {r: self.pairs_removed.get(r, 0) for r in REASONS},
        }


class LengthDistribution:
    """Exact distribution of text lengths (characters), held as a count per length."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, text: str) -> None:
        self.counts[len(text)] += 1

    def summary(self, percentiles: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
        """``count``, ``mean``, ``min``, ``p<k>`` (nearest rank) and ``max``."""
        total = sum(self.counts.values())
        if total == 0:
            return {"count": 0}
        lengths = sorted(self.counts)
        cumulative = np.cumsum([self.counts[n] for n in lengths])
        out: dict[str, float] = {
            "count": total,
            "mean": round(sum(n * c for n, c in self.counts.items()) / total, 2),
            "min": lengths[0],
        }
        for p in percentiles:
            rank = max(1, int(np.ceil(p / 100 * total)))
            out[f"p{p}"] = lengths[int(np.searchsorted(cumulative, rank))]
        out["max"] = lengths[-1]
        return out


class ScoreDistribution:
    """Exact counts of pair scores rounded to ``decimals`` places, on the grid [-1, 1]."""

    def __init__(self, decimals: int = 4) -> None:
        if not 1 <= decimals <= 6:
            raise ValueError(f"score decimals must be in 1..6, got {decimals}")
        self.decimals = decimals
        self.scale = 10**decimals
        self.counts = np.zeros(2 * self.scale + 1, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, scores: np.ndarray) -> None:
        """Count ``scores`` (already rounded to ``decimals``)."""
        units = np.rint(np.clip(np.asarray(scores, dtype=np.float64), -1, 1) * self.scale).astype(np.int64)
        np.add.at(self.counts, units + self.scale, 1)

    def kept_at(self, threshold: float) -> int:
        """Pairs with score >= ``threshold``."""
        first = int(np.ceil(round(threshold * self.scale, 6))) + self.scale
        return int(self.counts[max(first, 0) :].sum())

    def histogram(self, bin_width: float) -> tuple[list[float], list[int]]:
        """``(edges, counts)`` of bins ``[edge_k, edge_k+1)`` aligned to multiples of
        ``bin_width``, covering the observed scores."""
        width = max(1, int(round(bin_width * self.scale)))
        seen = np.nonzero(self.counts)[0] - self.scale
        if seen.size == 0:
            return [], []
        lo, hi = int(np.floor(seen[0] / width)), int(np.floor(seen[-1] / width))
        edges = [k * width / self.scale for k in range(lo, hi + 2)]
        counts = []
        for k in range(lo, hi + 1):
            start, stop = k * width + self.scale, (k + 1) * width + self.scale
            counts.append(int(self.counts[max(start, 0) : max(stop, 0)].sum()))
        return edges, counts

    def summary(self) -> dict[str, float]:
        total = self.total
        if total == 0:
            return {"count": 0}
        grid = (np.arange(self.counts.size) - self.scale) / self.scale
        seen = np.nonzero(self.counts)[0]
        cumulative = np.cumsum(self.counts)

        def quantile(q: float) -> float:
            return float(grid[int(np.searchsorted(cumulative, max(1, int(np.ceil(q * total)))))])

        return {
            "count": total,
            "mean": round(float((grid * self.counts).sum() / total), self.decimals),
            "min": float(grid[seen[0]]),
            "p10": quantile(0.10),
            "p50": quantile(0.50),
            "p90": quantile(0.90),
            "max": float(grid[seen[-1]]),
        }


@dataclass
class CurationReport:
    """Everything one curation run counted; ``save`` writes JSON, Markdown and the plot."""

    files: list[FileStats] = field(default_factory=list)
    contamination: Counter = field(default_factory=Counter)
    eval_tasks: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, LengthDistribution] = field(
        default_factory=lambda: {k: LengthDistribution() for k in ("query_in", "pos_in", "query_out", "pos_out")}
    )
    scores: ScoreDistribution | None = None
    threshold: float | None = None
    threshold_table: Sequence[float] = ()
    hist_bin_width: float = 0.02
    bad_row_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: "CurationReport") -> None:
        """Add ``other``'s contamination, length and score counts (a part of the same run's
        input; ``files`` are merged by the caller, per input file)."""
        self.contamination.update(other.contamination)
        for name, dist in other.lengths.items():
            self.lengths[name].counts.update(dist.counts)
        if self.scores is not None and other.scores is not None:
            self.scores.counts += other.scores.counts

    @property
    def total(self) -> FileStats:
        total = FileStats(input="total")
        for stats in self.files:
            total.add(stats)
        return total

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": [f.to_dict() for f in self.files],
            "total": self.total.to_dict(),
            "contamination": {
                "rows_removed_per_task": dict(sorted(self.contamination.items())),
                "eval_texts_per_task": dict(sorted(self.eval_tasks.items())),
            },
            "lengths_chars": {name: dist.summary() for name, dist in self.lengths.items()},
            "bad_row_examples": self.bad_row_examples,
            "seconds": round(self.seconds, 2),
            "settings": self.settings,
        }
        if self.scores is not None:
            edges, counts = self.scores.histogram(self.hist_bin_width)
            out["scores"] = {
                "threshold": self.threshold,
                "summary": self.scores.summary(),
                "histogram": {"edges": edges, "counts": counts},
                "pairs_kept_at_threshold": {str(t): self.scores.kept_at(t) for t in self.threshold_table},
            }
        return out

    # ------------------------------------------------------------------ text
    def table(self) -> str:
        """Rows in / removed per reason / out, per file and in total (fixed-width text)."""
        header = ["file", "rows in", *REASONS, "rows out", "kept %"]
        lines = [header]
        for stats in [*self.files, self.total]:
            name = Path(stats.input).name if stats.input != "total" else "total"
            kept = 100.0 * stats.rows_out / stats.rows_in if stats.rows_in else 0.0
            lines.append(
                [name, str(stats.rows_in), *(str(stats.rows_removed.get(r, 0)) for r in REASONS), str(stats.rows_out), f"{kept:.1f}"]
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
        return "\n".join([fmt(lines[0]), fmt(["-" * w for w in widths]), *map(fmt, lines[1:])])

    def to_markdown(self) -> str:
        data = self.to_dict()
        md = ["# Curation report", ""]
        md += ["## Rows per file and reason", "", _md_table(
            ["file", "rows in", *REASONS, "rows out", "pairs in", "pairs out"],
            [
                [Path(f["input"]).name if f["input"] != "total" else "**total**", f["rows_in"],
                 *(f["rows_removed"][r] for r in REASONS), f["rows_out"], f["pairs_in"], f["pairs_out"]]
                for f in [*data["files"], data["total"]]
            ],
        ), ""]
        md += ["Pairs removed per reason (a row with several positives can lose some of them):", "", _md_table(
            ["reason", "pairs removed"], [[r, data["total"]["pairs_removed"][r]] for r in REASONS]
        ), ""]
        if self.eval_tasks:
            md += ["## Decontamination", "", _md_table(
                ["evaluation task", "eval texts", "training rows removed"],
                [[t, n, self.contamination.get(t, 0)] for t, n in sorted(self.eval_tasks.items())],
            ), "", "A row that overlaps several tasks is counted under each.", ""]
        if self.bad_row_examples:
            md += ["## Bad rows (skipped)", "", *[f"- `{m}`" for m in self.bad_row_examples], ""]
        md += ["## Text lengths (characters)", "", _md_table(
            ["texts", "count", "mean", "min", "p50", "p90", "p99", "max"],
            [[name, *(s.get(k, "") for k in ("count", "mean", "min", "p50", "p90", "p99", "max"))]
             for name, s in data["lengths_chars"].items()],
        ), ""]
        if "scores" in data:
            scores = data["scores"]
            summary = scores["summary"]
            md += ["## Scores (cosine, pairs that reached the score filter)", "",
                   f"Threshold {scores['threshold']}; "
                   + ", ".join(f"{k} {v}" for k, v in summary.items()), "", "![score histogram](score_hist.png)", ""]
            total = summary.get("count", 0)
            md += [_md_table(
                ["threshold", "pairs kept", "kept %"],
                [[t, n, f"{100.0 * n / total:.1f}" if total else "-"] for t, n in scores["pairs_kept_at_threshold"].items()],
            ), ""]
            hist = scores["histogram"]
            md += ["Histogram:", "", _md_table(
                ["bin", "pairs"],
                [[f"[{a:.2f}, {b:.2f})", c] for a, b, c in zip(hist["edges"], hist["edges"][1:], hist["counts"])],
            ), ""]
        md += [f"Took {data['seconds']:.1f} s.", ""]
        return "\n".join(md)

    # ------------------------------------------------------------------ files
    def plot_scores(self, path: Path) -> Path | None:
        """A PNG bar chart of the score histogram with the threshold marked (None: no scores)."""
        if self.scores is None or self.scores.total == 0:
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        edges, counts = self.scores.histogram(self.hist_bin_width)
        fig = Figure(figsize=(8, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white")
        if self.threshold is not None:
            kept = self.scores.kept_at(self.threshold)
            ax.axvline(self.threshold, color="#c44e52", linestyle="--",
                       label=f"threshold {self.threshold}: {kept}/{self.scores.total} pairs kept")
            ax.legend(loc="upper left")
        ax.set_xlabel("cosine similarity of (query, positive)")
        ax.set_ylabel("pairs")
        ax.set_title("Pair scores")
        fig.tight_layout()
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            fig.savefig(handle, format="png")
        return Path(path)

    def save(self, output_dir: str | Path) -> dict[str, Path]:
        """Write ``report.md``, (with scores) ``score_hist.png`` and ``report.json``, each
        atomically, ``report.json`` last."""
        out = Path(output_dir)
        written = {"markdown": write_text_atomic(out / "report.md", self.to_markdown())}
        plot = self.plot_scores(out / "score_hist.png")
        if plot is not None:
            written["plot"] = plot
        written["json"] = write_text_atomic(out / "report.json", json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return written


def _md_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
