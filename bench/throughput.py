"""Training throughput and memory of ctem against sentence-transformers and FlagEmbedding.

Every implementation trains the same model on the same batches (same texts, same order:
query, one positive, one hard negative per row) with the same batch size, maximum length,
thread count, precision and device, each in its own subprocess. Measured per run: training
samples/s over the steps after warm-up (a step's time includes tokenising its batch) and
the peak memory the steps add (CPU: peak RSS over the loaded model; CUDA:
``max_memory_allocated``). Runs are repeated round-robin over implementations and the
median is reported. Before the first timed step every run checks that dropout is on (every
``nn.Dropout`` of the model in train mode with ``p > 0``; the run fails otherwise), and the
table says so. For ctem with the gradient cache and for sentence-transformers' CachedMNRL
the script also finds the largest batch (doubling) whose step fits ``--memory-budget-mb``.

Implementations (``--impls``):
  ctem           BiEncoderModule + PairCollator under a real ``lightning.Trainer.fit``
  ctem-padded    the same with ``padding_free={"enabled": False}``: each input encoded
                 padded to the batch's longest row (ctem before padding-free encoding)
  ctem-cached    the same with ``grad_cache={"enabled": True, "chunk_size": --chunk-size}``
  torch-loop     reference: ctem's TextEncoder + PairCollator + InfoNCELoss + AdamW in a
                 plain loop (no Lightning), i.e. what the hardware does without a framework
  st-mnrl        sentence-transformers MultipleNegativesRankingLoss, manual loop (the
                 trainer's collator step ``model.preprocess`` per column, loss, AdamW)
  st-cached      sentence-transformers CachedMultipleNegativesRankingLoss
                 (``mini_batch_size = --chunk-size``), same loop
  flag           FlagEmbedding 1.4.2 ``BiEncoderOnlyEmbedderModel`` with its collator
                 ``AbsEmbedderCollator`` in the same loop, run by ``bench/.venv-flag``
                 (FlagEmbedding does not import with transformers 5; ``--setup-flag-venv``
                 creates that environment)

Quick CPU run (tiny random BERT), then MiniLM::

    python bench/throughput.py --model tiny --threads 1
    python bench/throughput.py --model minilm --threads 1 --repeats 3

See bench/README.md and docs/benchmarks.md (GPU command included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    DEFAULT_DATA_FILES,
    REPO,
    SHARED_LABELED,
    MemoryProbe,
    StepTimer,
    add_worker_arguments,
    command_line,
    emit_result,
    load_triples,
    median,
    read_rows,
    resolve_model,
    run_worker,
    write_rows,
)

IMPLS = ("ctem", "ctem-padded", "ctem-cached", "torch-loop", "st-mnrl", "st-cached", "flag")
CACHED_IMPLS = ("ctem-cached", "st-cached")
# Which ctem row each peer is compared with.
CTEM_COUNTERPART = {
    "ctem-padded": "ctem",
    "torch-loop": "ctem",
    "st-mnrl": "ctem",
    "flag": "ctem",
    "st-cached": "ctem-cached",
}
FLAG_VENV = BENCH_DIR / ".venv-flag"
# faiss-cpu: FlagEmbedding's scripts/hn_mine.py (bench/mine_speed.py, bench/finetune_compare.py) imports it.
FLAG_REQUIREMENTS = ("FlagEmbedding==1.4.2", "transformers<5", "sentence-transformers<6", "datasets<5", "faiss-cpu")


# =========================================================================== workers
def _setup_torch(args: argparse.Namespace) -> Any:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return torch


def _autocast(args: argparse.Namespace) -> Any:
    import torch

    return torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")


def _batches(args: argparse.Namespace) -> list[list[tuple[str, str, str]]]:
    """The first ``warmup + steps`` batches of the rows file."""
    rows = read_rows(args.rows)
    count = args.warmup + args.steps
    if len(rows) < count * args.batch_size:
        raise SystemExit(f"{args.rows} has {len(rows)} rows, {count} batches of {args.batch_size} need more")
    return [rows[i * args.batch_size : (i + 1) * args.batch_size] for i in range(count)]


def _padded_tokens(*token_dicts: dict[str, Any]) -> int:
    """Token positions (padding included) the encoder processes for these inputs."""
    return sum(int(t["input_ids"].numel()) for t in token_dicts)


def _real_tokens(*token_dicts: dict[str, Any]) -> int:
    return sum(int(t["attention_mask"].sum()) for t in token_dicts)


def dropout_on(model: Any) -> str:
    """Check that every ``nn.Dropout`` of ``model`` is in train mode with ``p > 0`` (raises
    otherwise, or when there is none) and describe them, e.g. ``"13 x p=0.1"``."""
    from torch import nn

    dropouts = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    off = [f"{name} (training={m.training}, p={m.p})" for name, m in dropouts if not (m.training and m.p > 0)]
    if not dropouts or off:
        raise RuntimeError(f"dropout is not on at the first timed step: {', '.join(off) or 'no nn.Dropout module'}")
    return f"{len(dropouts)} x p=" + "/".join(sorted({f"{m.p:g}" for _, m in dropouts}))


def _result(
    args: argparse.Namespace,
    timer: StepTimer,
    memory: MemoryProbe,
    tokens: list[tuple[int, int]],
    dropout: str,
    versions: dict[str, str],
) -> dict:
    """Samples/s and tokens of the timed steps, peak memory of all steps, the dropout check,
    package versions."""
    import torch
    import transformers

    seconds = timer.timed_seconds()
    steps = timer.timed_steps()
    timed = tokens[args.warmup :]
    return {
        "impl": args.worker,
        "batch_size": args.batch_size,
        "steps": steps,
        "seconds": seconds,
        "samples_per_s": args.batch_size * steps / seconds,
        "peak_mb": memory.peak_mb(),
        "process_peak_mb": memory.process_peak_mb(),
        "real_tokens_per_sample": sum(r for r, _ in timed) / max(steps * args.batch_size, 1),
        "padded_tokens_per_sample": sum(p for _, p in timed) / max(steps * args.batch_size, 1),
        "dropout": dropout,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, **versions},
    }


def _manual_loop(
    args: argparse.Namespace,
    step: Callable[[list[tuple[str, str, str]]], tuple[int, int]],
    model: Any,
) -> tuple[StepTimer, MemoryProbe, list[tuple[int, int]], str]:
    """Run ``step`` (tokenise, forward, backward; returns (real, padded) tokens) then
    an AdamW step on every batch, timing each; ``dropout_on(model)`` before the first timed step."""
    import torch

    batches = _batches(args)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    timer, memory = StepTimer(args.warmup, args.device), MemoryProbe(args.device)
    tokens = []
    dropout = ""
    memory.start()
    timer.start()
    for index, batch in enumerate(batches):
        if index == args.warmup:
            dropout = dropout_on(model)
        tokens.append(step(batch))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.mark()
    return timer, memory, tokens, dropout


def worker_ctem(args: argparse.Namespace, cached: bool, padding_free: bool = True) -> dict:
    """ctem's real training path: BiEncoderModule under ``lightning.Trainer.fit``."""
    _setup_torch(args)
    import lightning as L
    from torch.utils.data import DataLoader

    from ctem.encoder import TextEncoder
    from ctem.losses import InfoNCELoss
    from ctem.modules.bi_encoder import BiEncoderModule
    from ctem.data_modules.pairs import PairCollator

    encoder = TextEncoder.from_pretrained(
        args.model, pooling="mean", normalize=True, query_max_length=args.max_length, passage_max_length=args.max_length
    )
    module = BiEncoderModule(
        encoder,
        InfoNCELoss(temperature=args.temperature),
        optimizer={"lr": args.lr, "scheduler": "constant_with_warmup", "warmup_steps": 0},
        grad_cache={"enabled": cached, "chunk_size": args.chunk_size},
        padding_free={"enabled": padding_free},
    )
    samples = [{"query": q, "passages": [p, n]} for batch in _batches(args) for q, p, n in batch]
    collator = PairCollator(encoder.tokenizer, args.max_length, args.max_length)
    loader = DataLoader(samples, batch_size=args.batch_size, shuffle=False, collate_fn=collator, drop_last=True)
    timer, memory = StepTimer(args.warmup, args.device), MemoryProbe(args.device)
    tokens: list[tuple[int, int]] = []
    encoded: list[int] = []  # token positions the encoder computes (after padding-free chunking)
    dropout: list[str] = []

    def encoded_positions(inputs: dict[str, Any]) -> int:
        if cached or not padding_free:
            return _padded_tokens(inputs)
        from ctem.packing import split_tokens

        config = module.padding_free
        chunks, _ = split_tokens(inputs, config.chunk_rows, config.token_limit(inputs["input_ids"].device))
        return _padded_tokens(*chunks)

    class Probe(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            memory.start()
            timer.start()

        def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == args.warmup:
                dropout.append(dropout_on(pl_module))

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            timer.mark()
            tokens.append((_real_tokens(batch["query"], batch["passages"]), _padded_tokens(batch["query"], batch["passages"])))
            encoded.append(encoded_positions(batch["query"]) + encoded_positions(batch["passages"]))

    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
    )
    trainer.fit(module, train_dataloaders=loader)
    result = _result(args, timer, memory, tokens, dropout[0], {"lightning": L.__version__})
    result["encoded_tokens_per_sample"] = sum(encoded[args.warmup :]) / max(timer.timed_steps() * args.batch_size, 1)
    return result


def worker_torch_loop(args: argparse.Namespace) -> dict:
    """Reference loop: ctem's encoder, collator and loss with plain AdamW, no Lightning."""
    _setup_torch(args)
    from ctem.encoder import TextEncoder
    from ctem.losses import BatchLayout, InfoNCELoss
    from ctem.data_modules.pairs import PairCollator

    encoder = TextEncoder.from_pretrained(
        args.model, pooling="mean", normalize=True, query_max_length=args.max_length, passage_max_length=args.max_length
    ).to(args.device)
    encoder.train()
    loss_fn = InfoNCELoss(temperature=args.temperature)
    collator = PairCollator(encoder.tokenizer, args.max_length, args.max_length)

    def step(batch: list[tuple[str, str, str]]) -> tuple[int, int]:
        tokens = collator([{"query": q, "passages": [p, n]} for q, p, n in batch])
        query = {k: v.to(args.device) for k, v in tokens["query"].items()}
        passages = {k: v.to(args.device) for k, v in tokens["passages"].items()}
        with _autocast(args):
            loss = loss_fn(encoder(**query), encoder(**passages), BatchLayout(tokens["group_size"])).loss
        loss.backward()
        return _real_tokens(query, passages), _padded_tokens(query, passages)

    timer, memory, tokens, dropout = _manual_loop(args, step, encoder)
    return _result(args, timer, memory, tokens, dropout, {})


def worker_sentence_transformers(args: argparse.Namespace, cached: bool) -> dict:
    """sentence-transformers (Cached)MultipleNegativesRankingLoss on (anchor, positive,
    negative) columns, each column preprocessed as its data collator does."""
    torch = _setup_torch(args)
    import sentence_transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    model = SentenceTransformer(args.model, device=args.device, trust_remote_code=False)
    model.max_seq_length = args.max_length
    model.train()
    scale = 1.0 / args.temperature
    if cached:
        loss_fn = CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=args.chunk_size)
    else:
        loss_fn = MultipleNegativesRankingLoss(model, scale=scale)

    def step(batch: list[tuple[str, str, str]]) -> tuple[int, int]:
        features = []
        for column in zip(*batch):
            tokens = model.preprocess(list(column))
            features.append({k: v.to(args.device) if torch.is_tensor(v) else v for k, v in tokens.items()})
        with _autocast(args):
            loss = loss_fn(features, None)
        loss.backward()
        return _real_tokens(*features), _padded_tokens(*features)

    timer, memory, tokens, dropout = _manual_loop(args, step, model)
    return _result(args, timer, memory, tokens, dropout, {"sentence-transformers": sentence_transformers.__version__})


def worker_flag(args: argparse.Namespace) -> dict:
    """FlagEmbedding's encoder-only embedder model and collator (in bench/.venv-flag)."""
    _setup_torch(args)
    import FlagEmbedding  # noqa: F401  (import error = clear "not run" reason)
    import transformers
    from FlagEmbedding.abc.finetune.embedder.AbsDataset import AbsEmbedderCollator
    from FlagEmbedding.finetune.embedder.encoder_only.base.modeling import BiEncoderOnlyEmbedderModel
    from importlib.metadata import version

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)
    model = BiEncoderOnlyEmbedderModel(
        transformers.AutoModel.from_pretrained(args.model, trust_remote_code=False),
        tokenizer=tokenizer,
        temperature=args.temperature,
        sub_batch_size=-1,
        sentence_pooling_method="mean",
        normalize_embeddings=True,
    ).to(args.device)
    model.train()
    collator = AbsEmbedderCollator(
        tokenizer=tokenizer, query_max_len=args.max_length, passage_max_len=args.max_length, return_tensors="pt"
    )

    def step(batch: list[tuple[str, str, str]]) -> tuple[int, int]:
        inputs = collator([(q, [p, n], None) for q, p, n in batch])
        for key in ("queries", "passages"):
            inputs[key] = {k: v.to(args.device) for k, v in inputs[key].items()}
        with _autocast(args):
            loss = model(**inputs).loss
        loss.backward()
        return _real_tokens(inputs["queries"], inputs["passages"]), _padded_tokens(inputs["queries"], inputs["passages"])

    timer, memory, tokens, dropout = _manual_loop(args, step, model)
    return _result(args, timer, memory, tokens, dropout, {"FlagEmbedding": version("FlagEmbedding")})


WORKERS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "ctem": lambda a: worker_ctem(a, cached=False),
    "ctem-padded": lambda a: worker_ctem(a, cached=False, padding_free=False),
    "ctem-cached": lambda a: worker_ctem(a, cached=True),
    "torch-loop": worker_torch_loop,
    "st-mnrl": lambda a: worker_sentence_transformers(a, cached=False),
    "st-cached": lambda a: worker_sentence_transformers(a, cached=True),
    "flag": worker_flag,
}


# =========================================================================== parent
def setup_flag_venv(venv: Path, torch_spec: str) -> None:
    """Create ``venv`` with ``torch_spec`` and FlagEmbedding 1.4.2's requirements; fails
    (before installing) if pip would change the torch version."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, torch_spec], check=True)
    dry = subprocess.run([*pip, "--dry-run", torch_spec, *FLAG_REQUIREMENTS], capture_output=True, text=True, check=True)
    would_install = dry.stdout.split("Would install", 1)[-1].split()
    if any(name.startswith("torch-") for name in would_install):
        raise SystemExit(f"installing {FLAG_REQUIREMENTS} would change torch:\n{dry.stdout[-2000:]}")
    subprocess.run([*pip, torch_spec, *FLAG_REQUIREMENTS], check=True)


def worker_args(args: argparse.Namespace, impl: str, rows: Path, model: str, batch_size: int, warmup: int, steps: int) -> list[str]:
    return [
        "--worker", impl, "--rows", str(rows), "--model", model,
        "--batch-size", str(batch_size), "--chunk-size", str(args.chunk_size),
        "--max-length", str(args.max_length), "--warmup", str(warmup), "--steps", str(steps),
        "--threads", str(args.threads), "--device", args.device, "--precision", args.precision,
        "--lr", str(args.lr), "--temperature", str(args.temperature), "--seed", str(args.seed),
    ]  # fmt: skip


def python_for(impl: str, args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The interpreter that runs ``impl``, or None and the reason it cannot run."""
    if impl != "flag":
        return sys.executable, None
    python = Path(args.flag_venv) / "bin" / "python"
    if not python.is_file():
        return None, f"no {python}; create it with --setup-flag-venv (FlagEmbedding needs transformers<5)"
    return str(python), None


def largest_batch(args: argparse.Namespace, impl: str, rows: Path, model: str, python: str) -> tuple[str, list[dict]]:
    """Double the batch from ``--batch-size`` while a one-step run's peak memory stays within
    ``--memory-budget-mb``; returns the largest fitting batch (``>=N`` at the search cap)."""
    probes, fitting, batch = [], None, args.batch_size
    while batch <= args.search_max_batch:
        run = run_worker(python, Path(__file__), worker_args(args, impl, rows, model, batch, 0, 1), args.threads, args.timeout_s)
        if run.result is None:
            probes.append({"batch_size": batch, "error": run.error})
            print(f"[bench] {impl} batch {batch}: {run.error}", flush=True)
            break
        peak = run.result["peak_mb"]
        probes.append({"batch_size": batch, "peak_mb": peak})
        print(f"[bench] {impl} batch {batch}: peak {peak:.0f} MB", flush=True)
        if peak > args.memory_budget_mb:
            break
        fitting, batch = batch, batch * 2
    if fitting is None:
        return f"<{args.batch_size}", probes
    capped = batch > args.search_max_batch
    return (f">={fitting}" if capped else str(fitting)), probes


def speed_ratios(runs: dict[str, list[dict]], impl: str) -> list[float]:
    """ctem / ``impl`` samples/s within each repeat (runs of one repeat are close in time,
    so these ratios are far less affected by a shared machine's changing load than the
    ratio of medians)."""
    ours = runs.get(CTEM_COUNTERPART.get(impl, ""), [])
    return [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(ours, runs.get(impl, []))]


def format_table(summary: dict[str, dict], budget_mb: float, best_batches: dict[str, str]) -> str:
    """Markdown table: median samples/s (range), peak MB, ctem / peer ratios, largest batch."""
    head = (
        "| implementation | samples/s (median, min-max) | peak MB (median) | collated tokens / sample "
        f"| ctem / peer speed (median of repeats, min-max) | ctem / peer memory | largest batch within {budget_mb:.0f} MB "
        "| dropout at the first timed step |"
    )
    lines = [head, "|" + "---|" * 8]
    for impl, s in summary.items():
        if s.get("error"):
            lines.append(f"| {impl} | not run: {s['error']} | | | | | | |")
            continue
        ours = summary.get(CTEM_COUNTERPART.get(impl, ""), {})
        if impl in CTEM_COUNTERPART and ours.get("samples_per_s"):
            r = s["speed_ratios"]
            ratio = f"{median(r):.2f} ({min(r):.2f}-{max(r):.2f}) vs {CTEM_COUNTERPART[impl]}"
            mem = f"{ours['peak_mb'] / s['peak_mb']:.2f}" if s["peak_mb"] > 0 else ""
        else:
            ratio, mem = ("(ctem row)", "") if impl.startswith("ctem") else ("", "")
        enc = s.get("encoded_tokens_per_sample")
        encoded = f" (encoded {enc:.1f})" if enc is not None and abs(enc - s["padded_tokens_per_sample"]) > 0.05 else ""
        lines.append(
            f"| {impl} | {s['samples_per_s']:.2f} ({s['min']:.2f}-{s['max']:.2f}) | {s['peak_mb']:.0f} "
            f"| {s['padded_tokens_per_sample']:.1f}{encoded} | {ratio} | {mem} | {best_batches.get(impl, '')} | on: {s['dropout']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    add_worker_arguments(parser)
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations to measure")
    parser.add_argument("--repeats", type=int, default=3, help="runs per implementation (round-robin); median reported")
    parser.add_argument("--data-dir", default=str(SHARED_LABELED), help="folder of labeled JSONL files")
    parser.add_argument("--data-files", nargs="+", default=list(DEFAULT_DATA_FILES), help="files in --data-dir")
    parser.add_argument("--fixed-length", action="store_true", help="lengthen every text so all rows truncate to --max-length")
    parser.add_argument("--memory-budget-mb", type=float, default=1024.0, help="budget of the largest-batch search")
    parser.add_argument("--search-max-batch", type=int, default=8192, help="largest batch the search tries (0: no search)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="limit of one worker run")
    parser.add_argument("--flag-venv", default=str(Path(FLAG_VENV).relative_to(REPO)), help="venv with FlagEmbedding 1.4.2")
    parser.add_argument("--setup-flag-venv", action="store_true", help="create --flag-venv first")
    parser.add_argument("--torch-spec", default="torch==2.13.0", help="pinned torch for --setup-flag-venv")
    parser.add_argument("--work-dir", default=None, help="where rows and the tiny model go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    args = parser.parse_args(argv)
    if args.worker:
        emit_result(WORKERS[args.worker](args))
        return
    args.model = args.model or "tiny"
    if args.setup_flag_venv:
        setup_flag_venv(REPO / args.flag_venv, args.torch_spec)
    with contextlib.ExitStack() as stack:
        work = Path(args.work_dir) if args.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        run_benchmark(args, work, argv if argv is not None else sys.argv[1:])


def run_benchmark(args: argparse.Namespace, work: Path, argv: Sequence[str]) -> None:
    triples, source = load_triples(Path(args.data_dir), args.data_files, args.seed)
    rows = work / "rows.jsonl"
    count = max(args.batch_size * (args.warmup + args.steps), args.search_max_batch)
    write_rows(rows, triples, count, fixed_chars=4 * args.max_length if args.fixed_length else None)
    model = resolve_model(args.model, work, args.seed)
    print(f"[bench] model {model}; rows: {source}; {len(triples)} distinct triples", flush=True)

    runs: dict[str, list[dict]] = {impl: [] for impl in args.impls}
    errors: dict[str, str] = {}
    for repeat in range(args.repeats):
        for impl in args.impls:
            if impl in errors:
                continue
            python, why_not = python_for(impl, args)
            if python is None:
                errors[impl] = why_not or "cannot run"
                print(f"[bench] {impl}: not run: {errors[impl]}", flush=True)
                continue
            run = run_worker(python, Path(__file__), worker_args(args, impl, rows, model, args.batch_size, args.warmup, args.steps), args.threads, args.timeout_s)
            if run.result is None:
                errors[impl] = run.error or "failed"
                print(f"[bench] {impl}: not run: {run.error}\n" + "\n".join(run.log_tail), flush=True)
                continue
            runs[impl].append(run.result)
            r = run.result
            print(f"[bench] repeat {repeat + 1}/{args.repeats} {impl}: {r['samples_per_s']:.2f} samples/s, peak {r['peak_mb']:.0f} MB", flush=True)

    summary: dict[str, dict] = {}
    for impl in args.impls:
        if impl in errors:
            summary[impl] = {"error": errors[impl]}
            continue
        speeds = [r["samples_per_s"] for r in runs[impl]]
        summary[impl] = {
            "samples_per_s": median(speeds),
            "min": min(speeds),
            "max": max(speeds),
            "peak_mb": median([r["peak_mb"] for r in runs[impl]]),
            "padded_tokens_per_sample": runs[impl][0]["padded_tokens_per_sample"],
            "encoded_tokens_per_sample": runs[impl][0].get("encoded_tokens_per_sample"),
            "real_tokens_per_sample": runs[impl][0]["real_tokens_per_sample"],
            "dropout": runs[impl][0]["dropout"],
            "versions": runs[impl][0]["versions"],
            "speed_ratios": speed_ratios(runs, impl),
        }

    best: dict[str, str] = {}
    probes: dict[str, list[dict]] = {}
    if args.search_max_batch > 0:
        for impl in (i for i in CACHED_IMPLS if i in args.impls and i not in errors):
            best[impl], probes[impl] = largest_batch(args, impl, rows, model, sys.executable)

    command = command_line("throughput.py", argv)
    table = format_table(summary, args.memory_budget_mb, best)
    print()
    print(f"Command: `{command}`")
    print(
        f"Model {args.model}, batch {args.batch_size} (1 positive + 1 hard negative per query), max length "
        f"{args.max_length}, chunk {args.chunk_size}, {args.device} {args.precision}, {args.threads} thread(s), "
        f"{args.warmup} warm-up + {args.steps} timed steps, {args.repeats} repeats; rows: {source}"
        + (" lengthened to the max length" if args.fixed_length else "")
    )
    print()
    print(table)
    print("\nVersions: " + "; ".join(f"{impl}: {s['versions']}" for impl, s in summary.items() if "versions" in s))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "summary": summary, "runs": runs, "largest_batch": best, "probes": probes}, indent=2))


if __name__ == "__main__":
    main()
