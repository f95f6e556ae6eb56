"""Classic baseline for the dev-suite table: TF-IDF + LSA.

A ``TfidfVectorizer(analyzer=..., ngram_range=(1, 2), sublinear_tf=True, min_df=2)`` and a
``TruncatedSVD(n_components=--dim, random_state=--seed)`` are fitted on the texts of the
shared pre-training corpus of the language (``--lang``: Chinese ``zh`` with character
1-2-grams, English ``en`` with word 1-2-grams, each language's usual units); a text's embedding is its L2-normalised LSA vector. The
embeddings are scored by ctem's own evaluation code, on the same path as ``ctem-eval``
(``load_local_tasks`` -> ``CMTEBEvaluator.run`` -> ``write_task_json`` /
``write_summary``) but without query instructions (a bag of characters gains nothing
from them), so the numbers are directly comparable with ``ctem-eval`` output.

    . .venv/bin/activate
    python bench/baselines/tfidf_lsa.py [--lang zh|en] [--corpus PATH] [--tasks-dir DIR]
                                        [--output-dir DIR] [--dim 256] [--seed 0] [--max-docs N]

Defaults (relative paths are taken from the repository root; ``DATA`` is
``${CTEM_SHARED_DATA:-../shared/data}``, and ``DATA/en`` with ``--lang en``):
``--corpus DATA/train/pretrain/corpus.jsonl`` (JSON lines with a ``text`` field),
``--tasks-dir DATA/eval/cmteb-dev`` (``DATA/en/eval/mteb-en-dev``),
``--output-dir logs/baselines/tfidf_lsa`` (``tfidf_lsa_en``; git-ignored through ``logs/``).

Writes, like ``ctem-eval``, ``<output-dir>/<Task>.json`` per task and ``summary.md`` /
``summary.csv`` / ``tasks.csv`` (model name ``tfidf-lsa-<dim>``); prints one line per task,
the summary tables, and the fit and evaluation times. Bad input (missing or empty corpus,
bad rows, bad task folders) ends with one line ``tfidf_lsa: <path>: <problem>`` on stderr
and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

if TYPE_CHECKING:
    from ctem.evaluation import TaskResult

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("CTEM_SHARED_DATA", "../shared/data"))
# Per language: data folder, dev suite, n-gram units of the vectoriser, output folder.
LANGUAGES = {
    "zh": {"data": SHARED_DATA, "suite": "cmteb-dev", "analyzer": "char", "output": "tfidf_lsa"},
    "en": {"data": SHARED_DATA / "en", "suite": "mteb-en-dev", "analyzer": "word", "output": "tfidf_lsa_en"},
}
PROG = "tfidf_lsa"
# Texts per transform call (bounds the dense [batch, dim] float64 intermediate).
ENCODE_BATCH = 8192


class InputError(Exception):
    """Bad user input; the message is ``<path>: <problem>``."""


def repo_path(path: str | Path) -> Path:
    """``path`` as given if absolute, else relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else REPO / path


def read_corpus(path: Path, max_docs: int | None = None, seed: int = 0) -> list[str]:
    """The ``text`` of every JSON line of ``path``; with ``max_docs``, a seeded random
    sample of that many texts (kept in file order)."""
    from ctem.rows import (
        DataFormatError,
        iter_jsonl_lines,
        parse_jsonl_line,
        require_object,
        require_text,
    )

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    texts = []
    try:
        for number, raw in iter_jsonl_lines(str(path)):
            location = f"{path}:{number}"
            texts.append(require_text(require_object(parse_jsonl_line(raw, location), location), "text", location))
    except DataFormatError as err:
        raise InputError(str(err)) from None
    if not texts:
        raise InputError(f"{path}: empty corpus (no JSON lines)")
    if max_docs is not None and len(texts) > max_docs:
        keep = sorted(random.Random(seed).sample(range(len(texts)), max_docs))
        texts = [texts[i] for i in keep]
    return texts


class TfidfLsaEncoder:
    """1-2-gram TF-IDF (characters or words: ``analyzer``) -> TruncatedSVD -> L2 normalisation."""

    def __init__(self, dim: int = 256, seed: int = 0, analyzer: str = "char") -> None:
        self.dim = dim
        self.vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        self.svd = TruncatedSVD(n_components=dim, random_state=seed)

    def fit(self, texts: Sequence[str], source: Path) -> "TfidfLsaEncoder":
        """Fit the vectoriser and the SVD on ``texts`` (read from ``source``)."""
        try:
            tfidf = self.vectorizer.fit_transform(texts)
        except ValueError as err:  # e.g. no n-gram occurs in two documents
            raise InputError(f"{source}: {err}") from None
        n_docs, n_features = tfidf.shape
        if self.dim >= min(n_docs, n_features):
            raise InputError(
                f"{source}: {n_docs} documents x {n_features} n-grams (min_df=2) are too few "
                f"for {self.dim} SVD components; lower --dim"
            )
        self.svd.fit(tfidf)
        return self

    def __call__(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        """``encode(texts, instruction)`` -> float32 ``[N, dim]`` (``instruction`` is
        prepended when given; the baseline runs without any)."""
        prefix = instruction or ""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = [prefix + t for t in texts[start : start + ENCODE_BATCH]]
            lsa = self.svd.transform(self.vectorizer.transform(batch))
            out[start : start + len(batch)] = normalize(lsa)
        return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", choices=sorted(LANGUAGES), default="zh", help="language: data, dev suite and n-gram units (default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=None, help="JSON lines with a 'text' field (default: the language's pre-training corpus)")
    parser.add_argument("--tasks-dir", type=Path, default=None, help="folder of local task folders (default: the language's dev suite)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where results go (default: logs/baselines/tfidf_lsa[_en])")
    parser.add_argument("--dim", type=int, default=256, help="SVD components (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SVD and of --max-docs sampling (default: %(default)s)")
    parser.add_argument("--max-docs", type=int, default=None, help="fit on a random sample of this many corpus texts (default: all)")
    args = parser.parse_args(argv)
    language = LANGUAGES[args.lang]
    args.analyzer = language["analyzer"]
    args.corpus = args.corpus or language["data"] / "train" / "pretrain" / "corpus.jsonl"
    args.tasks_dir = args.tasks_dir or language["data"] / "eval" / language["suite"]
    args.output_dir = args.output_dir or Path("logs") / "baselines" / language["output"]
    if args.dim < 1:
        parser.error("--dim must be >= 1")
    if args.max_docs is not None and args.max_docs < 1:
        parser.error("--max-docs must be >= 1")
    return args


def run(args: argparse.Namespace) -> list[TaskResult]:
    """Fit the baseline, evaluate it on the tasks, write and print the results."""
    from ctem import __version__
    from ctem.evaluation import (
        CMTEBEvaluator,
        EvalSettings,
        TaskFormatError,
        load_local_tasks,
        write_summary,
        write_task_json,
    )

    corpus, tasks_dir, out_dir = repo_path(args.corpus), repo_path(args.tasks_dir), repo_path(args.output_dir)
    model_name = f"tfidf-lsa-{args.dim}"

    # Tasks first: a bad task folder fails before minutes of fitting.
    if not tasks_dir.is_dir():
        raise InputError(f"{tasks_dir}: not a directory")
    try:
        tasks = load_local_tasks(tasks_dir)
    except TaskFormatError as err:
        raise InputError(str(err)) from None
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"{tasks_dir}: {err}") from None

    start = time.perf_counter()
    texts = read_corpus(corpus, args.max_docs, args.seed)
    encoder = TfidfLsaEncoder(args.dim, args.seed, args.analyzer).fit(texts, corpus)
    fit_seconds = time.perf_counter() - start
    print(
        f"[{PROG}] fitted on {len(texts)} texts of {corpus.resolve()}: {len(encoder.vectorizer.vocabulary_)} {args.analyzer} 1-2-grams, "
        f"explained variance {encoder.svd.explained_variance_ratio_.sum():.3f}; fit time {fit_seconds:.1f}s",
        flush=True,
    )

    # The other EvalSettings defaults equal conf/eval_settings/default.yaml's (k_values 1..1000,
    # retrieval_chunk_size 1024, mrr_k 10, n_experiments 10, samples_per_label 32,
    # max_iter 100, clustering_batch_size 500, seed 42); tests/test_tfidf_baseline.py checks it.
    settings = EvalSettings(instructions=False)

    def end(result: TaskResult) -> None:
        write_task_json(result, out_dir, model_name, __version__)
        print(f"[{PROG}] {result.task:<24} {result.main_metric:<16} {100 * result.main_score:6.2f}  ({result.seconds:.1f}s)", flush=True)

    print(f"[{PROG}] query instructions: off (instructions=false)", flush=True)
    start = time.perf_counter()
    results = CMTEBEvaluator(tasks, settings).run(encoder, on_task_end=end)
    eval_seconds = time.perf_counter() - start
    print("\n" + write_summary(results, out_dir, model_name, args.dim))
    print(f"[{PROG}] fit time {fit_seconds:.1f}s, eval time {eval_seconds:.1f}s")
    print(f"[{PROG}] results in {out_dir.resolve()}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (1 with a one-line message on bad input)."""
    args = parse_args(argv)
    try:
        run(args)
    except InputError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
