"""`BiEncoderModule`: contrastive training of a shared query/passage encoder."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from ctem.distributed import all_gather_with_grad, all_reduce_gradients, rank_and_world
from ctem.encoder import TextEncoder
from ctem.grad_cache import (
    GradCacheConfig,
    blockwise_infonce,
    encode_without_graph,
    replay_with_graph,
    split_tokens,
    unsort,
)
from ctem.losses import InfoNCELoss, InfoNCEOutput, top1_accuracy
from ctem.modules.export import export_encoder
from ctem.optim import OptimizerConfig, build_optimizer_and_scheduler


class BiEncoderModule(L.LightningModule):
    """Trains ``encoder`` with ``loss`` on batches of the ``PairDataModule`` layout.

    Queries and passages share one encoder. With ``negatives_cross_device`` every rank
    scores its queries against the passages of all ranks (``all_gather_with_grad``), which
    makes the effective batch ``world_size * batch_size`` with exact gradients.

    With ``grad_cache.enabled`` a step runs the two-pass gradient cache
    (``ctem.grad_cache``) under Lightning manual optimisation: activation memory is that of
    one chunk whatever the batch size. Under DDP the gradient all-reduce then happens once
    per optimizer step (the DDP reducer is bypassed, ``all_reduce_gradients`` runs after
    the last chunk), not once per chunk.

    Logs ``train/loss``, ``train/accuracy`` (in-batch top-1: the positive scores highest),
    ``train/lr``, ``train/samples_per_s`` and ``train/tokens_per_s`` (global, all ranks).
    At the end of ``fit`` rank 0 writes ``final_model_dir`` with ``save_pretrained``.

    Args:
        encoder: the ``TextEncoder`` to train.
        loss: an ``InfoNCELoss``.
        optimizer: AdamW and learning-rate schedule settings.
        negatives_cross_device: share passages across ranks as negatives.
        grad_cache: gradient-cache settings (``GradCacheConfig`` fields).
        final_model_dir: where to write the trained encoder (``None``: nowhere).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        loss: InfoNCELoss,
        optimizer: OptimizerConfig | dict[str, Any] | None = None,
        negatives_cross_device: bool = False,
        grad_cache: GradCacheConfig | dict[str, Any] | None = None,
        final_model_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss
        self.optimizer_config = OptimizerConfig.from_any(optimizer)
        self.negatives_cross_device = negatives_cross_device
        self.grad_cache = grad_cache if isinstance(grad_cache, GradCacheConfig) else GradCacheConfig(**(grad_cache or {}))
        self.automatic_optimization = not self.grad_cache.enabled
        self.final_model_dir = final_model_dir
        self.save_hyperparameters(ignore=["encoder", "loss"])
        self._last_step_time: float | None = None

    # ------------------------------------------------------------------ loss
    def scoring(self) -> tuple[InfoNCELoss, bool]:
        """The loss for the current batch and whether its passages are shared across ranks."""
        return self.loss_fn, self.negatives_cross_device

    def contrastive_loss(self, q: torch.Tensor, p: torch.Tensor, group_size: int) -> InfoNCEOutput:
        """InfoNCE of local query embeddings ``[B, H]`` against local (or, cross-device,
        all ranks') passage embeddings ``[B * G, H]``."""
        loss_fn, cross_device = self.scoring()
        if cross_device:
            rank, _ = rank_and_world()
            return loss_fn(q, all_gather_with_grad(p), group_size, query_offset=rank * q.size(0))
        return loss_fn(q, p, group_size)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.grad_cache.enabled:
            loss, accuracy = self.cached_step(batch)
        else:
            q = self.encoder(**batch["query"])
            p = self.encoder(**batch["passages"])
            out = self.contrastive_loss(q, p, batch["group_size"])
            loss, accuracy = out.loss, top1_accuracy(out)
        self.log_step(loss, accuracy, batch)
        return loss

    def cached_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over ``batch`` with the gradient cache; returns loss and accuracy."""
        optimizer = self.optimizers()
        size = self.grad_cache.chunk_size
        q_chunks, q_order = split_tokens(batch["query"], size)
        p_chunks, p_order = split_tokens(batch["passages"], size)
        q_sorted, q_states = encode_without_graph(self.encoder, q_chunks)
        p_sorted, p_states = encode_without_graph(self.encoder, p_chunks)
        q, p = unsort(q_sorted, q_order), unsort(p_sorted, p_order)
        loss_fn, cross_device = self.scoring()
        with torch.enable_grad():
            p_leaf = p.requires_grad_(True)
            pool = all_gather_with_grad(p_leaf) if cross_device else p_leaf
            offset = rank_and_world()[0] * q.size(0) if cross_device else 0
            loss, accuracy, q_grad, pool_grad = blockwise_infonce(loss_fn, q, pool, batch["group_size"], offset, size)
            # back through the gather (an all-reduce of the gradient) to this rank's passages
            p_grad = torch.autograd.grad(pool, p_leaf, pool_grad)[0] if cross_device else pool_grad
        for surrogate in replay_with_graph(self.encoder, q_chunks, q_states, q_grad[q_order]):
            self.manual_backward(surrogate)
        for surrogate in replay_with_graph(self.encoder, p_chunks, p_states, p_grad[p_order]):
            self.manual_backward(surrogate)
        all_reduce_gradients(self.encoder.parameters())
        if self.grad_cache.max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_cache.max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        return loss, accuracy

    def log_step(self, loss: torch.Tensor, accuracy: torch.Tensor, batch: dict[str, Any], prefix: str = "train") -> None:
        """Loss, top-1 accuracy, learning rate and throughput of one step."""
        size = batch["query"]["input_ids"].size(0)
        self.log(f"{prefix}/loss", loss.detach(), prog_bar=True, batch_size=size, sync_dist=False)
        self.log(f"{prefix}/accuracy", accuracy, batch_size=size)
        if self.trainer is not None and self.trainer.optimizers:
            self.log(f"{prefix}/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        now = time.perf_counter()
        if self._last_step_time is not None:
            seconds = max(now - self._last_step_time, 1e-9)
            tokens = int(batch["query"]["attention_mask"].sum() + batch["passages"]["attention_mask"].sum())
            world = self.trainer.world_size if self.trainer is not None else 1
            self.log(f"{prefix}/samples_per_s", size * world / seconds, batch_size=size)
            self.log(f"{prefix}/tokens_per_s", tokens * world / seconds, batch_size=size)
        self._last_step_time = now

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Record in the encoder the instruction its retrieval queries train with (the
        datamodule's ``trained_query_instruction``), so evaluation during training and the
        exported model use the same one."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        trained = getattr(datamodule, "trained_query_instruction", None)
        if stage == "fit" and trained is not None:
            self.encoder.query_instruction = trained

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self) -> Any:
        return build_optimizer_and_scheduler(self, self.optimizer_config, self.trainer.estimated_stepping_batches)

    def on_train_start(self) -> None:
        """With the gradient cache, gradients are all-reduced once per step by
        ``all_reduce_gradients``, so the DDP reducer must stay idle."""
        ddp_model = getattr(self.trainer.strategy, "model", None)
        if self.grad_cache.enabled and hasattr(ddp_model, "require_backward_grad_sync"):
            ddp_model.require_backward_grad_sync = False

    # ------------------------------------------------------------------ export
    def on_fit_end(self) -> None:
        if self.final_model_dir:
            path = export_encoder(self.trainer, self.encoder, "encoder.", self.final_model_dir)
            if path is not None:
                print(f"[ctem] final model written to {path}")
