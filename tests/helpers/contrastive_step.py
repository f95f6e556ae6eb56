"""One contrastive optimizer step, for the cross-device equality test.

Run as ``python contrastive_step.py VOCAB OUT`` (one process, the whole batch) or under
``torchrun --nproc_per_node 2`` (each rank its half). For each case (hard negatives or not,
gradient cache or not) it writes ``OUT/<case>_rank<r>.pt`` with the rank's loss and the
parameter gradients seen just before the optimizer step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctem.losses import InfoNCELoss  # noqa: E402
from ctem.modules import BiEncoderModule  # noqa: E402
from tests.helpers.tiny import sentences, tiny_encoder  # noqa: E402

QUERIES_PER_RANK = 4
WORLD_MAX = 2


class GradientRecorder(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {
            n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        torch.save({"loss": float(loss), "grads": self.grads}, self.out)


def global_batch(encoder, group_size: int) -> dict:
    n = QUERIES_PER_RANK * WORLD_MAX
    queries = sentences(n, seed=1)
    passages = sentences(n * group_size, seed=2, max_len=20)
    return {
        "query": encoder.tokenize(queries, 16),
        "passages": encoder.tokenize(passages, 24),
        "group_size": group_size,
    }


def rank_slice(batch: dict, rank: int, world: int) -> dict:
    q_rows = QUERIES_PER_RANK * WORLD_MAX // world
    g = batch["group_size"]
    q = {k: v[rank * q_rows : (rank + 1) * q_rows] for k, v in batch["query"].items()}
    p = {k: v[rank * q_rows * g : (rank + 1) * q_rows * g] for k, v in batch["passages"].items()}
    return {"query": q, "passages": p, "group_size": g}


def run_case(vocab: Path, out_dir: Path, group_size: int, cache: bool) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    # Mean pooling and a wide initialisation keep random embeddings apart, so the loss is
    # far from uniform and the gradients are not dominated by rounding.
    encoder = tiny_encoder(vocab, pooling="mean", initializer_range=0.2)
    batch = rank_slice(global_batch(encoder, group_size), rank, world)
    module = BiEncoderModule(
        encoder,
        InfoNCELoss(temperature=0.05),
        optimizer={"lr": 1e-3, "warmup_steps": 0},
        negatives_cross_device=world > 1,
        grad_cache={"enabled": cache, "chunk_size": 3},
    )
    name = f"g{group_size}_{'cache' if cache else 'plain'}"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world,
        strategy=DDPStrategy(process_group_backend="gloo") if world > 1 else "auto",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[GradientRecorder(out_dir / f"{name}_rank{rank}.pt")],
    )
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))


if __name__ == "__main__":
    vocab_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    for group in (1, 2):
        for cached in (False, True):
            run_case(vocab_path, out, group, cached)
