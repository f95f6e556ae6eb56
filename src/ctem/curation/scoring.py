"""Cosine scores of (query, positive) pairs under any embedding model ctem can load.

Texts are tokenised without padding and batched by exact token length, and each cosine is
computed pair by pair, so a score does not depend on which other texts share its batch
beyond float32 kernel noise in the last bits (some matrix kernels sum in another order for
other batch shapes). ``ScoreFilter`` in the pipeline absorbs that noise when curated
output is curated again.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from ctem.instructions import resolve_instruction
from ctem.encoder import Pooling, TextEncoder
from ctem.finite import check_finite_embeddings
from ctem.tokenization import check_max_length


class PairScorer:
    """Scores pairs with ``encoder``; the query instruction is prepended to queries only.

    Args:
        encoder: the scoring model (evaluation mode is set here).
        query_instruction / passage_instruction: prefixes of queries / positives (for
            models trained with instructions, e.g. BGE's query instruction; ``None``: none).
        query_max_length / passage_max_length: token limits (``None``: the encoder's).
        batch_size: texts per forward pass.
        device: ``cuda``, ``cpu``, ... (``None``: cuda when available).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        query_instruction: str | None = None,
        passage_instruction: str | None = None,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        batch_size: int = 256,
        device: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.encoder = encoder.to(self.device).eval()
        self.query_instruction = resolve_instruction(query_instruction) or ""
        self.passage_instruction = passage_instruction or ""
        self.query_max_length = check_max_length(encoder.tokenizer, query_max_length or encoder.query_max_length, "query_max_length")
        self.passage_max_length = check_max_length(encoder.tokenizer, passage_max_length or encoder.passage_max_length, "passage_max_length")
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, model_path: str, pooling: Pooling | None = None, trust_remote_code: bool = False, **kwargs
    ) -> "PairScorer":
        """A scorer over ``TextEncoder.from_pretrained(model_path)`` (normalised embeddings;
        ``pooling`` ``None`` keeps the model's saved pooling; ``trust_remote_code``: run code
        the model folder ships)."""
        encoder = TextEncoder.from_pretrained(model_path, pooling=pooling, normalize=True, trust_remote_code=trust_remote_code)
        return cls(encoder, **kwargs)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], instruction: str | None = None, is_query: bool = False) -> np.ndarray:
        """Embeddings ``[N, H]`` float32 of ``instruction + text`` for each of ``texts``, in
        input order, truncated to the query or passage limit (a ``ctem.encoding.EncodeFn``)."""
        out = np.zeros((len(texts), self.encoder.dim), dtype=np.float32)
        if not texts:
            return out
        max_length = self.query_max_length if is_query else self.passage_max_length
        texts = [(instruction or "") + t for t in texts]
        tokens = self.encoder.tokenizer(texts, max_length=max_length, truncation=True)
        ids, types = tokens["input_ids"], tokens.get("token_type_ids")
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, row in enumerate(ids):
            by_length[len(row)].append(i)
        for length in sorted(by_length):
            members = by_length[length]
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                input_ids = torch.tensor([ids[i] for i in chunk], device=self.device)
                token_types = torch.tensor([types[i] for i in chunk], device=self.device) if types else None
                mask = torch.ones_like(input_ids)
                out[chunk] = self.encoder(input_ids, mask, token_types).float().cpu().numpy()
        return check_finite_embeddings(out, "the scoring model")

    def score(self, queries: Sequence[str], positives: Sequence[str]) -> np.ndarray:
        """Cosine similarity ``[N]`` of ``queries[i]`` and ``positives[i]`` (repeated texts
        are embedded once)."""
        if len(queries) != len(positives):
            raise ValueError(f"{len(queries)} queries but {len(positives)} positives")
        unique_q = list(dict.fromkeys(queries))
        unique_p = list(dict.fromkeys(positives))
        q_emb = self.embed(unique_q, self.query_instruction, is_query=True).astype(np.float64)
        p_emb = self.embed(unique_p, self.passage_instruction).astype(np.float64)
        q_row = {q: i for i, q in enumerate(unique_q)}
        p_row = {p: i for i, p in enumerate(unique_p)}
        scores = np.empty(len(queries), dtype=np.float64)
        # One pair at a time: vectorised reductions may sum in a different order for other
        # array shapes, and the score must not depend on what else is in the batch.
        for n, (q, p) in enumerate(zip(queries, positives)):
            a, b = q_emb[q_row[q]], p_emb[p_row[p]]
            scores[n] = float(np.dot(a, b)) / max(math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))), 1e-12)
        return scores
