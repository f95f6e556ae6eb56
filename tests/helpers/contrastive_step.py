"""One contrastive optimizer step, for the cross-device equality test.

Run as ``python contrastive_step.py VOCAB OUT`` (one process, the whole batch) or under
``torchrun --nproc_per_node 2`` (each rank its half). For each case (hard negatives or not;
mode ``padded`` (one padded encoder call per input), ``plain`` (padding-free micro-chunks of
at most 3 rows, the default path) or ``cache`` (the gradient cache); and two micro-batches
accumulated into one clipped step) it writes
``OUT/<case>_rank<r>.pt`` with the rank's loss, the parameter gradients seen just before
the optimizer step, the weights after it, and how many gradient buckets DDP all-reduced.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctem.losses import InfoNCELoss  # noqa: E402
from ctem.modules import BiEncoderModule  # noqa: E402
from tests.helpers.tiny import sentences, tiny_encoder  # noqa: E402
from tests.helpers.trainer import cpu_trainer  # noqa: E402

QUERIES_PER_RANK = 4
WORLD_MAX = 2


class GradientRecorder(L.Callback):
    """Gradients before the optimizer step, weights after it, and the number of gradient
    buckets DDP all-reduced (counted by a communication hook)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.grads: dict[str, torch.Tensor] = {}
        self.allreduces = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        if dist.is_initialized():
            trainer.strategy.model.register_comm_hook(None, self.count_allreduce)

    def count_allreduce(self, state, bucket):
        self.allreduces += 1
        return allreduce_hook(state, bucket)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {
            n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        torch.save({"loss": float(loss), "grads": self.grads, "weights": weights, "allreduces": self.allreduces}, self.out)


def global_batch(encoder, group_size: int, seed: int = 0) -> dict:
    n = QUERIES_PER_RANK * WORLD_MAX
    queries = sentences(n, seed=1 + seed)
    passages = sentences(n * group_size, seed=2 + seed, max_len=20)
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


def run_case(vocab: Path, out_dir: Path, name: str, group_size: int, mode: str, accumulate: int = 1) -> None:
    """One optimizer step over ``accumulate`` micro-batches (accumulated steps are also
    clipped, with AdamW's update about linear in the gradient: see test_grad_cache.py)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    # Mean pooling and a wide initialisation keep random embeddings apart, so the loss is
    # far from uniform and the gradients are not dominated by rounding.
    encoder = tiny_encoder(vocab, pooling="mean", initializer_range=0.2)
    batches = [rank_slice(global_batch(encoder, group_size, seed=10 * i), rank, world) for i in range(accumulate)]
    optimizer = {"lr": 1e-3, "warmup_steps": 0} if accumulate == 1 else {"lr": 1.0, "eps": 1.0, "warmup_steps": 0}
    module = BiEncoderModule(
        encoder,
        InfoNCELoss(temperature=0.05),
        optimizer=optimizer,
        negatives_cross_device=world > 1,
        grad_cache={"enabled": mode == "cache", "chunk_size": 3},
        padding_free={"enabled": mode != "padded", "chunk_rows": 3},
    )
    trainer = cpu_trainer(
        out_dir,
        devices=world,
        strategy=DDPStrategy(process_group_backend="gloo") if world > 1 else "auto",
        max_steps=1,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=0.05 if accumulate > 1 else None,
        callbacks=[GradientRecorder(out_dir / f"{name}_rank{rank}.pt")],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))


if __name__ == "__main__":
    vocab_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    for mode in ("padded", "plain", "cache"):
        for group in (1, 2):
            run_case(vocab_path, out, f"g{group}_{mode}", group, mode)
        run_case(vocab_path, out, f"acc2_{mode}", 2, mode, accumulate=2)
