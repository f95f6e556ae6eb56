"""The C-Pack recipe at CPU scale, stage by stage and with its ablations, on the dev suite.

    python bench/reproduction.py [--seeds 0 1] [--rows full no_retromae ...] [--out logs/reproduction]

Every row is a run of ``scripts/cpack_pipeline.sh`` with ``PRESET=cpu`` (the configs in
``conf/experiment/cpack/cpu/``), evaluated by its ``eval`` stage (``ctem-eval`` on
``../shared/data/eval/cmteb-dev``, with the instruction each model records). Rows that
differ from the full recipe in one factor reuse the full recipe's earlier stages of the
same seed, so each row changes exactly that factor:

| row | what changes |
|---|---|
| ``full`` | RetroMAE -> contrastive (batch 1,024, gradient cache) -> mine -> fine-tune (instructions, 3 mined negatives) |
| ``no_retromae`` | contrastive starts from a random init instead of the RetroMAE encoder |
| ``batch_64`` | contrastive batch 64 without the gradient cache, 16x the steps (the same pairs seen) |
| ``no_instructions`` | fine-tuning without query instructions (the model then records none) |
| ``no_hard_negatives`` | fine-tuning on the raw labeled files, in-batch negatives only |
| ``cls_pooling`` | contrastive, mining and fine-tuning with BGE's [CLS] instead of mean pooling |
| ``stage3_only`` | fine-tuning alone, from a random init |

Fine-tuning rows without a ``mine`` stage of their own train on the hard negatives mined
once per seed with the full recipe's stage-2 model (``<out>/seed<S>/full/mine``). The full recipe is
also evaluated at a random init and after each stage. Finished steps are skipped, so an
interrupted run continues where it stopped. Prints the table (mean and spread over seeds
per row, per task type) and writes it to ``<out>/table.md``; wall time per stage of the
full recipe comes from each run's ``times.tsv``. The TF-IDF + LSA baseline
(``bench/baselines/tfidf_lsa.py``) is read from ``--baseline`` when it exists.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTEM_SHARED_DATA", REPO.parent / "shared" / "data"))
PIPELINE = REPO / "scripts" / "cpack_pipeline.sh"
TYPES = ["Retrieval (2)", "STS (6)", "Pair CLF (2)", "CLF (2)", "Re-rank (2)", "Cluster (1)", "Avg (15)"]

# row -> (pipeline stages, start: None | "random" | "<row>/<stage>", per-stage overrides)
ROWS: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "full": ("pretrain contrastive mine finetune eval", None, {}),
    "no_retromae": ("contrastive finetune eval", "random", {}),
    "batch_64": (
        "contrastive finetune eval",
        "full/pretrain",
        {"CONTRASTIVE_ARGS": "data.batch_size=64 stage.grad_cache.enabled=false trainer.max_steps=128"},
    ),
    "no_instructions": (
        "finetune eval",
        "full/contrastive",
        {"FINETUNE_ARGS": "data.instructions_by_type.retrieval=none data.instructions_by_type.reranking=none"},
    ),
    "no_hard_negatives": (
        "finetune eval",
        "full/contrastive",
        {"FINETUNE_ARGS": f"data.datasets={SHARED / 'train' / 'labeled'} data.train_group_size=1"},
    ),
    "cls_pooling": (
        "contrastive mine finetune eval",
        "full/pretrain",
        {"CONTRASTIVE_ARGS": "model.pooling=cls", "FINETUNE_ARGS": "model.pooling=cls"},
    ),
    "stage3_only": ("finetune eval", "random", {}),
}
# Evaluations of the full recipe's intermediate models: label -> model folder in the full run.
STAGE_MODELS = {"random init": "random_init", "after RetroMAE": "pretrain/final_model", "after contrastive": "contrastive/final_model"}


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("[reproduction] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, **(env or {})})


def random_init(folder: Path, seed: int) -> Path:
    """A randomly initialised ``bert_cpu`` (the CPU preset's model), saved like a trained one."""
    if (folder / "config.json").is_file():
        return folder
    code = (
        "import sys, torch; from hydra import compose, initialize_config_dir; from hydra.utils import instantiate;"
        "from ctem.config import config_dir, register_resolvers; register_resolvers();"
        "initialize_config_dir(config_dir=config_dir(), version_base='1.3');"
        "cfg = compose('train', overrides=['experiment=cpack/cpu/pretrain']);"
        "torch.manual_seed(int(sys.argv[2])); instantiate(cfg.model).save_pretrained(sys.argv[1])"
    )
    run([sys.executable, "-c", code, str(folder), str(seed)])
    return folder


def run_row(row: str, seed: int, out: Path) -> Path:
    """Run (or finish) one row for one seed; returns its evaluation folder."""
    stages, start, extra = ROWS[row]
    seed_dir = out / f"seed{seed}"
    run_dir = seed_dir / row
    env = {"PRESET": "cpu", "SEED": str(seed), "STAGES": stages, **extra}
    if start == "random":
        env["START_MODEL"] = str(random_init(seed_dir / "random_init", seed))
    elif start is not None:
        env["START_MODEL"] = str(seed_dir / start / "final_model")
    if "mine" not in stages and "finetune" in stages and "data.datasets=" not in extra.get("FINETUNE_ARGS", ""):
        env["FINETUNE_ARGS"] = f"{extra.get('FINETUNE_ARGS', '')} data.datasets={seed_dir / 'full' / 'mine'}".strip()
    run(["bash", str(PIPELINE), str(run_dir), "logger=csv"], env)
    return run_dir / "eval"


def evaluate(model: Path, out: Path) -> Path:
    """``ctem-eval`` of one model folder into ``out`` (skipped when already there)."""
    if not (out / "summary.csv").is_file():
        run([sys.executable, "-m", "ctem.cli.eval", f"model_path={model}", f"output_dir={out}", "progress=false", f"hydra.run.dir={out}/logs"])
    return out


def scores(eval_dir: Path) -> dict[str, float]:
    """Per-type and average main scores (x100) from an evaluation's ``summary.csv``."""
    with open(eval_dir / "summary.csv", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    return {t: float(row[t]) for t in TYPES}


def stage_times(run_dir: Path) -> dict[str, int]:
    times: dict[str, int] = {}
    path = run_dir / "times.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            stage, seconds = line.split("\t")
            times[stage] = times.get(stage, 0) + int(seconds)
    return times


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"


def table(results: dict[str, list[dict[str, float]]], seeds: list[int]) -> str:
    lines = [f"| row (seeds {', '.join(map(str, seeds))}) | " + " | ".join(TYPES) + " |", "|---" * (len(TYPES) + 1) + "|"]
    for label, runs in results.items():
        lines.append(f"| {label} | " + " | ".join(cell([r[t] for r in runs]) for t in TYPES) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "reproduction")
    parser.add_argument("--no-stage-evals", action="store_true",
                        help="evaluate none of the full recipe's intermediate models (list those already evaluated)")
    parser.add_argument("--baseline", type=Path, default=REPO / "logs" / "baselines" / "tfidf_lsa", help="TF-IDF + LSA results folder")
    args = parser.parse_args(argv)
    if "full" not in args.rows:
        args.rows.insert(0, "full")  # every other row reuses the full recipe's stages
    results: dict[str, list[dict[str, float]]] = {}
    if (args.baseline / "summary.csv").is_file():
        results["TF-IDF + LSA (256), no training on pairs"] = [scores(args.baseline)]
    for seed in args.seeds:
        full_dir = args.out / f"seed{seed}" / "full"
        for row in args.rows:
            eval_dir = run_row(row, seed, args.out)
            if row == "full":
                for label, model in STAGE_MODELS.items():
                    stage_eval = full_dir / "eval_stages" / label.replace(" ", "_")
                    if args.no_stage_evals and not (stage_eval / "summary.csv").is_file():
                        continue
                    folder = random_init(full_dir.parent / model, seed) if model == "random_init" else full_dir / model
                    results.setdefault(f"full recipe, {label}", []).append(scores(evaluate(folder, stage_eval)))
            results.setdefault(row if row != "full" else "full recipe (after fine-tuning)", []).append(scores(eval_dir))
    text = table(results, args.seeds)
    times = [stage_times(args.out / f"seed{s}" / "full") for s in args.seeds]
    stages = sorted({k for t in times for k in t}, key=["pretrain", "contrastive", "mine", "finetune", "eval"].index)
    text += "\n\nWall time of the full recipe per stage (s, per seed): " + ", ".join(
        f"{stage} {'/'.join(str(t.get(stage, '-')) for t in times)}" for stage in stages
    )
    print(text)
    (args.out / "table.md").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
