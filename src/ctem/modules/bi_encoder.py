"""`BiEncoderModule`: contrastive training of a shared query/passage encoder."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.nn.parallel import DistributedDataParallel

from ctem.distributed import all_gather_values, all_gather_with_grad, ddp_syncs_gradients, rank_and_world
from ctem.encoder import TextEncoder
from ctem.grad_cache import GradCacheConfig, blockwise_loss, embed_chunks, loss_with_replay
from ctem.losses import BatchLayout, Criterion, MatryoshkaConfig, text_keys, top1_accuracy
from ctem.modules.stage import EncoderStage
from ctem.optim import OptimizerConfig
from ctem.packing import PaddingFreeConfig, encode_padding_free, packs


class BiEncoderModule(EncoderStage):
    """Trains ``encoder`` with a criterion on batches of the ``PairDataModule`` layout.

    The step builds each batch's ``ctem.losses.BatchLayout`` (groups, in-batch and
    cross-device negatives, false negatives, teacher scores) and hands embeddings and
    layout to the criterion (``loss``, wrapped in ``MatryoshkaLoss`` with
    ``matryoshka.dims``); any ``ctem.losses.Criterion`` runs on every path below.

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

    With ``mask_false_negatives`` a passage whose tokens equal those of a query's positive
    (the same text) is not counted as that query's negative, on every path and across
    ranks; ``train/masked_negatives`` logs how many were masked per step (this rank's
    queries).

    Logs ``train/loss``, ``train/accuracy`` (in-batch top-1: the positive scores highest),
    ``train/lr``, ``train/samples_per_s`` and ``train/tokens_per_s`` (global, all ranks).
    At the end of ``fit`` rank 0 writes ``final_model_dir`` (``EncoderStage``).

    Args:
        encoder: the ``TextEncoder`` to train.
        loss: the criterion (``ctem.losses.Criterion``: ``InfoNCELoss``, ``DistillationLoss``, ...).
        optimizer: AdamW and learning-rate schedule settings.
        negatives_cross_device: share passages across ranks as negatives.
        grad_cache: gradient-cache settings (``GradCacheConfig`` fields).
        padding_free: padding-free encoding of the uncached step (``PaddingFreeConfig`` fields).
        final_model_dir: where to write the trained encoder (``None``: nowhere).
        in_batch_negatives: score queries against the whole batch (``False``: each
            against its own group only, every batch).
        mask_false_negatives: exclude passages identical to a query's positive from its negatives.
        guide_model: a guide model (folder or ``TextEncoder``, frozen, eval mode): a passage it
            scores above a query's positive less ``guide_margin`` is not that query's
            negative (GISTEmbed), on every path and across ranks; ``None``: no guide.
        guide_margin: see ``guide_model``.
        matryoshka: Matryoshka settings (``MatryoshkaConfig`` fields: ``dims``, ``weights``).
    """

    stage_name = "contrastive"
    stage_description = "general contrastive learning (C-Pack stage 2): InfoNCE over in-batch negatives"

    def __init__(
        self,
        encoder: TextEncoder,
        loss: Criterion,
        optimizer: OptimizerConfig | dict[str, Any] | None = None,
        negatives_cross_device: bool = False,
        grad_cache: GradCacheConfig | dict[str, Any] | None = None,
        final_model_dir: str | None = None,
        padding_free: PaddingFreeConfig | dict[str, Any] | None = None,
        in_batch_negatives: bool = True,
        mask_false_negatives: bool = False,
        matryoshka: MatryoshkaConfig | dict[str, Any] | None = None,
        guide_model: TextEncoder | str | None = None,
        guide_margin: float = 0.0,
    ) -> None:
        super().__init__(encoder, optimizer, final_model_dir)
        self.guide = TextEncoder.from_pretrained(guide_model) if isinstance(guide_model, str) else guide_model
        if self.guide is not None:
            self.guide.requires_grad_(False).eval()
        self.guide_margin = guide_margin
        self.matryoshka = matryoshka if isinstance(matryoshka, MatryoshkaConfig) else MatryoshkaConfig(**(matryoshka or {}))
        self.criterion = self.matryoshka.wrap(loss, normalize=encoder.normalize)
        self.negatives_cross_device = negatives_cross_device
        self.in_batch_negatives = in_batch_negatives
        self.mask_false_negatives = mask_false_negatives
        self.grad_cache = grad_cache if isinstance(grad_cache, GradCacheConfig) else GradCacheConfig(**(grad_cache or {}))
        self.padding_free = (
            padding_free if isinstance(padding_free, PaddingFreeConfig) else PaddingFreeConfig(**(padding_free or {}))
        )
        self.save_hyperparameters(ignore=["encoder", "loss", "guide_model"])

    # ------------------------------------------------------------------ loss
    def batch_layout(self, batch: dict[str, Any], num_queries: int) -> tuple[BatchLayout, bool]:
        """The layout of ``batch`` (``num_queries`` local queries) and whether its passages
        are gathered from every rank: in-batch negatives unless the stage or the batch
        (``"in_batch_negatives": False``) turns them off, and then across ranks with
        ``negatives_cross_device``; the keys of the passages' texts with
        ``mask_false_negatives`` (gathered like the passages); the batch's teacher scores."""
        in_batch = self.in_batch_negatives and bool(batch.get("in_batch_negatives", True))
        cross_device = in_batch and self.negatives_cross_device
        keys = None
        if self.mask_false_negatives:
            keys = text_keys(batch["passages"]["input_ids"], batch["passages"]["attention_mask"])
            keys = all_gather_values(keys) if cross_device else keys
        guide = None
        if self.guide is not None:
            with torch.no_grad():
                guide_q, guide_p = self.guide(**self.guide_tokens(batch["query"])), self.guide(**self.guide_tokens(batch["passages"]))
            guide = (guide_q, all_gather_values(guide_p) if cross_device else guide_p)
        teacher = batch.get("teacher_scores")
        if teacher is None and self.criterion.facts().needs_teacher_scores:
            raise ValueError(
                f"{type(self.criterion).__name__} needs teacher scores: every training row must carry "
                "pos_scores and neg_scores (write them with ctem-score)"
            )
        offset = rank_and_world()[0] * num_queries if cross_device else 0
        return BatchLayout(batch["group_size"], offset, in_batch, keys, teacher, guide, self.guide_margin), cross_device

    def guide_tokens(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``tokens`` for the guide model: as they are when it shares the encoder's
        vocabulary, else the texts decoded and tokenised again (sentence-transformers'
        GISTEmbedLoss does the same)."""
        assert self.guide is not None
        if self.guide.tokenizer.get_vocab() == self.encoder.tokenizer.get_vocab():
            return tokens
        texts = self.encoder.tokenizer.batch_decode(tokens["input_ids"], skip_special_tokens=True)
        retokenized = self.guide.tokenize(texts, self.guide.passage_max_length)
        return {k: v.to(tokens["input_ids"].device) for k, v in retokenized.items()}

    def train(self, mode: bool = True) -> "BiEncoderModule":
        """Train mode for the module, never for the guide model (no dropout in its scores)."""
        super().train(mode)
        if self.guide is not None:
            self.guide.eval()
        return self

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.grad_cache.enabled:
            loss, accuracy, masked = self.cached_loss(batch)
        else:
            q = self.encode_batch(batch["query"])
            p = self.encode_batch(batch["passages"])
            layout, cross_device = self.batch_layout(batch, q.size(0))
            out = self.criterion(q, all_gather_with_grad(p) if cross_device else p, layout)
            loss, accuracy, masked = out.loss, top1_accuracy(out), out.masked
        self.log_step(loss, accuracy, batch)
        if self.mask_false_negatives or self.guide is not None:
            size = batch["query"]["input_ids"].size(0)
            self.log("train/masked_negatives", masked.float(), batch_size=size, reduce_fx="sum")
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

    def cached_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pass 1 of the gradient cache over ``batch``: the loss (whose backward runs pass 2),
        the accuracy and the number of false negatives masked."""
        size = self.grad_cache.chunk_size
        queries = embed_chunks(self.encoder, batch["query"], size)
        passages = embed_chunks(self.encoder, batch["passages"], size)
        q = queries.embeddings
        layout, cross_device = self.batch_layout(batch, q.size(0))
        with torch.enable_grad():
            p_leaf = passages.embeddings.requires_grad_(True)
            pool = all_gather_with_grad(p_leaf) if cross_device else p_leaf
            cached = blockwise_loss(self.criterion, q, pool, layout, size)
            # back through the gather (an all-reduce of the gradient) to this rank's passages
            p_grad = torch.autograd.grad(pool, p_leaf, cached.passage_grad)[0] if cross_device else cached.passage_grad
        parameters = [p for p in self.encoder.parameters() if p.requires_grad]
        ddp_sync = ddp_syncs_gradients(self.trainer.strategy.model)
        inputs = [(queries, cached.query_grad), (passages, p_grad)]
        return loss_with_replay(cached.loss, self.encoder, inputs, parameters, ddp_sync), cached.accuracy, cached.masked

    def log_step(self, loss: torch.Tensor, accuracy: torch.Tensor, batch: dict[str, Any], prefix: str = "train") -> None:
        """Loss, top-1 accuracy, learning rate and throughput of one step."""
        size = batch["query"]["input_ids"].size(0)
        self.log(f"{prefix}/loss", loss.detach(), prog_bar=True, batch_size=size, sync_dist=False)
        self.log(f"{prefix}/accuracy", accuracy, batch_size=size)
        tokens = int(batch["query"]["attention_mask"].sum() + batch["passages"]["attention_mask"].sum())
        self.throughput.log(self, size, tokens, prefix)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Refuse the gradient cache under FSDP, and record in the encoder the Matryoshka
        dims the criterion trains, which the exported folder records (the query instruction
        is recorded by ``ctem-train``: ``ctem.cli.train.record_trained_instruction``)."""
        strategy = self.trainer.strategy if self._trainer is not None else None
        if self.grad_cache.enabled and isinstance(strategy, FSDPStrategy):
            raise ValueError(
                "the gradient cache (grad_cache.enabled) does not work with FSDP: it re-runs the encoder inside "
                "backward, outside FSDP's forward/backward pairing; use DDP, or FSDP with gradient checkpointing"
            )
        dims = self.criterion.facts().matryoshka_dims
        if stage == "fit" and dims is not None:
            self.encoder.matryoshka_dims = list(dims)

    def on_fit_start(self) -> None:
        """Refuse the gradient cache with DDP's unused-parameter search, which runs on the
        loss before backward and cannot see the parameters the replayed chunks use."""
        model = self.trainer.strategy.model
        if self.grad_cache.enabled and isinstance(model, DistributedDataParallel) and model.find_unused_parameters:
            raise ValueError(
                "the gradient cache (grad_cache.enabled) needs DDP with find_unused_parameters=false: its loss "
                "reaches the parameters only through the chunks it replays in backward"
            )

    # ------------------------------------------------------------------ model card
    def card_hyperparameters(self) -> dict[str, Any]:
        """The optimizer's rows, then the criterion's (``ctem.losses.CriterionFacts``) and the
        negatives' and gradient cache's settings."""
        objective = self.criterion.facts()
        dims = objective.matryoshka_dims
        return {
            **super().card_hyperparameters(),
            "objective": objective.name,
            "temperature": objective.temperature,
            **objective.settings,
            "matryoshka dims": None if dims is None else list(dims),
            "in-batch negatives": self.in_batch_negatives,
            "false-negative masking": self.mask_false_negatives,
            "cross-device negatives": self.negatives_cross_device,
            "gradient cache": f"chunks of {self.grad_cache.chunk_size}" if self.grad_cache.enabled else False,
        }
