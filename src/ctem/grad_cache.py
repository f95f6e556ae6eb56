"""Gradient cache (Gao et al., 2021): contrastive batches far larger than memory.

A step over a batch of any size in two passes:

1. forward (``embed_chunks``): encode every chunk of ``chunk_size`` rows without an
   autograd graph, remembering the random state (dropout) and autocast settings before
   each chunk; then compute the loss over all embeddings (any ``ctem.losses.Criterion``)
   and its gradient with respect to the embeddings, a block of queries at a time
   (``blockwise_loss``);
2. backward (``loss_with_replay``): the loss handed to the trainer is a leaf whose
   backward hook re-encodes each chunk with a graph under the recorded state and
   back-propagates ``g * sum(embeddings * cached_gradient)``, ``g`` being the gradient the
   trainer's backward brings to the loss (its accumulation and AMP scaling), so the
   parameters receive ``g`` times the full-batch gradient.

Because all parameter gradients arise inside the trainer's own backward, gradient
clipping, accumulation, AMP and schedulers compose with it unchanged. Under DDP only the
last chunk back-propagates through the parameters' gradient accumulators, so DDP's
reducer all-reduces the batch's summed gradient once (the other chunks use
``torch.autograd.grad``, which the reducer does not see).

Peak activation memory is that of one chunk, and the loss never holds more than a
``[chunk_size, N]`` slice of the score matrix, so memory grows linearly with the batch.
Rows are chunked longest first to cut padding (``ctem.packing.split_tokens``). The result
equals the uncached gradient (up to float rounding). Reference: Gao, Zhang, Han, Callan, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", RepL4NLP 2021.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ctem.losses import BatchLayout, Criterion
from ctem.packing import Tokens, split_tokens, unsort

__all__ = [
    "GradCacheConfig", "ForwardState", "EmbeddedChunks", "CachedLoss", "blockwise_loss", "embed_chunks",
    "loss_with_replay", "split_tokens", "unsort",
]  # fmt: skip


@dataclass
class GradCacheConfig:
    """enabled: use the two-pass step. chunk_size: rows encoded at once (queries and
    passages are chunked separately), and queries scored at once by the loss."""

    enabled: bool = False
    chunk_size: int = 64


class ForwardState:
    """The CPU and (on CUDA) device random state and the autocast settings at construction;
    ``replay()`` runs a block under them again (same dropout masks, same precision) and
    restores the surrounding random state afterwards."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.autocast = {
            "enabled": torch.is_autocast_enabled(device.type),
            "dtype": torch.get_autocast_dtype(device.type),
            "cache_enabled": torch.is_autocast_cache_enabled(),
        }

    @contextmanager
    def replay(self) -> Iterator[None]:
        devices = [self.device] if self.cuda_rng is not None else []
        with torch.random.fork_rng(devices=devices), torch.autocast(self.device.type, **self.autocast):
            torch.set_rng_state(self.cpu_rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, self.device)
            yield


@dataclass
class CachedLoss:
    """The loss over a whole batch from :func:`blockwise_loss`: ``loss`` (mean over the
    queries), ``accuracy`` (top-1), ``masked`` (false negatives excluded) and the loss's
    gradients with respect to the queries ``[B, H]`` and passages ``[N, H]``."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    masked: torch.Tensor
    query_grad: torch.Tensor
    passage_grad: torch.Tensor


def blockwise_loss(
    criterion: Criterion,
    queries: torch.Tensor,
    passages: torch.Tensor,
    layout: BatchLayout,
    block_size: int,
) -> CachedLoss:
    """``criterion`` over all ``queries`` ``[B, H]`` and its gradients, ``block_size`` queries at a time.

    Only a ``[block_size, N]`` slice of the score matrix exists at once, so memory grows
    linearly with the batch instead of quadratically. Exact for any criterion whose loss is
    the mean of per-query terms (``ctem.losses``): each block's mean, weighted by its share
    of the queries, adds up to the batch's.
    """
    total = queries.size(0)
    passages = passages.detach().requires_grad_(True)
    q_grad = torch.zeros_like(queries)
    p_grad = torch.zeros_like(passages)
    loss = torch.zeros((), device=queries.device)
    correct = torch.zeros((), device=queries.device)
    masked = torch.zeros((), dtype=torch.long, device=queries.device)
    with torch.enable_grad():
        for start in range(0, total, block_size):
            block = queries[start : start + block_size].detach().requires_grad_(True)
            out = criterion(block, passages, layout.rows(start, start + block.size(0)))
            share = out.loss * (block.size(0) / total)
            block_grad, passage_grad = torch.autograd.grad(share, [block, passages])
            q_grad[start : start + block.size(0)] = block_grad
            p_grad += passage_grad
            loss += share.detach()
            correct += (out.scores.argmax(dim=1) == out.targets).sum()
            masked += out.masked
    return CachedLoss(loss, correct / total, masked, q_grad, p_grad)


@dataclass
class EmbeddedChunks:
    """Pass 1 over one input (a batch's queries or its passages)."""

    embeddings: torch.Tensor  # [N, H] in input order, without a graph
    chunks: list[Tokens]  # <= chunk_size rows each, longest first
    order: torch.Tensor  # [N]: the chunks' rows, concatenated, are input rows `order`
    states: list[ForwardState]  # before each chunk


def embed_chunks(encode: Callable[..., torch.Tensor], tokens: Tokens, chunk_size: int) -> EmbeddedChunks:
    """Pass 1: embed ``tokens`` ``[N, L]`` chunk by chunk without a graph, recording each
    chunk's forward state."""
    chunks, order = split_tokens(tokens, chunk_size)
    states, outputs = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(ForwardState(chunk["input_ids"].device))
            outputs.append(encode(**chunk))
    return EmbeddedChunks(unsort(torch.cat(outputs), order), chunks, order, states)


def loss_with_replay(
    loss: torch.Tensor,
    encode: Callable[..., torch.Tensor],
    inputs: Sequence[tuple[EmbeddedChunks, torch.Tensor]],
    parameters: Sequence[torch.nn.Parameter],
    ddp_sync: bool,
) -> torch.Tensor:
    """Pass 2, run by the backward of the returned copy of ``loss`` (a scalar leaf).

    ``inputs``: each input's pass 1 and the loss's gradient with respect to its embeddings
    ``[N, H]`` (input order). The backward hook replays every chunk with a graph and
    back-propagates ``sum(embeddings * cached_gradient)`` times the incoming gradient into
    ``parameters``' ``.grad``. ``ddp_sync``: this backward's gradient accumulation fires
    DDP's all-reduce (a DDP model outside ``no_sync``); every chunk but the last then gets
    its gradient from ``torch.autograd.grad`` (invisible to DDP, one transient copy of the
    gradients) and adds it to ``.grad``, so DDP all-reduces the sum once, at the last chunk.
    """
    jobs = [job for embedded, grad in inputs for job in _chunk_rows(embedded, grad)]

    def replay(grad_output: torch.Tensor) -> None:
        with torch.enable_grad():
            for index, (chunk, state, grad) in enumerate(jobs):
                with state.replay():
                    embeddings = encode(**chunk)
                surrogate = (embeddings * grad).sum()
                if ddp_sync and index < len(jobs) - 1:
                    _add_to_grad(parameters, torch.autograd.grad(surrogate, parameters, grad_output, allow_unused=True))
                else:
                    surrogate.backward(grad_output)
        jobs.clear()  # free the cached gradients and chunks

    out = loss.detach().requires_grad_(True)
    out.register_hook(replay)
    return out


def _chunk_rows(embedded: EmbeddedChunks, grad: torch.Tensor) -> Iterator[tuple[Tokens, ForwardState, torch.Tensor]]:
    """Each chunk with its state and its rows of ``grad`` (input order ``[N, H]``)."""
    in_chunk_order = grad[embedded.order]
    start = 0
    for chunk, state in zip(embedded.chunks, embedded.states):
        rows = chunk["input_ids"].size(0)
        yield chunk, state, in_chunk_order[start : start + rows]
        start += rows


def _add_to_grad(parameters: Sequence[torch.nn.Parameter], grads: Sequence[torch.Tensor | None]) -> None:
    for parameter, grad in zip(parameters, grads):
        if grad is None:
            continue
        if parameter.grad is None:
            parameter.grad = grad
        else:
            parameter.grad.add_(grad)
