"""How ctem embeds text outside training: one protocol, :class:`EncodeFn`, and its one
implementation for a ctem ``TextEncoder``, :class:`EncoderAdapter`, used by
``TextEncoder.encode``, evaluation, mining, curation scoring and the hard-negative refresh
callback.

:class:`EncoderAdapter` implements ``encode(texts, instruction=None, is_query=False)``:

- texts are ordered by length (longest first) and encoded in batches, so a batch
  carries little padding; the result keeps the input order;
- tokenised batches can be cached per distinct text list (one per task and role), so
  repeated evaluations during training tokenise each task once;
- with ``world_size > 1`` each rank encodes every ``world_size``-th text of the length
  order (an equal share of long and short texts, ``ctem.distributed.RankShards``) and an
  all-gather assembles the full ``[N, D]`` matrix on every rank;
- encoding runs in eval mode without gradients; the previous train/eval mode returns;
- a ``max_length`` the tokenizer cannot truncate to is refused up front, and non-finite
  embeddings (a model with NaN weights) raise ``ctem.finite.NonFiniteError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ctem.distributed import AllGather, RankShards
from ctem.finite import check_finite_embeddings
from ctem.tokenization import check_max_length


class EncodeFn(Protocol):
    """How evaluation, mining, curation scoring and the refresh callback embed text:
    ``encode(texts, instruction=None, is_query=False)`` -> float32 ``[len(texts), D]``, row
    ``i`` the embedding of ``texts[i]``.

    ``instruction`` (or ``None``) is prepended to every text by the implementation;
    ``is_query`` marks queries (a ``TextEncoder`` truncates them to ``query_max_length``).
    An implementation may be collective under DDP (:class:`EncoderAdapter` with
    ``world_size > 1``): every rank calls it with the same arguments and gets the whole array.
    """

    def __call__(self, texts: Sequence[str], instruction: str | None = None, is_query: bool = False) -> np.ndarray: ...



@dataclass
class _Plan:
    """This rank's share of one text list: its forward passes, tokenised when cached."""

    texts: list[str]  # instruction included
    max_length: int
    shards: RankShards
    batches: list[np.ndarray]  # positions of this rank's texts, one array per forward pass
    tokens: list[dict[str, torch.Tensor]] | None = None


class EncoderAdapter:
    """``EncodeFn`` of an ``nn.Module`` with ``tokenize(texts, max_length)``,
    ``forward(**tokens) -> [B, D]``, ``dim`` and ``query_max_length`` /
    ``passage_max_length`` (a ctem ``TextEncoder``).

    Args:
        encoder: the model; its ``device`` and parameters are used as they are.
        batch_size: texts per forward pass.
        max_length: token limit of every text (``SettingError`` naming ``max_length`` when
            it leaves no room for text); ``None``: the encoder's ``query_max_length`` for
            ``is_query`` calls, else its ``passage_max_length``.
        cache_tokenization: keep tokenised batches for texts seen before (memory grows
            with every distinct text list: off for one-off corpora).
        rank / world_size / all_gather: share the work across processes; ``all_gather``:
            ``[n, D] -> [world, n, D]`` (e.g. the Lightning strategy's; ``None``:
            ``torch.distributed``).
        show_progress: a progress bar per ``encode`` call, labelled ``progress_label``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        batch_size: int = 64,
        max_length: int | None = None,
        cache_tokenization: bool = True,
        rank: int = 0,
        world_size: int = 1,
        all_gather: AllGather | None = None,
        show_progress: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.encoder = encoder
        self.batch_size = batch_size
        self.max_length = None if max_length is None else check_max_length(encoder.tokenizer, max_length, "max_length")
        self.cache_tokenization = cache_tokenization
        self.rank = rank
        self.world_size = world_size
        self.all_gather = all_gather
        self.show_progress = show_progress
        self.progress_label: str | None = None
        self._cache: dict[str, _Plan] = {}
        self.texts_encoded = 0  # texts this rank has run through the model

    def __call__(self, texts: Sequence[str], instruction: str | None = None, is_query: bool = False) -> np.ndarray:
        """Embeddings ``[len(texts), D]`` float32, in input order."""
        texts = list(texts)
        max_length = self.max_length or getattr(self.encoder, "query_max_length" if is_query else "passage_max_length")
        key = _cache_key(texts, instruction, max_length)
        plan = self._cache.get(key) or self._plan(texts, instruction, max_length)
        if self.cache_tokenization:
            self._cache[key] = plan
        if self.world_size == 1:  # each batch straight to its rows: one [N, D] array at the peak
            out = np.empty((len(texts), int(self.encoder.dim)), dtype=np.float32)

            def into_rows(positions: np.ndarray, first: int, embeddings: torch.Tensor) -> None:
                out[positions] = embeddings.cpu().numpy()

            self._embed(plan, into_rows)
        else:
            device = next(self.encoder.parameters()).device
            local = torch.empty(len(plan.shards.mine), int(self.encoder.dim), device=device)

            def into_shard(positions: np.ndarray, first: int, embeddings: torch.Tensor) -> None:
                local[first : first + len(positions)] = embeddings

            self._embed(plan, into_shard)
            out = plan.shards.gather(local, self.all_gather)
        return check_finite_embeddings(out, "the model")  # on the gathered array: all ranks agree

    def clear_cache(self) -> None:
        """Forget all tokenised batches."""
        self._cache.clear()

    # ------------------------------------------------------------------ internals
    def _plan(self, texts: list[str], instruction: str | None, max_length: int) -> _Plan:
        if instruction:
            texts = [instruction + t for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        shards = RankShards.split(order, self.rank, self.world_size)
        batches = [shards.mine[start : start + self.batch_size] for start in range(0, len(shards.mine), self.batch_size)]
        plan = _Plan(texts, max_length, shards, batches)
        if self.cache_tokenization:
            plan.tokens = list(self._tokenize(plan))
        return plan

    def _tokenize(self, plan: _Plan) -> Iterator[dict[str, torch.Tensor]]:
        for positions in plan.batches:
            yield self.encoder.tokenize([plan.texts[i] for i in positions], plan.max_length)

    def _embed(self, plan: _Plan, keep: Callable[[np.ndarray, int, torch.Tensor], None]) -> None:
        """Run this rank's forward passes in shard order, handing each batch to ``keep(positions
        [B], first, embeddings [B, D])``: its text positions, the index of its first text in
        this rank's shard, and its float32 embeddings on the model device."""
        device = next(self.encoder.parameters()).device
        was_training = self.encoder.training
        self.encoder.eval()
        first = 0
        try:
            with torch.no_grad():
                for positions, tokens in tqdm(
                    zip(plan.batches, plan.tokens if plan.tokens is not None else self._tokenize(plan)),
                    total=len(plan.batches),
                    desc=self.progress_label or "encode",
                    disable=not self.show_progress,
                    leave=False,
                ):
                    batch = {k: v.to(device) for k, v in tokens.items()}
                    keep(positions, first, self.encoder(**batch).float())
                    first += len(positions)
        finally:
            self.encoder.train(was_training)
        self.texts_encoded += len(plan.shards.mine)


def _cache_key(texts: list[str], instruction: str | None, max_length: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{max_length}\x01{instruction or ''}\x01".encode("utf-8"))
    for text in texts:
        digest.update(text.encode("utf-8") + b"\x00")
    return f"{len(texts)}:{digest.hexdigest()}"
