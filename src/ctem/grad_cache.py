"""Gradient cache (Gao et al., 2021): contrastive batches far larger than memory.

A step over a batch of any size in two passes:

1. encode every chunk of ``chunk_size`` rows without an autograd graph, remembering the
   random state before each chunk (dropout);
2. compute the loss on the full embedding matrix and its gradient with respect to the
   embeddings; then re-encode each chunk with a graph under the same random state and
   back-propagate ``sum(embeddings * cached_gradient)``, whose parameter gradient is the
   chunk's share of the full-batch gradient.

Peak activation memory is that of one chunk; the result equals the uncached gradient
(up to float rounding). Reference: Gao, Zhang, Han, Callan, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", RepL4NLP 2021.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

Tokens = dict[str, torch.Tensor]


@dataclass
class GradCacheConfig:
    """enabled: use the two-pass step. chunk_size: rows encoded at once (queries and
    passages are chunked separately). max_grad_norm: clip the global gradient norm
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


def split_tokens(tokens: Tokens, chunk_size: int) -> list[Tokens]:
    """Row chunks ``[<=chunk_size, L]`` of a token dict; each chunk trimmed to its own
    longest row so short rows are not padded to the batch maximum."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = tokens["input_ids"].size(0)
    chunks = []
    for start in range(0, rows, chunk_size):
        chunk = {k: v[start : start + chunk_size] for k, v in tokens.items()}
        length = int(chunk["attention_mask"].sum(dim=1).max())
        if chunk["attention_mask"][:, length:].any():  # left padding: keep all columns
            length = chunk["attention_mask"].size(1)
        chunks.append({k: v[:, :length] for k, v in chunk.items()})
    return chunks


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
