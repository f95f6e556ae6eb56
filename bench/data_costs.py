"""How each data command's time and peak memory grow with its input (issue 22).

Synthetic pairs are built from the English pre-training corpus
(``../shared/data/en/train/pretrain/corpus.jsonl``): row ``i`` takes a query of two random
sentences and a positive of three, so rows are distinct at any size. Every command runs in
its own process under ``/usr/bin/time`` (wall seconds, the process's peak resident memory),
on a randomly initialised small BERT (2 layers, hidden 64, bert-base-uncased vocabulary):
the model's cost per text is not what is measured, the growth is. Peak memory is the
largest sum, over the command's process tree (worker processes included), of proportional
set sizes sampled every 0.2 s (pages shared by forked workers counted once), and at least
the largest single process's peak that ``/usr/bin/time`` reports.

Commands:

=============  =================================================================================
loader         the contrastive stage's data module (``data=pairs``) built and iterated once
               (tokenised batches of 256), as training reads it
curate         ``ctem-curate`` without a scorer (exact and MinHash near-duplicate removal)
curate-2w      the same with ``engine.workers=2`` (two worker processes, two tasks)
curate-score   ``ctem-curate`` with the small model as scorer
mine-flat      ``ctem-mine``, exact search (``mining.index=flat``)
mine-ivf       ``ctem-mine``, ``mining.index=ivf``
eval           ``ctem-eval`` on one retrieval task whose corpus holds every positive (1,000 queries)
=============  =================================================================================

Run::

    python bench/data_costs.py --sizes 10000 100000 1000000

It prints rows/s and peak memory per command and size, then the time per row at each size
against the size before (1.0: linear).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, TINY_BERT  # noqa: E402

SHARED = Path(os.environ.get("CTEM_SHARED_DATA", REPO / ".." / "shared" / "data")).resolve()
CORPUS = SHARED / "en" / "train" / "pretrain" / "corpus.jsonl"
VOCAB = SHARED / "en" / "vocab" / "bert-base-uncased" / "vocab.txt"
COMMANDS = ("loader", "curate", "curate-2w", "curate-score", "mine-flat", "mine-ivf", "eval")
EVAL_QUERIES = 1000

LOADER = """
import sys
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from ctem.config import config_dir, register_resolvers
from ctem.tokenization import load_tokenizer
path, vocab, cache = sys.argv[1:4]
register_resolvers()
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = compose("train", overrides=["data=pairs", f"data.train_files=[{path}]", "data.train_group_size=1",
                                      "data.batch_size=256", f"paths.data_cache_dir={cache}", "paths.output_dir=" + cache])
data = instantiate(cfg.data, tokenizer=load_tokenizer(vocab), query_max_length=64, passage_max_length=128)
data.setup("fit")
print("batches", sum(1 for _ in data.train_dataloader()))
"""


def sentences() -> list[str]:
    """The corpus's sentences (split at . ! ?), 20 characters or longer."""
    out = []
    with CORPUS.open(encoding="utf-8") as handle:
        for line in handle:
            out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s.strip()) >= 20]
    return out


def write_pairs(path: Path, n: int, pool: Sequence[str], seed: int) -> None:
    """``n`` rows ``{"query", "pos": [...]}`` drawn from ``pool``."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            query = " ".join(rng.sample(pool, 2))
            handle.write(json.dumps({"query": query, "pos": [" ".join(rng.sample(pool, 3))]}) + "\n")


def write_retrieval_task(folder: Path, pairs: Path) -> None:
    """A retrieval task: every positive of ``pairs`` is a document; the first
    ``EVAL_QUERIES`` queries ask for theirs."""
    folder.mkdir(parents=True, exist_ok=True)  # a --work folder used again: rewritten
    (folder / "task.json").write_text(json.dumps({"name": folder.name, "type": "Retrieval", "language": "en"}), encoding="utf-8")
    with pairs.open(encoding="utf-8") as rows, (folder / "corpus.jsonl").open("w", encoding="utf-8") as corpus, \
            (folder / "queries.jsonl").open("w", encoding="utf-8") as queries, (folder / "qrels.jsonl").open("w", encoding="utf-8") as qrels:
        for i, line in enumerate(rows):
            row = json.loads(line)
            corpus.write(json.dumps({"id": f"d{i}", "text": row["pos"][0]}) + "\n")
            if i < EVAL_QUERIES:
                queries.write(json.dumps({"id": f"q{i}", "text": row["query"]}) + "\n")
                qrels.write(json.dumps({"qid": f"q{i}", "pid": f"d{i}", "score": 1}) + "\n")


def small_model(folder: Path) -> Path:
    """A randomly initialised BERT (``TINY_BERT`` size) on the bert-base-uncased vocabulary."""
    import torch

    from ctem import TextEncoder

    torch.manual_seed(0)
    TextEncoder(config=dict(TINY_BERT), tokenizer=str(VOCAB), pooling="mean").save_pretrained(folder)
    return folder


def command(name: str, pairs: Path, model: Path, work: Path) -> list[str]:
    """The command line of ``name`` on ``pairs``."""
    py = [sys.executable]
    hydra = f"hydra.run.dir={work / 'hydra' / name}"
    if name == "loader":
        return [*py, "-c", LOADER, str(pairs), str(VOCAB), str(work / "cache")]
    if name.startswith("curate"):
        extra = {"curate-score": [f"scorer.model_path={model}"], "curate-2w": ["engine.workers=2"]}.get(name, [])
        return [*py, "-m", "ctem.cli.curate", f"input_files=[{pairs}]", f"output_dir={work / name}", "progress=false", *extra, hydra]
    if name.startswith("mine"):
        index = name.split("-")[1]
        return [*py, "-m", "ctem.cli.mine", f"model_path={model}", f"input={pairs}", f"output={work / name / 'mined.jsonl'}",
                "cache_dir=null", "mining.show_progress=false", f"mining.index={index}", "pool_scope=all", hydra]
    write_retrieval_task(work / "tasks" / "SyntheticRetrieval", pairs)
    return [*py, "-m", "ctem.cli.eval", f"model_path={model}", f"tasks_dir={work / 'tasks'}", f"output_dir={work / name}",
            "progress=false", hydra]


def timed(cmd: list[str], threads: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``cmd``'s process tree; stops on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "TIME %e %M", *cmd], stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        peak = tree_peak_rss(proc)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"data_costs: {' '.join(cmd[:3])} failed:\n{text[-4000:]}")
    seconds, kb = re.findall(r"TIME (\S+) (\d+)", text)[-1]
    return float(seconds), max(peak, int(kb) * 1024) / 2**20  # at least the largest single process


def tree_peak_rss(proc: subprocess.Popen, every: float = 0.2, overhead: float = 0.05) -> int:
    """The largest sum of proportional set sizes (PSS: a page shared by k processes counts
    1/k in each, so the sum is the memory the tree really holds) over ``proc`` and its
    descendants until it ends (resident sizes where PSS cannot be read), sampled every
    ``every`` seconds or, when a sample itself takes longer than ``overhead`` of that
    (the kernel walks every mapped page for ``smaps_rollup``: tens of milliseconds on a
    multi-GB process), less often, so the sampler takes at most about ``overhead`` of one
    core from the command it measures."""
    import psutil

    def held(member: psutil.Process) -> int:
        # smaps_rollup: the kernel's one-line sums (psutil's memory_full_info parses every
        # mapping of /proc/PID/smaps, which cost the sampler a quarter of a core on a
        # multi-GB process and slowed the command it measured)
        try:
            with open(f"/proc/{member.pid}/smaps_rollup", encoding="ascii") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return member.memory_info().rss

    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        started, total = time.perf_counter(), 0
        try:
            for member in [root, *root.children(recursive=True)]:
                total += held(member)
        except psutil.Error:  # a process ended while being read
            pass
        peak = max(peak, total)
        time.sleep(max(every, (time.perf_counter() - started) / overhead))
    return peak


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="folder for inputs and outputs (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work_root = args.work or Path(tempfile.mkdtemp(prefix="ctem-data-costs-"))
    pool = sentences()
    model = small_model(work_root / "model")
    print(f"[data_costs] {len(pool):,} corpus sentences; work folder {work_root}", flush=True)
    results: dict[tuple[str, int], tuple[float, float]] = {}
    print("| command | rows | seconds | rows/s | peak RSS MB |\n|---|---|---|---|---|", flush=True)
    for n in args.sizes:
        work = work_root / f"n{n}"
        work.mkdir(parents=True, exist_ok=True)
        pairs = work / "pairs.jsonl"
        write_pairs(pairs, n, pool, args.seed)
        for name in args.commands:
            seconds, mb = results[name, n] = timed(command(name, pairs, model, work), args.threads)
            print(f"| {name} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} | {mb:,.0f} |", flush=True)
    if len(args.sizes) > 1:
        print("\nTime per row against the size before (1.0: linear growth):\n| command | " +
              " | ".join(f"{b:,} / {a:,}" for a, b in zip(args.sizes, args.sizes[1:])) + " |\n|---|" + "---|" * (len(args.sizes) - 1))
        for name in args.commands:
            ratios = [(results[name, b][0] / b) / (results[name, a][0] / a) for a, b in zip(args.sizes, args.sizes[1:])]
            print(f"| {name} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
