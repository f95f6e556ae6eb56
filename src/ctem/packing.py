"""Padding-free encoding of a training batch.

The collator pads every row to the batch's longest one; on real, uneven text most token
positions are then padding (two thirds on the Chinese rows of ``docs/benchmarks.md``), and
every layer's matrix products and activations pay for them. Two ways around it, both
exact (padding never changes a real token's states), chosen by the backbone's attention:

- **Packed** (``flash_attention_2`` / ``flash_attention_3``, CUDA only, optional): the real
  tokens of all rows go through the backbone as one sequence ``[1, T]`` with their own
  position ids, and flash-attention's variable-length kernel keeps rows apart
  (``cu_seq_lens``): no padding anywhere. Only for model types whose position ids are the
  column index (``PACKABLE_MODEL_TYPES``).
- **Length-sorted micro-chunks** (SDPA and eager: CPU, or GPU without flash-attention):
  rows sorted longest first, cut into chunks of at most ``chunk_rows`` rows and
  ``chunk_tokens`` token positions (rows x the chunk's longest row), each trimmed to its
  longest row and encoded with the autograd graph; the embeddings are put back in batch
  order, so the loss (which does not depend on encoding order) is unchanged.

``split_tokens`` and ``unsort`` are also the chunking of the gradient cache
(``ctem.grad_cache``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Tokens = dict[str, torch.Tensor]

# Attention implementations with a variable-length (packed sequences) kernel that
# transformers feeds from ``cu_seq_lens_*`` / ``max_length_*`` keyword arguments.
VARLEN_ATTENTION: set[str] = {"flash_attention_2", "flash_attention_3"}
# Model types whose padded forward uses position id = column index (so a packed row with
# those position ids computes exactly what its padded row does).
PACKABLE_MODEL_TYPES: set[str] = {"bert"}


# Default token positions per micro-chunk: on a CPU the cost is per token and a chunk's
# fixed cost is small, so small chunks (little padding) win; a GPU needs larger chunks to
# stay busy (a large batch's sorted rows still carry little padding in them).
CPU_CHUNK_TOKENS = 256
ACCELERATOR_CHUNK_TOKENS = 8192


@dataclass
class PaddingFreeConfig:
    """enabled: encode the plain (uncached) step without padding (see the module docstring).
    chunk_rows / chunk_tokens: a micro-chunk holds at most this many rows (``None``: any
    number) and this many token positions, rows x its longest row (``None``: by device,
    ``CPU_CHUNK_TOKENS`` or ``ACCELERATOR_CHUNK_TOKENS``); at least one row."""

    enabled: bool = True
    chunk_rows: int | None = None
    chunk_tokens: int | None = None

    def token_limit(self, device: torch.device) -> int:
        """``chunk_tokens``, or the default for ``device``."""
        if self.chunk_tokens is not None:
            return self.chunk_tokens
        return CPU_CHUNK_TOKENS if device.type == "cpu" else ACCELERATOR_CHUNK_TOKENS

    def __post_init__(self) -> None:
        for name in ("chunk_rows", "chunk_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"padding_free.{name} must be >= 1 or null, got {value}")


def split_tokens(
    tokens: Tokens, chunk_size: int | None, max_tokens: int | None = None
) -> tuple[list[Tokens], torch.Tensor]:
    """Row chunks of a token dict ``[N, L]``, rows sorted longest first so each chunk
    (trimmed to its own longest row) carries little padding.

    A chunk holds at most ``chunk_size`` rows (``None``: any number) and at most
    ``max_tokens`` token positions, i.e. rows x its longest row (``None``: any number), and
    at least one row. Returns the chunks and ``order`` ``[N]``: chunk rows, concatenated,
    are rows ``order`` of ``tokens`` (``unsort(torch.cat(chunk_embeddings), order)``
    restores the input order).
    """
    for name, value in (("chunk_size", chunk_size), ("max_tokens", max_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    mask = tokens["attention_mask"]
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()
    total, chunks, start = order.numel(), [], 0
    while start < total:
        longest = max(int(sorted_lengths[start]), 1)
        rows = total - start if chunk_size is None else chunk_size
        if max_tokens is not None:
            rows = min(rows, max(1, max_tokens // longest))
        index = order[start : start + rows]
        chunk = {k: v[index] for k, v in tokens.items()}
        length = max(int(sorted_lengths[start]), 1)
        if chunk["attention_mask"][:, length:].any():  # left padding: keep all columns
            length = chunk["attention_mask"].size(1)
        chunks.append({k: v[:, :length] for k, v in chunk.items()})
        start += rows
    return chunks, order


def unsort(sorted_rows: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows in input order from rows in ``order`` (the inverse of ``x[order]``; a gather,
    so gradients flow back to ``sorted_rows``)."""
    return sorted_rows[torch.argsort(order)]


def packs(backbone: torch.nn.Module) -> bool:
    """Whether ``backbone`` runs packed sequences exactly: a variable-length attention
    (``VARLEN_ATTENTION``) and a model type of ``PACKABLE_MODEL_TYPES``."""
    config = getattr(backbone, "config", None)
    return (
        getattr(config, "_attn_implementation", None) in VARLEN_ATTENTION
        and getattr(config, "model_type", None) in PACKABLE_MODEL_TYPES
    )


def packed_hidden(
    backbone: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last hidden states ``[N, L, H]`` of padded rows ``[N, L]`` (zeros at padding),
    computed by running only their real tokens, packed into one sequence ``[1, T]``, through
    ``backbone`` with variable-length attention (``packs(backbone)`` must hold)."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    columns = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    cu = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    longest = int(lengths.max())
    inputs = {"input_ids": input_ids[mask][None], "position_ids": columns[mask][None]}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids[mask][None]
    hidden = backbone(
        **inputs, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest
    ).last_hidden_state[0]
    out = hidden.new_zeros(*mask.shape, hidden.size(-1))
    out[mask] = hidden
    return out


def encode_padding_free(
    encode: Callable[..., torch.Tensor],
    tokens: Tokens,
    chunk_rows: int | None,
    chunk_tokens: int | None,
    packed: bool = False,
) -> torch.Tensor:
    """Embeddings ``[N, H]`` of ``tokens`` ``[N, L]`` in input order, with the autograd
    graph, computed without padding: ``encode(**tokens, packed=True)`` in one call when
    ``packed`` (the encoder's backbone ``packs``), else ``encode`` on length-sorted chunks
    (``split_tokens``)."""
    if packed:
        return encode(**tokens, packed=True)
    chunks, order = split_tokens(tokens, chunk_rows, chunk_tokens)
    if len(chunks) == 1:
        return unsort(encode(**chunks[0]), order)
    return unsort(torch.cat([encode(**chunk) for chunk in chunks]), order)
