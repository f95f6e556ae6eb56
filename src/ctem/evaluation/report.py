"""Results on disk: one JSON per task, and the summary table in the C-Pack Table 2 layout.

Table 2 columns: Model, Dim, Retrieval, STS, Pair CLF, CLF, Re-rank, Cluster, Avg (scores
x100, two decimals). The header row carries the number of tasks per type.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ctem.evaluation.runner import TaskResult, averages
from ctem.evaluation.task_type import task_types
from ctem.evaluation.tasks import TASK_TYPES
from ctem.files import check_file_name, confined_path, write_text_atomic

# Files of the whole evaluation, beside the per-task <task>.json, in the order they are
# written (summary.csv, the one that says a set is complete, last).
SUMMARY_FILES: tuple[str, ...] = ("summary.md", "tasks.csv", "summary.csv")

# Column header of each task type (a view of the task-type registry).
TABLE2_LABELS: dict[str, str] = {t.name: t.table_label for t in task_types()}


def task_record(result: TaskResult, model: str, ctem_version: str) -> dict[str, Any]:
    """The JSON record of one task."""
    record = asdict(result)
    record.update(model=model, ctem_version=ctem_version)
    return record


def task_json_path(out_dir: str | Path, task: str) -> Path:
    """``out_dir/<task>.json``, refused (``OutputPathError``) when the name would lead
    outside ``out_dir``."""
    return confined_path(out_dir, f"{check_file_name(task, 'task name')}.json")


def write_task_json(result: TaskResult, out_dir: str | Path, model: str, ctem_version: str) -> Path:
    """Write ``out_dir/<task>.json`` (atomically)."""
    record = task_record(result, model, ctem_version)
    return write_text_atomic(task_json_path(out_dir, result.task), json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def summary_rows(results: Sequence[TaskResult], model: str, dim: int | None) -> list[list[str]]:
    """Header and one model row: Model, Dim, one column per type, Avg (x100)."""
    avg = averages(results)
    counts = {t: sum(r.type == t for r in results) for t in TASK_TYPES}
    header = ["Model", "Dim"] + [f"{TABLE2_LABELS[t]} ({counts[t]})" for t in TASK_TYPES] + [f"Avg ({len(results)})"]
    row = [model, "" if dim is None else str(dim)]
    row += [f"{100 * avg[t]:.2f}" if t in avg else "-" for t in TASK_TYPES]
    row.append(f"{100 * avg['average']:.2f}")
    return [header, row]


def task_rows(results: Sequence[TaskResult]) -> list[list[str]]:
    """Header and one row per task: Task, Type, Metric, Score (x100), Seconds."""
    rows = [["Task", "Type", "Metric", "Score", "Seconds"]]
    for r in sorted(results, key=lambda r: (TASK_TYPES.index(r.type), r.task)):
        rows.append([r.task, r.type, r.main_metric, f"{100 * r.main_score:.2f}", f"{r.seconds:.1f}"])
    return rows


def to_markdown(rows: list[list[str]]) -> str:
    """A GitHub Markdown table; the first row is the header."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[list[str]]) -> str:
    """CSV text; the first row is the header."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_summary(
    results: Sequence[TaskResult], out_dir: str | Path, model: str, dim: int | None
) -> str:
    """Write ``summary.md`` (Table 2 layout + per-task table), ``summary.csv`` and
    ``tasks.csv`` (each atomically; ``summary.csv`` last); return the Markdown text."""
    out = Path(out_dir)
    table = summary_rows(results, model, dim)
    per_task = task_rows(results)
    markdown = to_markdown(table) + "\n" + to_markdown(per_task)
    write_text_atomic(out / "summary.md", markdown)
    write_text_atomic(out / "tasks.csv", to_csv(per_task))
    write_text_atomic(out / "summary.csv", to_csv(table))
    return markdown
