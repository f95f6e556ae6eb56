"""Small labeled datasets (JSON lines) for the ``LabeledDataModule`` tests."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.tiny import sentences


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def make_rows(n: int, seed: int, task_type: str | None, negatives: int = 1) -> list[dict]:
    """``n`` rows of distinct random queries, one positive and ``negatives`` negatives."""
    texts = sentences(n * (2 + negatives), seed=seed, min_len=4)
    rows = []
    for i in range(n):
        chunk = texts[i * (2 + negatives) : (i + 1) * (2 + negatives)]
        row = {"query": f"q{seed}x{i}{chunk[0]}", "pos": [chunk[1]], "neg": chunk[2:]}
        if task_type is not None:
            row["type"] = task_type
        rows.append(row)
    return rows


def write_mixture(folder: Path, sizes: dict[str, tuple[int, str]], negatives: int = 1) -> Path:
    """``folder/<name>.jsonl`` for each ``name -> (rows, type)``; returns ``folder``."""
    for seed, (name, (n, task_type)) in enumerate(sizes.items()):
        write_rows(folder / f"{name}.jsonl", make_rows(n, seed, task_type, negatives))
    return folder
