"""Removal of evaluation data from training data.

Every text of the given evaluation task folders (local C-MTEB format, see
``../shared/data/README.md``: fields ``text``, ``title``, ``sentence1``, ``sentence2``,
``query``, ``positive``, ``negative`` of every ``*.jsonl`` file) is indexed in normalised
form (exact digests) and as a MinHash signature (near duplicates). A training row is
contaminated when its query or one of its positives matches an indexed text.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ctem.rows import DataFormatError, iter_valid_rows, require_object

from ctem.curation.dedup import MinHasher, NearDuplicateIndex
from ctem.curation.textnorm import TextNormalizer, text_digest

CONTAMINATED = "contaminated"
EVAL_TEXT_FIELDS: tuple[str, ...] = ("text", "title", "sentence1", "sentence2", "query", "positive", "negative")


def is_task_dir(path: Path) -> bool:
    """A task folder holds a ``task.json`` or JSON-lines files directly."""
    return (path / "task.json").is_file() or any(path.glob("*.jsonl"))


def find_task_dirs(paths: str | Sequence[str]) -> list[Path]:
    """Task folders named in ``paths``: each path is a task folder or a folder of them."""
    if isinstance(paths, str):
        paths = [paths]
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise FileNotFoundError(f"evaluation task folder not found: {path}")
        if is_task_dir(path):
            found.append(path)
            continue
        subdirs = sorted(p for p in path.iterdir() if p.is_dir() and is_task_dir(p))
        if not subdirs:
            raise FileNotFoundError(f"{path} holds no evaluation task folders (task.json or *.jsonl)")
        found.extend(subdirs)
    return found


def task_name(task_dir: Path) -> str:
    """``name`` of the folder's ``task.json``, else the folder name."""
    meta = task_dir / "task.json"
    if meta.is_file():
        name = json.loads(meta.read_text(encoding="utf-8")).get("name")
        if isinstance(name, str) and name:
            return name
    return task_dir.name


def _task_row_texts(raw: Any, location: str, fields: Sequence[str]) -> dict[str, list[str]]:
    """``{"texts": [...]}``: the strings in ``fields`` of one evaluation row (lists flattened);
    ``DataFormatError`` naming the field for anything else."""
    row = require_object(raw, location)
    texts: list[str] = []
    for key in fields:
        value = row.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if not isinstance(item, str):
                where = f"{key}[{i}]" if isinstance(value, list) else key
                raise DataFormatError(location, where, f"expected a string, got {type(item).__name__}")
            texts.append(item)
    return {"texts": texts}


def iter_task_texts(task_dir: Path, fields: Sequence[str] = EVAL_TEXT_FIELDS) -> Iterator[str]:
    """Every text in ``fields`` of every ``*.jsonl`` file of ``task_dir`` (lists flattened),
    read with ``ctem.rows.iter_valid_rows``: a bad line raises ``DataFormatError`` naming
    file, line and field."""
    files = [str(path) for path in sorted(task_dir.glob("*.jsonl"))]
    for row in iter_valid_rows(files, partial(_task_row_texts, fields=fields)):
        yield from row["texts"]


class Decontaminator:
    """Index of evaluation texts; ``match_row`` names the tasks a training row overlaps.

    Args:
        near: also match near duplicates (MinHash LSH over n-gram shingles).
        threshold: estimated Jaccard similarity of n-gram sets that counts as near duplicate.
        ngram: characters (or words, for texts written with spaces) per n-gram.
        num_perm: MinHash permutations.
        min_chars: normalised texts shorter than this are matched exactly only.
        seed: seed of the MinHash permutations.
        normalizer: text normalisation (the same as deduplication's).
    """

    def __init__(
        self,
        near: bool = True,
        threshold: float = 0.8,
        ngram: int = 3,
        num_perm: int = 128,
        min_chars: int = 10,
        seed: int = 1,
        normalizer: TextNormalizer = TextNormalizer(),
    ) -> None:
        self.ngram = ngram
        self.min_chars = min_chars
        self.normalizer = normalizer
        self.task_sizes: dict[str, int] = {}
        self._exact: dict[bytes, set[str]] = {}
        self._hasher = MinHasher(num_perm, seed)
        self._index = NearDuplicateIndex(threshold, num_perm) if near else None
        self._near_tasks: dict[bytes, set[str]] = {}

    def add_task(self, name: str, texts: Iterable[str]) -> None:
        """Index the texts of evaluation task ``name``."""
        count = 0
        for text in texts:
            norm = self.normalizer(text)
            if not norm:
                continue
            count += 1
            digest = text_digest(norm)
            self._exact.setdefault(digest, set()).add(name)
            if self._index is None or len(norm) < self.min_chars:
                continue
            if digest not in self._near_tasks:
                self._near_tasks[digest] = set()
                self._index.insert(self._hasher.signature(self.normalizer.shingles(norm, self.ngram)), key=digest)
            self._near_tasks[digest].add(name)
        self.task_sizes[name] = self.task_sizes.get(name, 0) + count

    @classmethod
    def from_task_dirs(
        cls, paths: str | Sequence[str], fields: Sequence[str] = EVAL_TEXT_FIELDS, **kwargs
    ) -> "Decontaminator":
        """An index of every task folder in ``paths`` (see ``find_task_dirs``)."""
        index = cls(**kwargs)
        for task_dir in find_task_dirs(paths):
            index.add_task(task_name(task_dir), iter_task_texts(task_dir, fields))
        return index

    def match_text(self, text: str) -> set[str]:
        """Names of the tasks holding ``text`` exactly or as a near duplicate."""
        norm = self.normalizer(text)
        if not norm:
            return set()
        tasks = set(self._exact.get(text_digest(norm), ()))
        if self._index is not None and len(norm) >= self.min_chars:
            for key in self._index.matches(self._hasher.signature(self.normalizer.shingles(norm, self.ngram))):
                tasks |= self._near_tasks[key]
        return tasks

    def match_row(self, query: str, positives: Sequence[str]) -> list[str]:
        """Sorted names of the tasks that the query or any positive overlaps (empty: clean)."""
        tasks = self.match_text(query)
        for positive in positives:
            tasks |= self.match_text(positive)
        return sorted(tasks)
