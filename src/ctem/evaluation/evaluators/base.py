"""What every evaluator shares: the ``encode`` callable and embedding helpers."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ctem.encoding import EncodeFn


def encode_unique(
    encode: EncodeFn, texts: Sequence[str], instruction: str | None = None
) -> np.ndarray:
    """Encode each distinct text once; return ``[len(texts), D]`` float32 in input order."""
    unique: dict[str, int] = {}
    index = np.fromiter((unique.setdefault(t, len(unique)) for t in texts), dtype=np.int64, count=len(texts))
    if not unique:
        raise ValueError("nothing to encode: the text list is empty")
    emb = np.asarray(encode(list(unique), instruction), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(unique):
        raise ValueError(
            f"encode returned shape {emb.shape} for {len(unique)} texts; expected [N, D]"
        )
    return emb[index]


def l2_normalize(emb: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``[N, D]`` scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, eps)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row ``i`` of ``a`` with row ``i`` of ``b``: ``[N]`` float64."""
    return np.einsum("nd,nd->n", l2_normalize(a.astype(np.float64)), l2_normalize(b.astype(np.float64)))
