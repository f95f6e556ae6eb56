"""Gradient cache (Gao et al., 2021): contrastive batches far larger than memory.

A step over a batch of any size in two passes:

1. encode every chunk of ``chunk_size`` rows without an autograd graph, remembering the
   random state before each chunk (dropout);
2. compute the loss over all embeddings and its gradient with respect to the embeddings,
   a block of queries at a time (``blockwise_infonce``); then re-encode each chunk with a
   graph under the same random state and back-propagate ``sum(embeddings *
   cached_gradient)``, whose parameter gradient is the chunk's share of the full-batch
   gradient.

Peak activation memory is that of one chunk, and the loss never holds more than a
``[chunk_size, N]`` slice of the score matrix, so memory grows linearly with the batch.
Rows are chunked longest first to cut padding. The result equals the uncached gradient
(up to float rounding). Reference: Gao, Zhang, Han, Callan, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", RepL4NLP 2021.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ctem.losses import InfoNCELoss

Tokens = dict[str, torch.Tensor]


@dataclass
class GradCacheConfig:
    """enabled: use the two-pass step. chunk_size: rows encoded at once (queries and
    passages are chunked separately), and queries scored at once by the loss. max_grad_norm: clip the global gradient norm
    (Lightning's ``gradient_clip_val`` does not apply to this manually optimised step)."""

    enabled: bool = False
    chunk_size: int = 64
    max_grad_norm: float | None = None


class RandomState:
    """The CPU and (if used) CUDA random state at construction; ``restore()`` replays it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> "_Restored":
        return _Restored(self)


class _Restored:
    def __init__(self, state: RandomState) -> None:
        self.state = state
        devices = [state.device] if state.cuda_state is not None else []
        self._fork = torch.random.fork_rng(devices=devices, enabled=True)

    def __enter__(self) -> None:
        self._fork.__enter__()
        torch.set_rng_state(self.state.cpu_state)
        if self.state.cuda_state is not None:
            torch.cuda.set_rng_state(self.state.cuda_state, self.state.device)

    def __exit__(self, *exc: object) -> None:
        self._fork.__exit__(*exc)


def split_tokens(tokens: Tokens, chunk_size: int) -> tuple[list[Tokens], torch.Tensor]:
    """Row chunks ``[<=chunk_size, L]`` of a token dict, rows sorted longest first so each
    chunk (trimmed to its own longest row) carries little padding.

    Returns the chunks and ``order`` ``[N]``: chunk rows, concatenated, are rows ``order``
    of ``tokens`` (``embeddings[order] = torch.cat(chunk_embeddings)`` restores the input
    order).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    mask = tokens["attention_mask"]
    order = torch.argsort(mask.sum(dim=1), descending=True, stable=True)
    chunks = []
    for start in range(0, order.numel(), chunk_size):
        rows = order[start : start + chunk_size]
        chunk = {k: v[rows] for k, v in tokens.items()}
        length = int(chunk["attention_mask"].sum(dim=1).max())
        if chunk["attention_mask"][:, length:].any():  # left padding: keep all columns
            length = chunk["attention_mask"].size(1)
        chunks.append({k: v[:, :length] for k, v in chunk.items()})
    return chunks, order


def unsort(sorted_rows: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows in input order from rows in ``order`` (the inverse of ``x[order]``)."""
    out = torch.empty_like(sorted_rows)
    out[order] = sorted_rows
    return out


def blockwise_infonce(
    loss_fn: InfoNCELoss,
    queries: torch.Tensor,
    passages: torch.Tensor,
    group_size: int,
    query_offset: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """InfoNCE over all ``queries`` ``[B, H]`` and its gradients, ``block_size`` queries at a time.

    Only a ``[block_size, N]`` slice of the score matrix exists at once, so memory grows
    linearly with the batch instead of quadratically. Returns the loss (mean over the
    queries), the top-1 accuracy, and the gradients with respect to ``queries`` ``[B, H]``
    and ``passages`` ``[N, H]``; ``query_offset`` as in ``InfoNCELoss``.
    """
    total = queries.size(0)
    passages = passages.detach().requires_grad_(True)
    q_grad = torch.zeros_like(queries)
    p_grad = torch.zeros_like(passages)
    loss = torch.zeros((), device=queries.device)
    correct = torch.zeros((), device=queries.device)
    with torch.enable_grad():
        for start in range(0, total, block_size):
            block = queries[start : start + block_size].detach().requires_grad_(True)
            out = loss_fn(block, passages, group_size, query_offset=query_offset + start)
            share = out.loss * (block.size(0) / total)
            block_grad, passage_grad = torch.autograd.grad(share, [block, passages])
            q_grad[start : start + block.size(0)] = block_grad
            p_grad += passage_grad
            loss += share.detach()
            correct += (out.scores.argmax(dim=1) == out.targets).sum()
    return loss, correct / total, q_grad, p_grad


def encode_without_graph(
    encode: Callable[..., torch.Tensor], chunks: list[Tokens]
) -> tuple[torch.Tensor, list[RandomState]]:
    """Pass 1: embeddings ``[N, H]`` of all chunks (no graph) and each chunk's random state."""
    states, outputs = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(chunk["input_ids"].device))
            outputs.append(encode(**chunk))
    return torch.cat(outputs), states


def replay_with_graph(
    encode: Callable[..., torch.Tensor],
    chunks: list[Tokens],
    states: list[RandomState],
    embedding_grad: torch.Tensor,
) -> Iterator[torch.Tensor]:
    """Pass 2: for each chunk, the surrogate scalar ``sum(emb * cached_grad)`` to back-propagate
    (the caller runs backward on each before the next chunk is encoded)."""
    start = 0
    for chunk, state in zip(chunks, states):
        rows = chunk["input_ids"].size(0)
        with state.restore():
            emb = encode(**chunk)
        yield (emb * embedding_grad[start : start + rows].to(emb.dtype)).sum()
        start += rows
