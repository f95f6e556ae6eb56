"""``encode`` functions for evaluation built from a ctem ``TextEncoder``.

:class:`EncoderAdapter` implements the evaluators' ``encode(texts, instruction)``:

- texts are ordered by length (longest first) and encoded in batches, so a batch
  carries little padding; the result keeps the input order;
- tokenised batches are cached per distinct text list (one per task and role), so
  repeated evaluations during training tokenise each task once;
- with ``world_size > 1`` each rank encodes every ``world_size``-th text of the length
  order (an equal share of long and short texts) and ``all_gather`` assembles the full
  ``[N, D]`` matrix on every rank;
- encoding runs in eval mode without gradients; the previous train/eval mode returns;
- a ``max_length`` the tokenizer cannot truncate to is refused up front, and non-finite
  embeddings (a model with NaN weights) raise ``ctem.finite.NonFiniteError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ctem.finite import check_finite_embeddings
from ctem.tokenization import check_max_length

AllGather = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Plan:
    """This rank's share of one text list: tokenised batches and their positions."""

    n_texts: int
    shards: list[np.ndarray]  # positions encoded by each rank
    batches: list[tuple[np.ndarray, dict[str, torch.Tensor]]]


class EncoderAdapter:
    """Evaluation ``encode`` for an ``nn.Module`` with ``tokenize(texts, max_length)``,
    ``forward(**tokens) -> [B, D]`` and ``dim`` (a ctem ``TextEncoder``).

    Args:
        encoder: the model; its ``device`` and parameters are used as they are.
        batch_size: texts per forward pass.
        max_length: token limit; default the encoder's ``passage_max_length``
            (``SettingError`` naming ``max_length`` when it leaves no room for text).
        cache_tokenization: keep tokenised batches for texts seen before.
        rank / world_size / all_gather: share the work across processes
            (``all_gather``: ``[n, D] -> [world, n, D]``, e.g. the Lightning strategy's).
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
        if world_size > 1 and all_gather is None:
            raise ValueError("world_size > 1 needs an all_gather function")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.encoder = encoder
        self.batch_size = batch_size
        self.max_length = max_length or getattr(encoder, "passage_max_length")
        check_max_length(encoder.tokenizer, self.max_length, "max_length")
        self.cache_tokenization = cache_tokenization
        self.rank = rank
        self.world_size = world_size
        self.all_gather = all_gather
        self.show_progress = show_progress
        self.progress_label: str | None = None
        self._cache: dict[str, _Plan] = {}
        self.texts_encoded = 0  # texts this rank has run through the model

    def __call__(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Embeddings ``[len(texts), D]`` float32, in input order."""
        texts = list(texts)
        key = _cache_key(texts, instruction)
        plan = self._cache.get(key) or self._plan(texts, instruction)
        if self.cache_tokenization:
            self._cache[key] = plan
        local = self._embed(plan)
        if self.world_size == 1:
            out = np.empty((plan.n_texts, local.shape[1]), dtype=np.float32)
            out[plan.shards[0]] = local.cpu().numpy()
        else:
            out = self._gather(plan, local)
        return check_finite_embeddings(out, "the model")  # on the gathered array: all ranks agree

    def clear_cache(self) -> None:
        """Forget all tokenised batches."""
        self._cache.clear()

    # ------------------------------------------------------------------ internals
    def _plan(self, texts: list[str], instruction: str | None) -> _Plan:
        if instruction:
            texts = [instruction + t for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        shards = [order[r :: self.world_size] for r in range(self.world_size)]
        mine = shards[self.rank]
        batches = []
        for start in range(0, len(mine), self.batch_size):
            positions = mine[start : start + self.batch_size]
            tokens = self.encoder.tokenize([texts[i] for i in positions], self.max_length)
            batches.append((positions, tokens))
        return _Plan(len(texts), shards, batches)

    def _embed(self, plan: _Plan) -> torch.Tensor:
        """This rank's embeddings ``[len(shard), D]`` in shard order, on the model device."""
        device = next(self.encoder.parameters()).device
        was_training = self.encoder.training
        self.encoder.eval()
        outputs = []
        try:
            with torch.no_grad():
                for _, tokens in tqdm(
                    plan.batches,
                    desc=self.progress_label or "encode",
                    disable=not self.show_progress,
                    leave=False,
                ):
                    batch = {k: v.to(device) for k, v in tokens.items()}
                    outputs.append(self.encoder(**batch).float())
        finally:
            self.encoder.train(was_training)
        self.texts_encoded += sum(len(p) for p, _ in plan.batches)
        if outputs:
            return torch.cat(outputs)
        return torch.empty(0, int(self.encoder.dim), device=device)

    def _gather(self, plan: _Plan, local: torch.Tensor) -> np.ndarray:
        width = max(len(s) for s in plan.shards)
        padded = torch.zeros(width, local.shape[1], dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        gathered = self.all_gather(padded).reshape(self.world_size, width, -1).cpu().numpy()
        out = np.empty((plan.n_texts, gathered.shape[-1]), dtype=np.float32)
        for r, positions in enumerate(plan.shards):
            out[positions] = gathered[r, : len(positions)]
        return out


def _cache_key(texts: list[str], instruction: str | None) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update((instruction or "").encode("utf-8") + b"\x01")
    for text in texts:
        digest.update(text.encode("utf-8") + b"\x00")
    return f"{len(texts)}:{digest.hexdigest()}"
