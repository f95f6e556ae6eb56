"""Peak memory of a gradient-cached ctem step at a large batch against an uncached step
at a small one.

Both steps are one ``lightning.Trainer.fit`` step of ``BiEncoderModule`` (AdamW included)
on the same model and the same real rows (query, positive, hard negative), each run in a
fresh subprocess by ``bench/throughput.py``'s worker. Reported per run: the peak memory
the step adds over the loaded model (CPU: peak RSS minus the RSS at train start; CUDA:
``max_memory_allocated``), and on CPU the whole process's peak RSS; then the ratio
cached / uncached of the medians.

With the gradient cache, activation memory is that of one chunk whatever the batch;
what still grows with the batch is the loss on the full embedding matrix: the scores
``B x B*G`` (plus softmax and gradient of the same size) and the embeddings.

    python bench/grad_cache_memory.py                    # tiny BERT, 4096 cached vs 64
    python bench/grad_cache_memory.py --model minilm --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_DATA_FILES, SHARED_LABELED, load_triples, median, resolve_model, run_worker, write_rows  # noqa: E402

THROUGHPUT = Path(__file__).resolve().parent / "throughput.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (random BERT), minilm, or a model folder / hub id")
    parser.add_argument("--cached-batch", type=int, default=4096, help="batch of the gradient-cached step")
    parser.add_argument("--chunk-size", type=int, default=64, help="gradient-cache chunk")
    parser.add_argument("--uncached-batch", type=int, default=64, help="batch of the plain step")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each step; medians reported")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--data-dir", default=str(SHARED_LABELED))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        triples, source = load_triples(Path(args.data_dir), list(DEFAULT_DATA_FILES), args.seed)
        rows = work / "rows.jsonl"
        write_rows(rows, triples, max(args.cached_batch, args.uncached_batch), fixed_chars=None)
        model = resolve_model(args.model, work, args.seed)
        print(f"[memory] model {model}; rows: {source}", flush=True)
        steps = {
            f"cached step, batch {args.cached_batch}, chunk {args.chunk_size}": ("ctem-cached", args.cached_batch),
            f"uncached step, batch {args.uncached_batch}": ("ctem", args.uncached_batch),
        }
        results: dict[str, list[dict]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, (impl, batch) in steps.items():
                run = run_worker(
                    sys.executable,
                    THROUGHPUT,
                    [
                        "--worker", impl, "--rows", str(rows), "--model", model, "--batch-size", str(batch),
                        "--chunk-size", str(args.chunk_size), "--max-length", str(args.max_length),
                        "--warmup", "0", "--steps", "1", "--threads", str(args.threads),
                        "--device", args.device, "--precision", args.precision, "--seed", str(args.seed),
                    ],  # fmt: skip
                    args.threads,
                    args.timeout_s,
                )
                if run.result is None:
                    raise SystemExit(f"{name} failed: {run.error}\n" + "\n".join(run.log_tail))
                results[name].append(run.result)
                print(f"[memory] {name}: step adds {run.result['peak_mb']:.0f} MB, process peak {run.result['process_peak_mb']:.0f} MB", flush=True)

    (cached_name, cached), (plain_name, plain) = results.items()
    step_ratio = median([r["peak_mb"] for r in cached]) / median([r["peak_mb"] for r in plain])
    process_ratio = median([r["process_peak_mb"] for r in cached]) / median([r["process_peak_mb"] for r in plain])
    print()
    print(f"| step | peak added by the step, MB (median of {args.repeats}) | process peak, MB |")
    print("|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {median([r['peak_mb'] for r in runs]):.0f} | {median([r['process_peak_mb'] for r in runs]):.0f} |")
    print()
    print(f"ratio cached / uncached: step peak {step_ratio:.2f}x, process peak {process_ratio:.2f}x")
    block_mb = args.chunk_size * args.cached_batch * 2 * 4 / 2**20
    print(f"(the cached loss holds one {args.chunk_size} x {2 * args.cached_batch} float32 block of scores at a time: {block_mb:.1f} MB)")


if __name__ == "__main__":
    main()
