"""`BiEncoderModule`: contrastive training of a shared query/passage encoder."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.nn.parallel import DistributedDataParallel

from ctem.distributed import all_gather_with_grad, ddp_syncs_gradients, rank_and_world
from ctem.encoder import TextEncoder
from ctem.grad_cache import GradCacheConfig, blockwise_infonce, embed_chunks, loss_with_replay
from ctem.losses import InfoNCELoss, InfoNCEOutput, top1_accuracy
from ctem.modules.export import export_encoder
from ctem.modules.throughput import Throughput
from ctem.optim import OptimizerConfig, build_optimizer_and_scheduler
from ctem.packing import PaddingFreeConfig, encode_padding_free, packs


class BiEncoderModule(L.LightningModule):
    """Trains ``encoder`` with ``loss`` on batches of the ``PairDataModule`` layout.

    Queries and passages share one encoder. With ``negatives_cross_device`` every rank
    scores its queries against the passages of all ranks (``all_gather_with_grad``), which
    makes the effective batch ``world_size * batch_size`` with exact gradients. A batch
    with ``"in_batch_negatives": False`` (``LabeledDataModule``, per dataset) is scored
    against each query's own group only (positive + hard negatives, same temperature) and
    skips the cross-device gather.

    With ``grad_cache.enabled`` the step runs the two-pass gradient cache
    (``ctem.grad_cache``): activation memory is that of one chunk whatever the batch size.
    ``training_step`` returns a loss whose backward replays the chunks, so Lightning's
    gradient clipping, accumulation, precision and scheduling apply unchanged, and under
    DDP the gradients are all-reduced once per optimizer step. Not available under FSDP,
    nor with DDP's ``find_unused_parameters``.

    Without the cache, ``padding_free.enabled`` (the default) encodes each batch without
    paying for padding (``ctem.packing``): packed into one sequence when the backbone has a
    variable-length attention (flash-attention on CUDA), else as length-sorted micro-chunks
    (``chunk_rows`` / ``chunk_tokens``) trimmed to their longest row and encoded with the
    graph; embeddings return to batch order, so the loss, the in-batch and cross-device
    negatives and the gradients are those of the padded batch (up to float rounding; with
    dropout on, the masks are drawn differently).

    Logs ``train/loss``, ``train/accuracy`` (in-batch top-1: the positive scores highest),
    ``train/lr``, ``train/samples_per_s`` and ``train/tokens_per_s`` (global, all ranks).
    At the end of ``fit`` rank 0 writes ``final_model_dir`` with ``save_pretrained``.

    Args:
        encoder: the ``TextEncoder`` to train.
        loss: an ``InfoNCELoss``.
        optimizer: AdamW and learning-rate schedule settings.
        negatives_cross_device: share passages across ranks as negatives.
        grad_cache: gradient-cache settings (``GradCacheConfig`` fields).
        padding_free: padding-free encoding of the uncached step (``PaddingFreeConfig`` fields).
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
        padding_free: PaddingFreeConfig | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss
        self.own_group_loss_fn = InfoNCELoss(temperature=loss.temperature, in_batch_negatives=False)
        self.optimizer_config = OptimizerConfig.from_any(optimizer)
        self.negatives_cross_device = negatives_cross_device
        self.grad_cache = grad_cache if isinstance(grad_cache, GradCacheConfig) else GradCacheConfig(**(grad_cache or {}))
        self.final_model_dir = final_model_dir
        self.padding_free = (
            padding_free if isinstance(padding_free, PaddingFreeConfig) else PaddingFreeConfig(**(padding_free or {}))
        )
        self.save_hyperparameters(ignore=["encoder", "loss"])
        self.throughput = Throughput()

    # ------------------------------------------------------------------ loss
    def scoring(self, in_batch_negatives: bool) -> tuple[InfoNCELoss, bool]:
        """The loss for a batch and whether its passages are shared across ranks: the
        configured ones, or for a batch without in-batch negatives each query's own group
        of local passages only (nothing gathered from other ranks)."""
        if in_batch_negatives:
            return self.loss_fn, self.negatives_cross_device
        return self.own_group_loss_fn, False

    def contrastive_loss(
        self, q: torch.Tensor, p: torch.Tensor, group_size: int, in_batch_negatives: bool = True
    ) -> InfoNCEOutput:
        """InfoNCE of local query embeddings ``[B, H]`` against local (or, cross-device,
        all ranks') passage embeddings ``[B * G, H]``."""
        loss_fn, cross_device = self.scoring(in_batch_negatives)
        if cross_device:
            rank, _ = rank_and_world()
            return loss_fn(q, all_gather_with_grad(p), group_size, query_offset=rank * q.size(0))
        return loss_fn(q, p, group_size)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        in_batch_negatives = bool(batch.get("in_batch_negatives", True))
        if self.grad_cache.enabled:
            loss, accuracy = self.cached_loss(batch, in_batch_negatives)
        else:
            q = self.encode_batch(batch["query"])
            p = self.encode_batch(batch["passages"])
            out = self.contrastive_loss(q, p, batch["group_size"], in_batch_negatives)
            loss, accuracy = out.loss, top1_accuracy(out)
        self.log_step(loss, accuracy, batch)
        return loss

    def encode_batch(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings ``[N, H]`` of padded ``tokens`` ``[N, L]`` with the graph: padding-free
        (``ctem.packing.encode_padding_free``) when ``padding_free.enabled``, else one padded call."""
        config = self.padding_free
        if not config.enabled:
            return self.encoder(**tokens)
        limit = config.token_limit(tokens["input_ids"].device)
        packed = packs(self.encoder.backbone)
        return encode_padding_free(self.encoder, tokens, config.chunk_rows, limit, packed=packed)

    def cached_loss(self, batch: dict[str, Any], in_batch_negatives: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1 of the gradient cache over ``batch``: the loss (whose backward runs pass 2)
        and the accuracy."""
        size = self.grad_cache.chunk_size
        queries = embed_chunks(self.encoder, batch["query"], size)
        passages = embed_chunks(self.encoder, batch["passages"], size)
        loss_fn, cross_device = self.scoring(in_batch_negatives)
        q = queries.embeddings
        with torch.enable_grad():
            p_leaf = passages.embeddings.requires_grad_(True)
            pool = all_gather_with_grad(p_leaf) if cross_device else p_leaf
            offset = rank_and_world()[0] * q.size(0) if cross_device else 0
            loss, accuracy, q_grad, pool_grad = blockwise_infonce(loss_fn, q, pool, batch["group_size"], offset, size)
            # back through the gather (an all-reduce of the gradient) to this rank's passages
            p_grad = torch.autograd.grad(pool, p_leaf, pool_grad)[0] if cross_device else pool_grad
        parameters = [p for p in self.encoder.parameters() if p.requires_grad]
        ddp_sync = ddp_syncs_gradients(self.trainer.strategy.model)
        return loss_with_replay(loss, self.encoder, [(queries, q_grad), (passages, p_grad)], parameters, ddp_sync), accuracy

    def log_step(self, loss: torch.Tensor, accuracy: torch.Tensor, batch: dict[str, Any], prefix: str = "train") -> None:
        """Loss, top-1 accuracy, learning rate and throughput of one step."""
        size = batch["query"]["input_ids"].size(0)
        self.log(f"{prefix}/loss", loss.detach(), prog_bar=True, batch_size=size, sync_dist=False)
        self.log(f"{prefix}/accuracy", accuracy, batch_size=size)
        tokens = int(batch["query"]["attention_mask"].sum() + batch["passages"]["attention_mask"].sum())
        self.throughput.log(self, size, tokens, prefix)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Refuse the gradient cache under FSDP, and record in the encoder the instruction
        its retrieval queries train with (the datamodule's ``trained_query_instruction``),
        so evaluation during training and the exported model use the same one."""
        strategy = self.trainer.strategy if self._trainer is not None else None
        if self.grad_cache.enabled and isinstance(strategy, FSDPStrategy):
            raise ValueError(
                "the gradient cache (grad_cache.enabled) does not work with FSDP: it re-runs the encoder inside "
                "backward, outside FSDP's forward/backward pairing; use DDP, or FSDP with gradient checkpointing"
            )
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        trained = getattr(datamodule, "trained_query_instruction", None)
        if stage == "fit" and trained is not None:
            self.encoder.query_instruction = trained

    def on_fit_start(self) -> None:
        """Refuse the gradient cache with DDP's unused-parameter search, which runs on the
        loss before backward and cannot see the parameters the replayed chunks use."""
        model = self.trainer.strategy.model
        if self.grad_cache.enabled and isinstance(model, DistributedDataParallel) and model.find_unused_parameters:
            raise ValueError(
                "the gradient cache (grad_cache.enabled) needs DDP with find_unused_parameters=false: its loss "
                "reaches the parameters only through the chunks it replays in backward"
            )

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self) -> Any:
        return build_optimizer_and_scheduler(self, self.optimizer_config, self.trainer.estimated_stepping_batches)

    # ------------------------------------------------------------------ export
    def on_fit_end(self) -> None:
        if self.final_model_dir:
            path = export_encoder(self.trainer, self.encoder, "encoder.", self.final_model_dir)
            if path is not None:
                print(f"[ctem] final model written to {path}")
