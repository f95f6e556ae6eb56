"""InfoNCE contrastive loss with in-batch and hard negatives."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class InfoNCEOutput(NamedTuple):
    """``loss`` (scalar), ``scores`` ``[B, C]`` (already divided by τ) and ``targets`` ``[B]``."""

    loss: torch.Tensor
    scores: torch.Tensor
    targets: torch.Tensor


class InfoNCELoss(nn.Module):
    r"""InfoNCE over in-batch passages and each query's hard negatives (C-Pack, eq. 1).

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_{i=1}^{B}
            \log \frac{\exp(q_i \cdot p_i^{+} / \tau)}{\sum_{p \in \mathcal{P}_i} \exp(q_i \cdot p / \tau)}

    Passage layout: passages come in groups of ``G = group_size``, one group per query,
    positive first: ``passages[g*G]`` is the positive of query ``g`` and
    ``passages[g*G+1 : (g+1)*G]`` are its hard negatives. With ``in_batch_negatives``
    (default) :math:`\mathcal{P}_i` is every passage given (all groups, so every other
    query's positive and negatives too); otherwise only query ``i``'s own group.

    Cross-device use: ``passages`` may be the all-gathered global passage matrix while
    ``queries`` are this rank's own; ``query_offset`` is then the global index of the first
    local query (``rank * B_local``), so query ``i``'s positive is row
    ``(query_offset + i) * G``. The mean is over the given queries; DDP's gradient averaging
    of the per-rank means then equals the global-batch mean exactly (see
    ``ctem.distributed.all_gather_with_grad``).

    Shapes: ``queries`` ``[B, H]``, ``passages`` ``[N * G, H]`` with ``N >= query_offset + B``.
    Embeddings are used as given (normalise them for cosine similarity).

    Args:
        temperature: τ; C-Pack uses 0.02 (0.01 in fine-tuning).
        in_batch_negatives: score each query against all passages, not only its group.

    References:
        Xiao et al., "C-Pack: Packaged Resources To Advance General Chinese Embedding", 2023.
        Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question Answering", 2020.
    """

    def __init__(self, temperature: float = 0.02, in_batch_negatives: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives

    def forward(
        self,
        queries: torch.Tensor,
        passages: torch.Tensor,
        group_size: int,
        query_offset: int = 0,
    ) -> InfoNCEOutput:
        num_queries = queries.size(0)
        if passages.size(0) % group_size != 0:
            raise ValueError(
                f"{passages.size(0)} passages do not split into groups of {group_size}"
            )
        if passages.size(0) < (query_offset + num_queries) * group_size:
            raise ValueError(
                f"{passages.size(0)} passages cannot hold the groups of queries "
                f"{query_offset}..{query_offset + num_queries - 1} (group size {group_size})"
            )
        q = queries.float()
        p = passages.float()
        if self.in_batch_negatives:
            scores = q @ p.T / self.temperature  # [B, N*G]
            local = torch.arange(num_queries, device=q.device)
            targets = (local + query_offset) * group_size
        else:
            start = query_offset * group_size
            own = p[start : start + num_queries * group_size].view(num_queries, group_size, -1)
            scores = torch.einsum("bh,bgh->bg", q, own) / self.temperature  # [B, G]
            targets = torch.zeros(num_queries, dtype=torch.long, device=q.device)
        loss = nn.functional.cross_entropy(scores, targets)
        return InfoNCEOutput(loss, scores, targets)


def top1_accuracy(out: InfoNCEOutput) -> torch.Tensor:
    """Share of queries whose positive scores highest (in-batch top-1 accuracy)."""
    return (out.scores.argmax(dim=1) == out.targets).float().mean()
