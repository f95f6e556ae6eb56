"""Contrastive training objectives: the layout of a batch and the criteria applied to it.

The seam: a :class:`BatchLayout` says which passages each query is scored against (its
group of positive + hard negatives, every passage of the batch or of all ranks, the
passages excluded as false negatives, the teacher's scores of the group);
:func:`score_batch` turns embeddings and a layout into a :class:`Scores` record; a
:class:`Criterion` turns embeddings and a layout into a :class:`CriterionOutput` (the
loss, and the scores and targets its metrics read). The training paths (plain,
padding-free, gradient cache, cross-device) only build layouts and call criteria, so a
new objective is one ``Criterion`` subclass and its config.

Contract of every criterion: its loss is the **mean over the given queries** of a
per-query term that depends on that query's own row of scores (and its own teacher
scores). The gradient cache (a block of queries at a time) and DDP (each rank its
queries) rely on it to reproduce the full-batch loss exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import nn


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class BatchLayout:
    """Which passages each query of a batch is scored against.

    Passages come in groups of ``group_size``, one group per query, positive first:
    ``passages[g*G]`` is the positive of query ``g``, ``passages[g*G+1:(g+1)*G]`` its hard
    negatives. ``passages`` may be the all-gathered passages of every rank while the
    queries are this rank's own: ``query_offset`` is then the global index of the first
    local query, so local query ``i``'s positive is row ``(query_offset + i) * G``.

    Args:
        group_size: ``G``, passages per query.
        query_offset: global index of the first query.
        in_batch_negatives: score each query against every passage given (other queries'
            positives and negatives too); ``False``: against its own group only (per batch,
            like FlagEmbedding's ``no_in_batch_neg_flag``).
        passage_keys: ``[N]`` int64, one key per passage given (``ctem.losses.text_keys``):
            a passage whose key equals the query's positive's key is not counted as its
            negative (in-batch false-negative masking). ``None``: nothing is excluded.
        teacher_scores: ``[B, G]`` teacher scores of each query's group (positive first),
            for distillation; ``None`` without a teacher.
        guide: a guide model's embeddings of the queries ``[B, Hg]`` and of the passages
            given ``[N * G, Hg]`` (GISTEmbed): a passage the guide scores above the query's
            positive (less ``guide_margin``) is not counted as its negative. ``None``: no guide.
        guide_margin: see ``guide``.
    """

    group_size: int
    query_offset: int = 0
    in_batch_negatives: bool = True
    passage_keys: torch.Tensor | None = None
    teacher_scores: torch.Tensor | None = field(default=None, repr=False)
    guide: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    guide_margin: float = 0.0

    def rows(self, start: int, stop: int) -> "BatchLayout":
        """The layout of the queries ``start:stop`` of this one (a gradient-cache block)."""
        teacher = None if self.teacher_scores is None else self.teacher_scores[start:stop]
        guide = None if self.guide is None else (self.guide[0][start:stop], self.guide[1])
        return replace(self, query_offset=self.query_offset + start, teacher_scores=teacher, guide=guide)


@dataclass
class Scores:
    """Query-passage similarities of a batch under a layout (plain dot products, no temperature).

    ``scores`` ``[B, C]`` over each query's candidates (every passage given, or its own
    group), excluded candidates set to ``-inf``; ``targets`` ``[B]`` the positive's column;
    ``masked`` the number of excluded candidates (a 0-d tensor); ``group`` (computed when
    read) ``[B, G]`` each query's own group, positive first, nothing excluded.
    """

    scores: torch.Tensor
    targets: torch.Tensor
    masked: torch.Tensor
    unmasked: torch.Tensor = field(repr=False)
    group_columns: torch.Tensor | None = field(repr=False)  # None: ``unmasked`` is the groups

    @property
    def group(self) -> torch.Tensor:
        return self.unmasked if self.group_columns is None else self.unmasked.gather(1, self.group_columns)


def score_batch(queries: torch.Tensor, passages: torch.Tensor, layout: BatchLayout) -> Scores:
    """Similarities of ``queries`` ``[B, H]`` and ``passages`` ``[N * G, H]`` under ``layout``
    (float32; embeddings are used as given: normalise them for cosine similarity)."""
    num_queries, group_size, offset = queries.size(0), layout.group_size, layout.query_offset
    if passages.size(0) % group_size != 0:
        raise ValueError(f"{passages.size(0)} passages do not split into groups of {group_size}")
    if passages.size(0) < (offset + num_queries) * group_size:
        raise ValueError(
            f"{passages.size(0)} passages cannot hold the groups of queries "
            f"{offset}..{offset + num_queries - 1} (group size {group_size})"
        )
    q, p = queries.float(), passages.float()
    local = torch.arange(num_queries, device=q.device)
    own_start = (local + offset) * group_size  # [B]: each query's positive row
    own_columns = own_start[:, None] + torch.arange(group_size, device=q.device)  # [B, G]
    if layout.in_batch_negatives:
        scores = q @ p.T  # [B, N*G]
        targets, group_columns = own_start, own_columns
    else:
        own = p[offset * group_size : (offset + num_queries) * group_size].view(num_queries, group_size, -1)
        scores = torch.einsum("bh,bgh->bg", q, own)  # [B, G]
        targets, group_columns = torch.zeros(num_queries, dtype=torch.long, device=q.device), None
    masked = torch.zeros((), dtype=torch.long, device=q.device)
    unmasked = scores
    excluded = _false_negatives(layout, own_columns if group_columns is None else None, own_start, p.size(0))
    if excluded is not None:
        excluded[local, targets] = False
        masked = excluded.sum()
        scores = scores.masked_fill(excluded, float("-inf"))
    return Scores(scores, targets, masked, unmasked, group_columns)


def _false_negatives(
    layout: BatchLayout, own_columns: torch.Tensor | None, own_start: torch.Tensor, num_passages: int
) -> torch.Tensor | None:
    """``[B, C]`` bool: the candidates (``own_columns`` ``[B, G]``, else every passage) that
    are not the query's negatives: the same text as its positive (``passage_keys``), or
    scored by the guide above its positive less the margin; ``None`` when nothing is checked."""
    if layout.passage_keys is None and layout.guide is None:
        return None
    device = own_start.device
    columns = own_columns if own_columns is not None else torch.arange(num_passages, device=device).expand(own_start.size(0), -1)
    excluded = torch.zeros(columns.shape, dtype=torch.bool, device=device)
    if layout.passage_keys is not None:
        keys = layout.passage_keys.to(device)
        excluded |= keys[columns] == keys[own_start][:, None]
    if layout.guide is not None:
        guide_q, guide_p = (t.to(device).float() for t in layout.guide)
        guided = torch.einsum("bh,bch->bc", guide_q, guide_p[columns]) if own_columns is not None else guide_q @ guide_p.T
        positive = (guide_q * guide_p[own_start]).sum(dim=1, keepdim=True)
        excluded |= guided > positive - layout.guide_margin
    return excluded


def text_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One int64 key per row of tokens ``[N, L]``: equal for rows with the same tokens (the
    same text after tokenisation and truncation), different otherwise but with probability
    about 2^-60 (two polynomial hashes modulo the prime 2^31 - 1). Padding is ignored."""
    prime = 2**31 - 1
    ids = (input_ids.long() + 1) * attention_mask.long()  # 0 only at padding
    hashes = []
    for base in (1_000_003, 998_244_353):
        powers = _mod_powers(base, ids.size(1), prime).to(ids.device)
        hashes.append((ids * powers % prime).sum(dim=1) % prime)
    return hashes[0] * prime + hashes[1]


def _mod_powers(base: int, length: int, prime: int) -> torch.Tensor:
    """``[base^0, ..., base^(length-1)]`` modulo ``prime`` (int64)."""
    values, value = [], 1
    for _ in range(length):
        values.append(value)
        value = value * base % prime
    return torch.tensor(values, dtype=torch.long)


# --------------------------------------------------------------------------- criteria
@dataclass
class CriterionOutput:
    """``loss`` (scalar, mean over queries), ``scores`` ``[B, C]`` and ``targets`` ``[B]``
    (the top-1 accuracy's inputs), ``masked`` (false negatives excluded, 0-d tensor)."""

    loss: torch.Tensor
    scores: torch.Tensor
    targets: torch.Tensor
    masked: torch.Tensor


@dataclass(frozen=True)
class CriterionFacts:
    """What a criterion declares about itself, for metrics, logs and the model card.

    ``name``: the objective in words; ``temperature``: τ of its InfoNCE term (``None``
    without one); ``needs_teacher_scores``: batches must carry the teacher's scores;
    ``matryoshka_dims``: the embedding prefixes it trains (``None``: the full embedding);
    ``settings``: its other hyper-parameters by name.
    """

    name: str
    temperature: float | None = None
    needs_teacher_scores: bool = False
    matryoshka_dims: tuple[int, ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class Criterion(nn.Module, ABC):
    """A contrastive objective: query and passage embeddings under a :class:`BatchLayout`
    -> :class:`CriterionOutput`. Its loss must be the mean over the queries of per-query
    terms (see the module docstring)."""

    @abstractmethod
    def forward(self, queries: torch.Tensor, passages: torch.Tensor, layout: BatchLayout) -> CriterionOutput:
        """Loss of ``queries`` ``[B, H]`` against ``passages`` ``[N * G, H]``."""

    @abstractmethod
    def facts(self) -> CriterionFacts:
        """What this criterion declares (``CriterionFacts``)."""


def _check_temperature(name: str, value: float) -> None:
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be > 0, got {value}")


class InfoNCELoss(Criterion):
    r"""InfoNCE over in-batch passages and each query's hard negatives (C-Pack, eq. 1).

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_{i=1}^{B}
            \log \frac{\exp(q_i \cdot p_i^{+} / \tau)}{\sum_{p \in \mathcal{P}_i} \exp(q_i \cdot p / \tau)}

    :math:`\mathcal{P}_i` is every passage given (layout ``in_batch_negatives``) or query
    ``i``'s own group, less the passages the layout excludes as false negatives.

    Args:
        temperature: τ; C-Pack uses 0.02 (0.01 in fine-tuning).

    References:
        - Xiao et al., "C-Pack: Packaged Resources To Advance General Chinese Embedding", 2023.
        - Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question Answering", 2020.
        - sentence-transformers ``MultipleNegativesRankingLoss`` (the same loss, scale = 1/τ).

    Inputs:
        +----------------------------------+------------------------------------------+
        | Embeddings                       | Layout                                   |
        +==================================+==========================================+
        | queries [B, H], passages [N*G, H]| group_size G, query_offset, in-batch flag|
        +----------------------------------+------------------------------------------+

    Example:
        ::

            loss = InfoNCELoss(temperature=0.02)
            out = loss(q, p, BatchLayout(group_size=2))
            out.loss.backward()
    """

    def __init__(self, temperature: float = 0.02) -> None:
        super().__init__()
        _check_temperature("temperature", temperature)
        self.temperature = temperature

    def forward(self, queries: torch.Tensor, passages: torch.Tensor, layout: BatchLayout) -> CriterionOutput:
        scored = score_batch(queries, passages, layout)
        scores = scored.scores / self.temperature
        loss = nn.functional.cross_entropy(scores, scored.targets)
        return CriterionOutput(loss, scores, scored.targets, scored.masked)

    def facts(self) -> CriterionFacts:
        return CriterionFacts("InfoNCE", temperature=self.temperature)


def top1_accuracy(out: CriterionOutput) -> torch.Tensor:
    """Share of queries whose positive scores highest (in-batch top-1 accuracy)."""
    return (out.scores.argmax(dim=1) == out.targets).float().mean()


class MatryoshkaLoss(Criterion):
    r"""A criterion applied at several prefixes of the embedding, weighted and summed
    (Matryoshka representation learning): the first ``d`` values of an embedding are a
    usable embedding of their own for each ``d`` of ``dims``.

    .. math::
        \mathcal{L} = \sum_{d \in \text{dims}} w_d \, \mathcal{L}_{\text{inner}}(q_{:d}, p_{:d})

    The layout (groups, in-batch and cross-device negatives, excluded false negatives,
    teacher scores) is the same at every prefix, so this composes with the gradient cache,
    padding-free encoding and cross-device negatives like any criterion.

    Args:
        criterion: the inner criterion (e.g. ``InfoNCELoss``).
        dims: embedding prefixes, e.g. ``[768, 384, 192, 96]`` (the largest first: its scores
            are the ones the accuracy reads).
        weights: one weight per dim (``None``: 1 each).
        normalize: L2-normalise each prefix (for a normalised encoder: cosine similarity).

    References:
        - Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.
        - sentence-transformers ``MatryoshkaLoss`` (with ``n_dims_per_step=-1``).

    Inputs:
        As the inner criterion.

    Example:
        ::

            loss = MatryoshkaLoss(InfoNCELoss(0.02), dims=[64, 32, 16])
            out = loss(q, p, BatchLayout(group_size=2))
    """

    def __init__(
        self,
        criterion: Criterion,
        dims: Sequence[int],
        weights: Sequence[float] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"matryoshka dims must be positive sizes, got {dims}")
        if len(set(dims)) != len(dims):
            raise ValueError(f"matryoshka dims repeat a size: {dims}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"{len(weights)} matryoshka weights for {len(dims)} dims")
        order = sorted(range(len(dims)), key=lambda i: -dims[i])
        self.criterion = criterion
        self.dims = [dims[i] for i in order]
        self.weights = [weights[i] for i in order]
        self.normalize = normalize

    def forward(self, queries: torch.Tensor, passages: torch.Tensor, layout: BatchLayout) -> CriterionOutput:
        if self.dims[0] > queries.size(1):
            raise ValueError(f"matryoshka dim {self.dims[0]} exceeds the embedding size {queries.size(1)}")
        outs = [self.criterion(*self._prefix(queries, passages, dim), layout) for dim in self.dims]
        total = sum(weight * out.loss for weight, out in zip(self.weights, outs))
        first = outs[0]
        return CriterionOutput(total, first.scores, first.targets, first.masked)  # type: ignore[arg-type]

    def _prefix(self, queries: torch.Tensor, passages: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        q, p = queries[:, :dim], passages[:, :dim]
        if self.normalize:
            return nn.functional.normalize(q, dim=-1), nn.functional.normalize(p, dim=-1)
        return q, p

    def facts(self) -> CriterionFacts:
        inner = self.criterion.facts()
        settings = {**inner.settings, "matryoshka weights": self.weights}
        return replace(inner, name=f"Matryoshka({inner.name})", matryoshka_dims=tuple(self.dims), settings=settings)


@dataclass
class MatryoshkaConfig:
    """``stage.matryoshka``: ``dims`` the embedding prefixes to train (``None``: the full
    embedding only), ``weights`` one per dim (``None``: 1 each)."""

    dims: list[int] | None = None
    weights: list[float] | None = None

    def wrap(self, criterion: Criterion, normalize: bool) -> Criterion:
        """``criterion`` at each of ``dims`` (``MatryoshkaLoss``), or as it is without dims."""
        if not self.dims:
            return criterion
        return MatryoshkaLoss(criterion, self.dims, self.weights, normalize=normalize)


class DistillationLoss(Criterion):
    r"""InfoNCE plus a KL-divergence term that pulls the student's score distribution over
    each query's group towards the teacher's.

    .. math::
        \mathcal{L} = w_{\text{nce}} \mathcal{L}_{\text{InfoNCE}}
            + w_{\text{kl}} \frac{1}{B} \sum_{i=1}^{B}
              \mathrm{KL}\big(\mathrm{softmax}(t_i / \tau_t) \,\|\, \mathrm{softmax}(s_i / \tau)\big)

    :math:`s_i` are the student's dot products with query ``i``'s group (positive first,
    no passage excluded), :math:`t_i` the teacher's scores of the same passages (the rows'
    ``pos_scores`` / ``neg_scores``, the layout's ``teacher_scores``). The KL term equals
    sentence-transformers' ``DistillKLDivLoss(student_temperature=τ, teacher_temperature=τ_t)``
    divided by τ² (which that loss multiplies in).

    Args:
        temperature: τ of the InfoNCE term and of the student's distribution.
        teacher_temperature: τ_t dividing the teacher's scores (1.0 for cross-encoder logits;
            about τ for a bi-encoder teacher's cosine scores).
        kl_weight: w_kl.
        infonce_weight: w_nce (0: distillation alone).

    References:
        - Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015.
        - FlagEmbedding ``AbsEmbedderModel.distill_loss`` (``kl_div``, teacher scores in the
          rows); sentence-transformers ``DistillKLDivLoss``.

    Inputs:
        +----------------------------------+------------------------------------------+
        | Embeddings                       | Layout                                   |
        +==================================+==========================================+
        | queries [B, H], passages [N*G, H]| as InfoNCE, plus teacher_scores [B, G]   |
        +----------------------------------+------------------------------------------+

    Example:
        ::

            loss = DistillationLoss(temperature=0.02, kl_weight=1.0)
            out = loss(q, p, BatchLayout(group_size=4, teacher_scores=t))
    """

    def __init__(
        self,
        temperature: float = 0.02,
        teacher_temperature: float = 1.0,
        kl_weight: float = 1.0,
        infonce_weight: float = 1.0,
    ) -> None:
        super().__init__()
        _check_temperature("temperature", temperature)
        _check_temperature("teacher_temperature", teacher_temperature)
        self.temperature = temperature
        self.teacher_temperature = teacher_temperature
        self.kl_weight = kl_weight
        self.infonce_weight = infonce_weight

    def forward(self, queries: torch.Tensor, passages: torch.Tensor, layout: BatchLayout) -> CriterionOutput:
        if layout.teacher_scores is None:
            raise ValueError("DistillationLoss needs teacher scores: rows with pos_scores / neg_scores")
        scored = score_batch(queries, passages, layout)
        scores = scored.scores / self.temperature
        teacher = layout.teacher_scores.to(scores.device).float()
        if teacher.shape != scored.group.shape:
            raise ValueError(f"teacher scores {tuple(teacher.shape)} do not match the groups {tuple(scored.group.shape)}")
        student_log = torch.log_softmax(scored.group / self.temperature, dim=1)
        target = torch.softmax(teacher / self.teacher_temperature, dim=1)
        kl = nn.functional.kl_div(student_log, target, reduction="batchmean")
        loss = self.kl_weight * kl
        if self.infonce_weight:
            loss = loss + self.infonce_weight * nn.functional.cross_entropy(scores, scored.targets)
        return CriterionOutput(loss, scores, scored.targets, scored.masked)

    def facts(self) -> CriterionFacts:
        settings = {
            "teacher temperature": self.teacher_temperature,
            "KL weight": self.kl_weight,
            "InfoNCE weight": self.infonce_weight,
        }
        return CriterionFacts("InfoNCE + teacher KL", self.temperature, needs_teacher_scores=True, settings=settings)
