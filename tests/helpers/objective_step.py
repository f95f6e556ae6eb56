"""One optimizer step of each objective beyond InfoNCE, for the cross-device equality test.

Run as ``python objective_step.py VOCAB OUT`` (one process, the whole batch) or under
``torchrun --nproc_per_node 2`` (each rank its half). The global batch holds texts
duplicated across ranks (a positive of rank 0 is the positive of a rank-1 query, a hard
negative of rank 0 is a rank-1 positive) and teacher scores. For each objective
(``masked``: InfoNCE with false-negative masking; ``guided``: masking and a guide model
(GISTEmbed); ``matryoshka``: Matryoshka InfoNCE at
[32, 16, 8] with masking; ``distill``: InfoNCE + teacher KL with masking) and mode
(``plain``: padding-free micro-chunks; ``cache``: the gradient cache) it writes
``OUT/<objective>_<mode>_rank<r>.pt`` (``contrastive_step.GradientRecorder``) with the
number of false negatives the rank masked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctem.losses import Criterion, DistillationLoss, InfoNCELoss  # noqa: E402
from ctem.modules import BiEncoderModule  # noqa: E402
from tests.helpers.contrastive_step import QUERIES_PER_RANK, WORLD_MAX, GradientRecorder  # noqa: E402
from tests.helpers.tiny import sentences, tiny_encoder  # noqa: E402
from tests.helpers.trainer import cpu_trainer  # noqa: E402

GROUP = 2
# (criterion, matryoshka dims) per objective
OBJECTIVES: dict[str, tuple[Criterion, list[int] | None]] = {
    "masked": (InfoNCELoss(0.05), None),
    "guided": (InfoNCELoss(0.05), None),  # masking and a guide model (GISTEmbed)
    "matryoshka": (InfoNCELoss(0.05), [32, 16, 8]),
    "distill": (DistillationLoss(0.05, teacher_temperature=0.5, kl_weight=0.5), None),
}



class MaskedRecorder(GradientRecorder):
    """``GradientRecorder`` that also writes the rank's logged ``train/masked_negatives``."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        record = torch.load(self.out)
        record["masked"] = int(trainer.logged_metrics["train/masked_negatives"])
        torch.save(record, self.out)


def global_batch(encoder) -> dict:
    n = QUERIES_PER_RANK * WORLD_MAX
    queries = sentences(n, seed=21)
    passages = sentences(n * GROUP, seed=22, max_len=20)
    passages[5 * GROUP] = passages[0]  # rank 1's query 5 shares rank 0's query 0's positive
    passages[1 * GROUP + 1] = passages[6 * GROUP]  # rank 0's hard negative = rank 1's positive
    teacher = torch.randn(n, GROUP, generator=torch.Generator().manual_seed(23))
    return {
        "query": encoder.tokenize(queries, 16),
        "passages": encoder.tokenize(passages, 24),
        "group_size": GROUP,
        "teacher_scores": teacher,
    }


def rank_slice(batch: dict, rank: int, world: int) -> dict:
    rows = QUERIES_PER_RANK * WORLD_MAX // world
    q = {k: v[rank * rows : (rank + 1) * rows] for k, v in batch["query"].items()}
    p = {k: v[rank * rows * GROUP : (rank + 1) * rows * GROUP] for k, v in batch["passages"].items()}
    teacher = batch["teacher_scores"][rank * rows : (rank + 1) * rows]
    return {"query": q, "passages": p, "group_size": GROUP, "teacher_scores": teacher}


def run_case(vocab: Path, out_dir: Path, objective: str, mode: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    encoder = tiny_encoder(vocab, pooling="mean", initializer_range=0.2)
    criterion, dims = OBJECTIVES[objective]
    torch.manual_seed(7)
    guide = tiny_encoder(vocab, pooling="mean", initializer_range=0.2) if objective == "guided" else None
    module = BiEncoderModule(
        encoder,
        criterion,
        optimizer={"lr": 1e-3, "warmup_steps": 0},
        negatives_cross_device=world > 1,
        grad_cache={"enabled": mode == "cache", "chunk_size": 3},
        padding_free={"enabled": True, "chunk_rows": 3},
        mask_false_negatives=True,
        matryoshka={"dims": dims},
        guide_model=guide,
        guide_margin=0.05,
    )
    trainer = cpu_trainer(
        out_dir,
        devices=world,
        strategy=DDPStrategy(process_group_backend="gloo") if world > 1 else "auto",
        max_steps=1,
        callbacks=[MaskedRecorder(out_dir / f"{objective}_{mode}_rank{rank}.pt")],
    )
    trainer.fit(module, train_dataloaders=DataLoader([rank_slice(global_batch(encoder), rank, world)], batch_size=None))


if __name__ == "__main__":
    vocab_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    for name in OBJECTIVES:
        for step_mode in ("plain", "cache"):
            run_case(vocab_path, out, name, step_mode)
