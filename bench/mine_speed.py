"""Hard-negative mining speed of ``ctem-mine`` against sentence-transformers'
``mine_hard_negatives`` and FlagEmbedding's ``hn_mine``, and how far their negatives agree.

All tools mine the same rows (the first ``--rows`` of ``--input``) with the same model
folder, the same candidate pool (every positive and negative of those rows, each text
once: ``ctem-mine``'s default ``pool_scope=file``, ``hn_mine`` without a candidate pool;
sentence-transformers gets it as ``corpus``), the same rank window and number of
negatives, the same encoding batch size, the query instruction the model records, on CPU,
each run in its own subprocess with every thread pool pinned to ``--threads``:

  ctem    ``ctem.mining.mine_jsonl`` with a ``TextEncoder`` (what ``ctem-mine`` runs),
          no embedding cache; search: faiss ``IndexFlatIP`` (exact)
  st      ``sentence_transformers.util.mine_hard_negatives`` with ``use_faiss=True``
          (faiss ``IndexFlatIP``, exact), ``output_format="labeled-list"``
  flag    FlagEmbedding's ``find_knn_neg`` (``scripts/hn_mine.py`` of the FlagEmbedding
          repository, ``--flag-hn-mine``; not part of the wheel since 1.3) with
          ``FlagAutoModel``, run by ``--flag-python``; search: faiss ``IndexFlatIP`` (exact)

Rank window ``[--range-min, --range-max)`` is 0-based, end exclusive (ctem's ``range``,
FlagEmbedding's ``range_for_sampling lo-hi``, sentence-transformers' ``range_min`` /
``range_max``). One difference no setting removes: ctem and FlagEmbedding count ranks over
the whole pool and then drop the row's positives and query from the window, while
sentence-transformers drops them first and counts ranks among the rest (so with a
positive at rank 0 its window starts one rank further down). When the window holds more
candidates than ``--negatives``, ctem and FlagEmbedding draw at random (and so does
sentence-transformers, ``sampling_strategy="random"``); the default window of exactly
``--negatives`` ranks takes every candidate in it, so no tool samples and the agreement
measures the search and the exclusion rules alone. FlagEmbedding also fills rows short of
``--negatives`` with random pool texts.

Measured: seconds from loading the model to the mined rows (encoding, search, selection,
ctem's output file included; Python's imports not: every worker imports the model's code
first, ``_common.import_model_code``), median over ``--repeats`` with the
peer / ctem ratio per repeat; negatives per row; agreement = Jaccard of each row's
negative set with ctem's, averaged over rows.

    python bench/mine_speed.py                           # atec.jsonl, quickstart-size model
    python bench/mine_speed.py --rows 1000 --range-min 2 --range-max 200 --negatives 15
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, REPO, command_line, emit_result, import_model_code, median, run_worker  # noqa: E402

TOOLS = ("ctem", "st", "flag")
DEFAULT_INPUT = REPO / ".." / "shared" / "data" / "train" / "labeled" / "atec.jsonl"
SEARCH = {"ctem": "faiss IndexFlatIP (exact)", "st": "faiss IndexFlatIP (exact, use_faiss=True)", "flag": "faiss IndexFlatIP (exact)"}


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pool_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every positive and negative of ``rows``, each text once, in first-seen order."""
    return list(dict.fromkeys(t for r in rows for t in [*r["pos"], *r.get("neg", [])]))


# =========================================================================== workers
def worker_ctem(args: argparse.Namespace) -> dict[str, Any]:
    """``ctem-mine``'s path: ``TextEncoder.from_pretrained`` then ``mine_jsonl``."""
    from ctem.encoder import TextEncoder
    from ctem.mining import MiningConfig, mine_jsonl

    import_model_code(args.model)
    start = time.perf_counter()
    encoder = TextEncoder.from_pretrained(args.model)
    config = MiningConfig(
        range=(args.range_min, args.range_max), negative_number=args.negatives, seed=args.seed,
        query_instruction=args.instruction or None, use_gpu=False, batch_size=args.batch_size, show_progress=False,
    )  # fmt: skip
    output = Path(args.work) / "ctem.jsonl"
    mine_jsonl(encoder, args.input, output, config)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "negatives": [r["neg"] for r in read_rows(output)]}


def worker_st(args: argparse.Namespace) -> dict[str, Any]:
    """``mine_hard_negatives`` on (query, positive) pairs with the rows' pool as corpus."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    rows = read_rows(Path(args.input))
    pairs = [(r["query"], p) for r in rows for p in r["pos"]]
    import_model_code(args.model)
    start = time.perf_counter()
    model = SentenceTransformer(args.model, device="cpu")
    mined = mine_hard_negatives(
        Dataset.from_dict({"query": [q for q, _ in pairs], "pos": [p for _, p in pairs]}), model,
        corpus=pool_of(rows), range_min=args.range_min, range_max=args.range_max, num_negatives=args.negatives,
        sampling_strategy="top" if args.range_max - args.range_min == args.negatives else "random",
        batch_size=args.batch_size, use_faiss=True, output_format="labeled-list", verbose=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    by_query = {q: docs[1:] for q, docs in zip(mined["query"], mined["pos"])}
    return {"seconds": seconds, "negatives": [by_query.get(r["query"], []) for r in rows]}


def worker_flag(args: argparse.Namespace) -> dict[str, Any]:
    """FlagEmbedding's ``find_knn_neg`` from ``--flag-hn-mine`` with ``FlagAutoModel``."""
    from FlagEmbedding import FlagAutoModel

    spec = importlib.util.spec_from_file_location("hn_mine", args.flag_hn_mine)
    hn_mine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hn_mine)
    output = Path(args.work) / "flag.jsonl"
    import_model_code(args.model)
    start = time.perf_counter()
    model = FlagAutoModel.from_finetuned(
        args.model, model_class="encoder-only-base", pooling_method=args.pooling, normalize_embeddings=True,
        use_fp16=False, devices="cpu", batch_size=args.batch_size, query_instruction_for_retrieval=args.instruction or None,
        query_max_length=args.query_max_length, passage_max_length=args.passage_max_length,
    )  # fmt: skip
    hn_mine.find_knn_neg(model, args.input, str(output), None, [args.range_min, args.range_max], args.negatives, False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "negatives": [r["neg"] for r in read_rows(output)]}


# =========================================================================== parent
def flag_unavailable(args: argparse.Namespace) -> str | None:
    """Why the FlagEmbedding row cannot run (``None``: it can)."""
    try:
        probe = subprocess.run([args.flag_python, "-c", "import FlagEmbedding"], capture_output=True, text=True)
    except OSError as err:
        return f"not installed ({args.flag_python}: {err.strerror})"
    if probe.returncode != 0:
        return f"not installed (FlagEmbedding does not import in {args.flag_python})"
    if not args.flag_hn_mine or not Path(args.flag_hn_mine).is_file():
        return "hn_mine not found: pass --flag-hn-mine PATH/TO/FlagEmbedding/scripts/hn_mine.py (not in the wheel)"
    return None


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    x, y = set(a), set(b)
    return 1.0 if not x and not y else len(x & y) / len(x | y)


def model_settings(model: str) -> dict[str, Any]:
    """Pooling, token limits and recorded query instruction of a ctem / ST model folder."""
    from ctem.encoder import TextEncoder

    encoder = TextEncoder.from_pretrained(model)
    return {
        "pooling": encoder.pooling,
        "instruction": encoder.query_instruction or "",
        "query_max_length": encoder.query_max_length,
        "passage_max_length": encoder.passage_max_length,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="labeled JSON lines {query, pos, neg}")
    parser.add_argument("--rows", type=int, default=0, help="mine the first N rows only (0: all)")
    parser.add_argument("--model", default="quickstart", help="quickstart (random weights, the quickstart's size), minilm, or a model folder")
    parser.add_argument("--range-min", type=int, default=0, help="first 0-based rank of the window")
    parser.add_argument("--range-max", type=int, default=15, help="end of the window (exclusive)")
    parser.add_argument("--negatives", type=int, default=15, help="negatives per row")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per forward pass (every tool)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool, round-robin; medians reported")
    parser.add_argument("--threads", type=int, default=2, help="threads of every pool in each run")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS), help="tools to run (ctem always runs)")
    parser.add_argument("--flag-python", default=None, help="interpreter with FlagEmbedding (default: bench/.venv-flag's, else this one)")
    parser.add_argument("--flag-hn-mine", default=None, help="scripts/hn_mine.py of a FlagEmbedding checkout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="limit of one run")
    parser.add_argument("--json", default=None, help="also write every run's figures to this file")
    for name in ("--work", "--instruction", "--pooling"):
        parser.add_argument(name, default="", help=argparse.SUPPRESS)
    for name in ("--query-max-length", "--passage-max-length"):
        parser.add_argument(name, type=int, default=512, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker != "flag":
            import torch

            torch.set_num_threads(args.threads)
        emit_result({"ctem": worker_ctem, "st": worker_st, "flag": worker_flag}[args.worker](args))
        return
    flag_venv = BENCH_DIR / ".venv-flag" / "bin" / "python"
    args.flag_python = args.flag_python or str(flag_venv if flag_venv.is_file() else sys.executable)
    run_benchmark(args, argv if argv is not None else sys.argv[1:])


def run_benchmark(args: argparse.Namespace, argv: Sequence[str]) -> None:
    from eval_speed import resolve_eval_model

    tools = ["ctem", *[t for t in args.tools if t != "ctem"]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = read_rows(Path(args.input))[: args.rows or None]
        (work / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        model = resolve_eval_model(args.model, work, args.seed)
        settings = model_settings(model)
        passed = [
            "--input", str(work / "rows.jsonl"), "--model", model, "--range-min", str(args.range_min),
            "--range-max", str(args.range_max), "--negatives", str(args.negatives), "--batch-size", str(args.batch_size),
            "--threads", str(args.threads), "--seed", str(args.seed), "--work", str(work),
            "--instruction", settings["instruction"], "--pooling", settings["pooling"],
            "--query-max-length", str(settings["query_max_length"]), "--passage-max-length", str(settings["passage_max_length"]),
        ] + (["--flag-hn-mine", args.flag_hn_mine] if args.flag_hn_mine else [])  # fmt: skip
        errors = {"flag": why} if "flag" in tools and (why := flag_unavailable(args)) else {}
        runs: dict[str, list[dict]] = {tool: [] for tool in tools}
        for repeat in range(args.repeats):
            for tool in (t for t in tools if t not in errors):
                python = args.flag_python if tool == "flag" else sys.executable
                run = run_worker(python, Path(__file__), ["--worker", tool, *passed], args.threads, args.timeout_s)
                if run.result is None:
                    errors[tool] = run.error or "failed"
                    print(f"[bench] {tool}: not run: {run.error}\n" + "\n".join(run.log_tail), flush=True)
                    continue
                runs[tool].append(run.result)
                print(f"[bench] repeat {repeat + 1}/{args.repeats} {tool}: {run.result['seconds']:.1f} s", flush=True)
    if "ctem" in errors:
        raise SystemExit(f"ctem failed: {errors['ctem']}")
    print(f"\nCommand: `{command_line('mine_speed.py', argv)}`")
    print(
        f"{len(rows)} rows of {args.input}; model {args.model} ({settings['pooling']} pooling, query instruction "
        f"{settings['instruction']!r}); window [{args.range_min}, {args.range_max}), {args.negatives} negatives; "
        f"batch {args.batch_size}; CPU, {args.threads} thread(s); {args.repeats} repeats\n"
    )
    print(format_table(runs, errors, tools))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "errors": errors}, ensure_ascii=False, indent=2))


def format_table(runs: dict[str, list[dict]], errors: dict[str, str], tools: list[str]) -> str:
    """Seconds, peer / ctem time ratio per repeat, negatives per row, Jaccard with ctem."""
    lines = [
        "| tool | search | seconds (median; per repeat) | peer / ctem time: median (per repeat) | negatives per row | Jaccard with ctem (mean over rows) |",
        "|" + "---|" * 6,
    ]
    ours = runs["ctem"]
    for tool in tools:
        if tool in errors:
            lines.append(f"| {tool} | | not run: {errors[tool]} | | | |")
            continue
        seconds = [r["seconds"] for r in runs[tool]]
        negatives = runs[tool][0]["negatives"]
        per_row = sum(map(len, negatives)) / max(len(negatives), 1)
        if tool == "ctem":
            ratio, agreement = "(ctem row)", ""
        else:
            ratios = [b["seconds"] / a["seconds"] for a, b in zip(ours, runs[tool])]
            ratio = f"{median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})"
            scores = [jaccard(a, b) for a, b in zip(ours[0]["negatives"], negatives)]
            agreement = f"{sum(scores) / max(len(scores), 1):.3f}"
        lines.append(
            f"| {tool} | {SEARCH[tool]} | {median(seconds):.1f} ({', '.join(f'{s:.1f}' for s in seconds)}) | {ratio} | {per_row:.2f} | {agreement} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
