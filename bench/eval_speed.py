"""Evaluation speed of ``ctem-eval`` against the ``mteb`` package on the local C-MTEB dev
tasks, with the main scores beside the times.

Both sides evaluate the same model folder on the same local tasks
(``../shared/data/eval/cmteb-dev``, 15 tasks; mteb gets them as task objects built from the
same data by ``bench/eval_parity.py``'s ``mteb_task``), each run in its own subprocess
with every thread pool pinned to ``--threads``, repeats round-robin:

  ctem   ``ctem.cli.eval.run`` (what ``ctem-eval`` runs, in-process): loads the folder as a
         ``TextEncoder``, evaluates, writes its JSONs and summary
  mteb   ``mteb.evaluate`` on the folder loaded as a ``SentenceTransformer`` (its usual
         ``SentenceTransformerEncoderWrapper``), ``cache=None``

Cache policy: no embedding cache on either side and no result cache (mteb's ``cache=None``:
without it a second repeat would read the first one's results). ctem tokenises each batch
as it encodes it, as ``ctem-eval`` does (no tokenisation cache). Both encode
``--batch-size`` texts per forward pass.
Per task: seconds (ctem's ``TaskResult.seconds``, mteb's ``evaluation_time``) and main
score; total = wall time of the run including loading the model. The ratio is mteb / ctem
seconds (above 1: ctem is faster), the median of per-repeat ratios; parity = |ctem - mteb|
of the main score (ctem's metric and the mteb metric ``eval_parity.py`` compares it with).

    python bench/eval_speed.py                                # quickstart-size model, all 15 tasks
    python bench/eval_speed.py --model logs/train/runs/<run>/final_model --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, command_line, emit_result, import_model_code, median, minilm_folder, run_worker  # noqa: E402

TOOLS = ("ctem", "mteb")
DEFAULT_TASKS_DIR = REPO / ".." / "shared" / "data" / "eval" / "cmteb-dev"


def resolve_eval_model(name: str, work: Path, seed: int) -> str:
    """``quickstart``: the quickstart's model (``conf/model/quickstart.yaml``: 2-layer BERT,
    the packaged character vocabulary) with random weights from ``seed``, saved to ``work``;
    ``minilm``: the packaged all-MiniLM-L6-v2; anything else: a model folder as given."""
    if name == "minilm":
        return str(minilm_folder())
    if name != "quickstart":
        return name
    import torch
    from omegaconf import OmegaConf

    from ctem.config import config_dir, register_resolvers
    from ctem.encoder import TextEncoder

    register_resolvers()
    cfg = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "model" / "quickstart.yaml"), resolve=True)
    torch.manual_seed(seed)
    encoder = TextEncoder(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    return str(encoder.save_pretrained(work / "quickstart-random"))


# =========================================================================== workers
def worker_ctem(args: argparse.Namespace) -> dict[str, Any]:
    """``ctem-eval``'s ``run`` on a composed ``conf/eval.yaml``."""
    from hydra import compose, initialize_config_dir

    from ctem.cli.eval import run
    from ctem.config import config_dir, register_resolvers

    register_resolvers()
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"model_path={args.model}", f"tasks_dir={args.tasks_dir}", f"output_dir={out}",
            f"eval.batch_size={args.batch_size}", "progress=false", "device=cpu",
        ] + ([f"eval.tasks=[{','.join(args.tasks)}]"] if args.tasks else [])  # fmt: skip
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name="eval", overrides=overrides)
        import_model_code(args.model)
        start = time.perf_counter()
        results = run(cfg)
        total = time.perf_counter() - start
    return {
        "total_s": total,
        "tasks": {r.task: {"seconds": r.seconds, "score": r.main_score, "metric": r.main_metric} for r in results},
    }


def worker_mteb(args: argparse.Namespace) -> dict[str, Any]:
    """``mteb.evaluate`` with the folder as a sentence-transformers model."""
    import mteb
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    from ctem.evaluation import EvalSettings, load_local_tasks
    from eval_parity import MTEB_METRIC, mteb_task

    tasks = load_local_tasks(args.tasks_dir, args.tasks or None)
    mteb_tasks = [mteb_task(t, EvalSettings()) for t in tasks]
    import_model_code(args.model)
    start = time.perf_counter()
    model = SentenceTransformerEncoderWrapper(SentenceTransformer(args.model, device="cpu"))
    run = mteb.evaluate(model, mteb_tasks, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": args.batch_size})
    total = time.perf_counter() - start
    types = {t.name: t.type for t in tasks}
    out = {}
    for r in run.task_results:
        name = r.task_name.removeprefix("ctem")
        metric = MTEB_METRIC[types[name]][1]
        out[name] = {"seconds": float(r.evaluation_time or 0.0), "score": float(r.scores["test"][0][metric]), "metric": metric}
    return {"total_s": total, "tasks": out, "mteb": mteb.__version__}


# =========================================================================== parent
def format_table(tools_runs: dict[str, list[dict]], order: list[str]) -> str:
    """Per task and in total: median seconds of each tool, mteb / ctem ratio (median of
    per-repeat ratios), main scores and their difference."""
    ours, theirs = tools_runs["ctem"], tools_runs["mteb"]
    lines = [
        "| task | ctem s | mteb s | mteb / ctem time: median (per repeat) | ctem main score | mteb main score | abs diff |",
        "|" + "---|" * 7,
    ]

    def row(name: str, a: list[float], b: list[float], scores: tuple[str, str, str]) -> str:
        ratios = [y / x for x, y in zip(a, b) if x > 0]
        shown = f"{median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})" if ratios else ""
        return f"| {name} | {median(a):.1f} | {median(b):.1f} | {shown} | {' | '.join(scores)} |"

    worst = 0.0
    for name in order:
        a = [r["tasks"][name]["seconds"] for r in ours]
        b = [r["tasks"][name]["seconds"] for r in theirs]
        x, y = ours[0]["tasks"][name], theirs[0]["tasks"][name]
        worst = max(worst, abs(x["score"] - y["score"]))
        lines.append(row(name, a, b, (f"{x['score']:.4f} ({x['metric']})", f"{y['score']:.4f} ({y['metric']})", f"{abs(x['score'] - y['score']):.4f}")))
    lines.append(row("**total (model load included)**", [r["total_s"] for r in ours], [r["total_s"] for r in theirs], ("", "", f"max {worst:.4f}")))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="quickstart", help="quickstart (random weights, the quickstart's size), minilm, or a model folder")
    parser.add_argument("--tasks-dir", default=str(DEFAULT_TASKS_DIR), help="folder of local task folders")
    parser.add_argument("--tasks", nargs="*", default=[], help="task names (default: every task of --tasks-dir)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool, round-robin; medians reported")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (both tools)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every pool in each run")
    parser.add_argument("--seed", type=int, default=0, help="weights of --model quickstart")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="limit of one run")
    parser.add_argument("--json", default=None, help="also write every run's figures to this file")
    args = parser.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        emit_result(worker_ctem(args) if args.worker == "ctem" else worker_mteb(args))
        return
    with tempfile.TemporaryDirectory() as work:
        model = resolve_eval_model(args.model, Path(work), args.seed)
        passed = ["--model", model, "--tasks-dir", args.tasks_dir, "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        passed += ["--tasks", *args.tasks] if args.tasks else []
        runs: dict[str, list[dict]] = {tool: [] for tool in TOOLS}
        for repeat in range(args.repeats):
            for tool in TOOLS:
                run = run_worker(sys.executable, Path(__file__), ["--worker", tool, *passed], args.threads, args.timeout_s)
                if run.result is None:
                    raise SystemExit(f"{tool} failed: {run.error}\n" + "\n".join(run.log_tail))
                runs[tool].append(run.result)
                print(f"[bench] repeat {repeat + 1}/{args.repeats} {tool}: {run.result['total_s']:.1f} s", flush=True)
    command = command_line("eval_speed.py", argv)
    print(f"\nCommand: `{command}`")
    print(
        f"Model {args.model}; tasks from {args.tasks_dir}; batch {args.batch_size}, {args.threads} thread(s), CPU, "
        f"{args.repeats} repeats; no embedding or result cache on either side; mteb {runs['mteb'][0]['mteb']}\n"
    )
    print(format_table(runs, list(runs["ctem"][0]["tasks"])))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
