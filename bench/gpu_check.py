"""The parts of ``bench/gpu_check.sh``; each prints its table rows as ``ROW<TAB>check<TAB>
setting<TAB>result`` lines (the script collects them) and runs under the script's timeout.

    python bench/gpu_check.py throughput --size minilm     # bf16 samples/s: ctem, sentence-transformers, FlagEmbedding
    python bench/gpu_check.py throughput --size base
    python bench/gpu_check.py big-batch                    # largest gradient-cached batch of the base model, 19,200 first
    python bench/gpu_check.py fsdp                         # one FSDP training run of 2 steps on 1 GPU (ctem-train)
    python bench/gpu_check.py faiss                        # faiss search on GPU against CPU, if faiss-gpu imports

Models are random BERTs built from a config (the GPU machine has no network) with the
packaged quickstart vocabulary (``src/ctem/assets/quickstart/vocab.txt``; the vocabulary
size of the config is kept, so embedding matrices have their real size): ``minilm``
(all-MiniLM-L6-v2's shape: hidden 384, 6 layers, 12 heads, vocabulary 30,522) and
``base`` (BERT-base: hidden 768, 12 layers, 12 heads, vocabulary 21,128 as
bert-base-chinese). Rows: the quickstart sample's rows with negatives (``../shared/data``
does not travel). ``--device cpu`` runs every part at toy sizes (a test of this file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, median  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 21128},
}
VOCAB = REPO / "src" / "ctem" / "assets" / "quickstart" / "vocab.txt"


def row(check: str, setting: str, result: str) -> None:
    print(f"ROW\t{check}\t{setting}\t{result}", flush=True)


def random_model(size: str, work: Path) -> str:
    """A random BERT of ``SIZES[size]`` with the quickstart vocabulary, saved once in ``work``."""
    out = work / f"random-{size}"
    if not (out / "config.json").is_file():
        import torch

        from ctem.encoder import TextEncoder

        torch.manual_seed(0)
        config = {"model_type": "bert", "max_position_embeddings": 512, **SIZES[size]}
        TextEncoder(config=config, tokenizer=str(VOCAB), pooling="mean", normalize=True).save_pretrained(out)
    return str(out)


def throughput(args: argparse.Namespace, impls: Sequence[str], batch: int, extra: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Run bench/throughput.py; its JSON summary (``{}`` and the error when it failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [
            sys.executable, str(REPO / "bench" / "throughput.py"), "--device", args.device,
            "--precision", "bf16" if args.device == "cuda" else "fp32", "--model", random_model(args.size, Path(args.work)),
            "--impls", *impls, "--batch-size", str(batch), "--max-length", str(args.max_length),
            "--search-max-batch", "0", "--threads", str(args.threads), "--json", str(result), "--timeout-s", str(timeout_s), *extra,
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if not result.is_file():
            tail = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()][-1:] or ["no output"]
            return {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
        return json.loads(result.read_text())["summary"]


def part_throughput(args: argparse.Namespace) -> None:
    """Equal-batch bf16 samples/s of ctem, sentence-transformers MNRL and FlagEmbedding."""
    batch = 128 if args.device == "cuda" else 8
    steps = ["--warmup", "3", "--steps", "10", "--repeats", "2"] if args.device == "cuda" else ["--warmup", "0", "--steps", "1", "--repeats", "1"]
    summary = throughput(args, ["ctem", "st-mnrl", "flag"], batch, ["--chunk-size", str(batch), *steps], 600)
    setting = f"random {args.size}-size BERT, batch {batch} x {args.max_length} tokens, {args.device} {'bf16' if args.device == 'cuda' else 'fp32'}"
    if "error" in summary:
        row(f"throughput {args.size}", setting, f"failed: {summary['error']}")
        return
    parts = []
    for impl, s in summary.items():
        if s.get("error"):
            parts.append(f"{impl}: not run ({s['error'][:120]})")
            continue
        ratio = f", ctem/{impl} {median(s['speed_ratios']):.2f}" if s.get("speed_ratios") else ""
        parts.append(f"{impl}: {s['samples_per_s']:.1f} samples/s, peak {s['peak_mb'] / 1024:.1f} GB{ratio}, dropout {s['dropout']}")
    row(f"throughput {args.size}", setting, "; ".join(parts))


def part_big_batch(args: argparse.Namespace) -> None:
    """The gradient-cached base model at 19,200 first, then halving until a step fits."""
    batches = [19200, 9600, 4800, 2400] if args.device == "cuda" else [64, 32]
    chunk = 512 if args.device == "cuda" else 16
    deadline = time.perf_counter() + args.budget_s
    tried = []
    for batch in batches:
        left = deadline - time.perf_counter()
        if left < 20:
            tried.append(f"{batch}: no time left")
            break
        summary = throughput(args, ["ctem-cached"], batch, ["--chunk-size", str(chunk), "--warmup", "0", "--steps", "1", "--repeats", "1"], left)
        s = summary.get("ctem-cached", summary)
        if s.get("error"):
            tried.append(f"{batch}: {s['error'][:160]}")
            continue
        seconds = batch / s["samples_per_s"]
        result = f"batch {batch} trains: {seconds:.1f} s/step, peak {s['peak_mb'] / 1024:.1f} GB" + (f" (failed: {'; '.join(tried)})" if tried else "")
        row("largest cached batch", f"random base-size BERT, chunk {chunk}, {args.max_length} tokens, 1 pos + 1 neg", result)
        return
    row("largest cached batch", f"random base-size BERT, chunk {chunk}", "no batch trained: " + "; ".join(tried))


def part_fsdp(args: argparse.Namespace) -> None:
    """``python train.py trainer=fsdp trainer.devices=1`` for 2 steps (quickstart model and
    data). On the CPU only the configuration is composed (Lightning's FSDP needs a GPU)."""
    overrides = ["trainer=fsdp", "trainer.devices=1", "trainer.max_steps=2", "logger=none", "callbacks=none"]
    command = [sys.executable, "train.py", *overrides] + (["--cfg", "job"] if args.device != "cuda" else [])
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    seconds = time.perf_counter() - start
    final = re.search(r"final model:\s+(\S+)", proc.stdout)
    setting = " ".join(overrides)
    if proc.returncode == 0 and args.device != "cuda":
        row("FSDP smoke", setting, "configuration composes; not trained (Lightning's FSDP needs a GPU)")
    elif proc.returncode == 0 and final and (Path(final.group(1)) / "config.json").is_file():
        row("FSDP smoke", setting, f"2 steps trained and the final model written in {seconds:.0f} s (process included)")
    else:
        errors = [l for l in (proc.stdout + proc.stderr).splitlines() if "Error" in l] or ["no error line"]
        row("FSDP smoke", setting, f"failed (exit {proc.returncode}): {errors[-1].strip()[:200]}")


def part_faiss(args: argparse.Namespace) -> None:
    """ctem's mining index and search (``ctem.mining.build_index`` / ``search``, exact
    ``IndexFlatIP``) on the GPU against the CPU, on random unit vectors."""
    try:
        import faiss
    except ImportError as err:
        row("faiss-gpu mining", "", f"not run: faiss does not import ({err}); faiss-gpu is not installed here")
        return
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0 and args.device == "cuda":
        row("faiss-gpu mining", "", f"not run: faiss {faiss.__version__} imports but sees no GPU (the CPU build, not faiss-gpu)")
        return
    import numpy as np

    from ctem.mining import MiningConfig, build_index, search

    pool, queries, dim, top = (500_000, 20_000, 768, 200) if args.device == "cuda" else (5_000, 200, 64, 20)
    rng = np.random.default_rng(0)
    passages = rng.standard_normal((pool, dim), dtype=np.float32)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    q = passages[rng.choice(pool, queries, replace=False)] + 0.1 * rng.standard_normal((queries, dim), dtype=np.float32)
    timings, ids = {}, {}
    for name, use_gpu in (("gpu", gpus > 0), ("cpu", False)):
        config = MiningConfig(range=(0, top), use_gpu=use_gpu, show_progress=False)
        start = time.perf_counter()
        ids[name] = np.concatenate([found for _, _, found in search(build_index(passages, config), q, top, config)])
        timings[name] = time.perf_counter() - start
    same = float(np.mean([len(set(a) & set(b)) / top for a, b in zip(ids["gpu"], ids["cpu"])]))
    row(
        "faiss-gpu mining",
        f"{queries} queries, pool {pool} x {dim}, top {top}, exact IndexFlatIP, {gpus} GPU(s)",
        f"gpu {timings['gpu']:.1f} s, cpu {timings['cpu']:.1f} s ({timings['cpu'] / timings['gpu']:.1f}x); top-{top} overlap {same:.4f}",
    )


PARTS = {"throughput": part_throughput, "big-batch": part_big_batch, "fsdp": part_fsdp, "faiss": part_faiss}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=PARTS)
    parser.add_argument("--size", choices=SIZES, default="base", help="model size of throughput / big-batch")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: toy sizes, to test this file")
    parser.add_argument("--max-length", type=int, default=128, help="token limit of queries and passages")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1), help="CPU threads per run")
    parser.add_argument("--budget-s", type=float, default=150.0, help="big-batch: seconds for all its tries")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "ctem-gpu-check"), help="where the random models go")
    args = parser.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    PARTS[args.part](args)


if __name__ == "__main__":
    main()
