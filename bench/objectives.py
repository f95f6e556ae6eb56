"""The "Measured" table of issue 21 (docs/objectives.md): what each objective beyond
InfoNCE buys on the dev suites, and what it costs.

Parts (each prints its rows; ``all`` runs them in order)::

    duplicates   in-batch duplicates in batches of 1,024 weak Chinese pairs (data only, seconds)
    masking      contrastive stage with / without stage.mask_false_negatives, Chinese dev average
    matryoshka   contrastive stage with / without stage.matryoshka.dims, Chinese dev average at
                 full, 1/2 and 1/4 of the dimensions (ctem-eval eval.truncate_dim=)
    distill      bert_cpu from scratch on English pairs: InfoNCE alone vs InfoNCE + KL to
                 MiniLM's scores (ctem-score), equal steps (``--train-steps``, 500: about
                 25 minutes per arm on 2 cores), English dev average
    merge        a domain fine-tune merged with its base (ctem-merge 0.5 / 0.5): general
                 (dev suite) and in-domain averages of base, fine-tune and merge
    cost         samples/s of one contrastive step per objective against plain InfoNCE

Every training and evaluation is a documented command run in a subprocess (printed before
it runs; ``--dry-run`` prints them only). A command whose output is already in the work
folder (a final model, an evaluation summary, a mined or scored file) is not run again, so
a stopped part continues where it stopped. Long on CPU (an hour or more per part except
``duplicates`` and ``cost``)::

    python bench/objectives.py duplicates
    python bench/objectives.py masking --work-dir bench_runs/objectives
    python bench/objectives.py matryoshka --work-dir bench_runs/objectives
    python bench/objectives.py distill --work-dir bench_runs/objectives
    python bench/objectives.py merge --work-dir bench_runs/objectives
    python bench/objectives.py cost
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, minilm_folder  # noqa: E402

SHARED = Path(os.environ.get("CTEM_SHARED_DATA", REPO / ".." / "shared" / "data")).resolve()
ZH_UNLABELED = SHARED / "train" / "unlabeled"
EN_UNLABELED = SHARED / "en" / "train" / "unlabeled" / "wiki_title_passage.jsonl"
EN_LABELED = SHARED / "en" / "train" / "labeled"
# The CPU preset's contrastive stage trains from its RetroMAE stage; without one it starts
# from a random bert_cpu (both arms alike, so the comparison stands).
CONTRASTIVE = ["experiment=cpack/cpu/contrastive", "model=bert_cpu", "model.name_or_path=null", "model.tokenizer=${lang.vocab}",
               "logger=csv"]


def run(command: Sequence[str], dry_run: bool) -> None:
    """Print ``command`` and run it from the repository root (stop on failure)."""
    print("$ " + shlex.join(command), flush=True)
    if not dry_run:
        subprocess.run(command, cwd=REPO, check=True)


def train(run_dir: Path, overrides: Sequence[str], dry_run: bool) -> Path:
    """``python train.py`` into ``run_dir`` (unless its final_model/ exists); its final_model/."""
    if not (run_dir / "final_model").is_dir():
        run([sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"], dry_run)
    return run_dir / "final_model"


def evaluate(model: Path, out: Path, lang: str, dry_run: bool, *more: str) -> float | None:
    """``ctem-eval`` of ``model`` on the ``lang`` dev suite (unless ``out`` holds its
    summary); the overall average (x100)."""
    if not (out / "summary.csv").is_file():
        run(["ctem-eval", f"model_path={model}", f"output_dir={out}", f"lang={lang}", "progress=false", *more], dry_run)
    if dry_run:
        return None
    with open(out / "summary.csv", encoding="utf-8") as handle:
        header, row = list(csv.reader(handle))[:2]
    return float(row[-1])


def table(rows: list[tuple[str, str, str]]) -> None:
    print("\n| objective | what | result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def fmt(value: float | None) -> str:
    return "(dry run)" if value is None else f"{value:.2f}"


# ----------------------------------------------------------------------------- parts
def duplicates(args: argparse.Namespace) -> None:
    """Batches of ``--batch`` rows drawn from the weak Chinese pairs: passages identical to
    a query's positive among the batch's other passages (what masking removes)."""
    positives = []
    for path in sorted(ZH_UNLABELED.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            pos = row["pos"] if isinstance(row["pos"], list) else [row["pos"]]
            positives.append(pos[0])
    rng = random.Random(args.seed)
    counts = []
    for _ in range(args.batches):
        batch = rng.sample(positives, args.batch)
        seen: dict[str, int] = {}
        for text in batch:
            seen[text] = seen.get(text, 0) + 1
        counts.append(sum(n * (n - 1) for n in seen.values()))  # (query, other passage) pairs
    mean = sum(counts) / len(counts)
    with_any = sum(c > 0 for c in counts) / len(counts)
    table([("false-negative masking", f"duplicates per batch of {args.batch} weak Chinese pairs ({len(positives):,} rows, "
            f"{args.batches} batches)", f"{mean:.2f} masked negatives per batch; {100 * with_any:.0f} % of batches hold one")])


def masking(args: argparse.Namespace) -> None:
    scores = {}
    for name, flag in (("off", "false"), ("on", "true")):
        model = train(args.work_dir / f"masking_{name}", [*CONTRASTIVE, f"stage.mask_false_negatives={flag}"], args.dry_run)
        scores[name] = evaluate(model, args.work_dir / f"masking_{name}_eval", "zh", args.dry_run)
    table([("false-negative masking", "Chinese dev average without / with masking", f"{fmt(scores['off'])} / {fmt(scores['on'])}")])


def matryoshka(args: argparse.Namespace) -> None:
    rows = []
    for name, extra in (("plain", []), ("matryoshka", ["stage.matryoshka.dims=[128,64,32]"])):
        model = train(args.work_dir / f"mrl_{name}", [*CONTRASTIVE, *extra], args.dry_run)
        full = evaluate(model, args.work_dir / f"mrl_{name}_128", "zh", args.dry_run)
        parts = [evaluate(model, args.work_dir / f"mrl_{name}_{d}", "zh", args.dry_run, f"eval.truncate_dim={d}") for d in (64, 32)]
        kept = "(dry run)" if full is None else " / ".join(f"{100 * p / full:.1f} %" for p in parts if p is not None)
        rows.append(("Matryoshka", f"{name}: Chinese dev average at 128 (bert_cpu's full size); kept at 64 / 32",
                     f"{fmt(full)}; {kept}"))
    table(rows)


def distill(args: argparse.Namespace) -> None:
    data = args.work_dir / "distill_data"
    teacher = minilm_folder()
    mined, scored = data / "mined.jsonl", data / "scored.jsonl"
    if not args.dry_run:
        data.mkdir(parents=True, exist_ok=True)
    if not mined.is_file():
        run(["ctem-mine", f"model_path={teacher}", f"input={EN_UNLABELED}", f"output={mined}", "mining.negative_number=7"], args.dry_run)
    if not scored.is_file():
        run(["ctem-score", f"teacher={teacher}", f"input={mined}", f"output={scored}"], args.dry_run)
    common = ["lang=en", "stage=contrastive", "data=pairs", f"data.train_files=[{scored}]", "data.train_group_size=4",
              "data.batch_size=128", "model=bert_cpu", "model.tokenizer=${lang.vocab}", f"trainer.max_steps={args.train_steps}", "logger=csv"]
    scores = {}
    for name, extra in (("infonce", []), ("distill", ["stage/loss=distill", "stage.loss.teacher_temperature=0.05"])):
        model = train(args.work_dir / f"distill_{name}", [*common, *extra], args.dry_run)
        scores[name] = evaluate(model, args.work_dir / f"distill_{name}_eval", "en", args.dry_run)
    table([("distillation", f"bert_cpu from scratch, {args.train_steps:,} steps: InfoNCE alone / + KL to MiniLM's scores, English dev average",
            f"{fmt(scores['infonce'])} / {fmt(scores['distill'])}")])


def merge(args: argparse.Namespace) -> None:
    base = minilm_folder()
    domain = EN_LABELED / "medquad.jsonl"
    mined = args.work_dir / "merge_data" / "medquad.mined.jsonl"
    if not args.dry_run:
        mined.parent.mkdir(parents=True, exist_ok=True)
    run(["ctem-mine", f"model_path={base}", f"input={domain}", f"output={mined}", "mining.negative_number=7"], args.dry_run)
    tuned = train(args.work_dir / "merge_finetune", ["experiment=bge_en/finetune", f"model.name_or_path={base}",
                                                     f"data.datasets={mined.parent}", "logger=csv"], args.dry_run)
    merged = args.work_dir / "merge_merged"
    run(["ctem-merge", f"models=[{base},{tuned}]", "weights=[0.5,0.5]", f"output={merged}"], args.dry_run)
    rows = []
    for name, model in (("base", base), ("fine-tune", tuned), ("merged", merged)):
        general = evaluate(Path(model), args.work_dir / f"merge_{name}_general", "en", args.dry_run)
        rows.append(("merging", f"{name}: English dev average (general)", fmt(general)))
    table(rows)


def cost(args: argparse.Namespace) -> None:
    """Samples/s of one contrastive step (tiny BERT, CPU) per objective, in this process."""
    import torch

    from ctem.losses import DistillationLoss, InfoNCELoss
    from ctem.modules import BiEncoderModule
    from tests.helpers.tiny import sentences, tiny_encoder, write_vocab

    torch.set_num_threads(args.threads)
    vocab = write_vocab(args.work_dir)
    variants = {
        "InfoNCE": (InfoNCELoss(0.02), {}),
        "masking": (InfoNCELoss(0.02), {"mask_false_negatives": True}),
        "Matryoshka": (InfoNCELoss(0.02), {"matryoshka": {"dims": [32, 16, 8]}}),
        "distillation": (DistillationLoss(0.02), {}),
    }
    rows, base = [], None
    for name, (criterion, extra) in variants.items():
        torch.manual_seed(0)
        module = BiEncoderModule(tiny_encoder(vocab), criterion, **extra)
        encoder = module.encoder
        batch = {"query": encoder.tokenize(sentences(args.batch, seed=1), 32),
                 "passages": encoder.tokenize(sentences(2 * args.batch, seed=2, max_len=40), 64), "group_size": 2,
                 "teacher_scores": torch.randn(args.batch, 2)}
        module.log = lambda *a, **k: None  # no trainer: the step's own cost only
        module.log_step = lambda *a, **k: None
        times = []
        for step in range(args.steps + 1):
            start = time.perf_counter()
            module.training_step(batch, step).backward()
            times.append(time.perf_counter() - start)
        rate = args.batch / (sum(times[1:]) / args.steps)
        base = base or rate
        rows.append(("cost", f"{name}: samples/s (tiny BERT, batch {args.batch}, CPU)", f"{rate:.0f} ({100 * rate / base:.0f} %)"))
    table(rows)


PARTS = {"duplicates": duplicates, "masking": masking, "matryoshka": matryoshka, "distill": distill, "merge": merge, "cost": cost}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=[*PARTS, "all"])
    parser.add_argument("--work-dir", type=Path, default=REPO / "bench_runs" / "objectives")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--batch", type=int, default=1024, help="duplicates: pairs per batch; cost: queries per step")
    parser.add_argument("--batches", type=int, default=200, help="duplicates: batches drawn")
    parser.add_argument("--steps", type=int, default=20, help="cost: timed steps")
    parser.add_argument("--train-steps", type=int, default=500, help="distill: optimizer steps of each arm (batches of 128 queries)")
    parser.add_argument("--threads", type=int, default=1, help="cost: torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    if not args.dry_run:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    for name in PARTS if args.part == "all" else [args.part]:
        PARTS[name](args)


if __name__ == "__main__":
    main()
