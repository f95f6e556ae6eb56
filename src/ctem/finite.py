"""Refusing non-finite numbers (NaN, inf): the error every command reports as one line, and
the check of embeddings shared by evaluation, mining and curation.

A model whose weights went NaN encodes every text to NaN; the evaluators would score it
(NaN ranks and similarities turn into arbitrary numbers), the miner would pick arbitrary
negatives and curation would keep or drop pairs at random. Each of them checks the
embeddings it gets with :func:`check_finite_embeddings` instead. Training stops on a
non-finite loss or gradient norm (``ctem.callbacks.NonFiniteGuard``).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from ctem.errors import CtemInputError

Array = TypeVar("Array", np.ndarray, torch.Tensor)


class NonFiniteError(CtemInputError, ArithmeticError):
    """A loss, gradient norm or embedding is NaN or infinite (the message says which, where)."""


CHECK_ROWS = 4096  # rows tested at a time: the test's temporaries are a block's size, not the array's


def check_finite_embeddings(embeddings: Array, what: str = "the model") -> Array:
    """``embeddings`` ``[N, D]`` unchanged if every value is finite; else ``NonFiniteError``
    naming ``what`` (the model or the texts) and how many rows are affected. Tested
    ``CHECK_ROWS`` rows at a time (``torch.isfinite`` of the whole array at once made
    temporaries 1.75 times its size)."""
    values = embeddings if isinstance(embeddings, torch.Tensor) else torch.from_numpy(np.asarray(embeddings))
    rows = values.flatten(1) if values.dim() > 1 else values.unsqueeze(1)
    bad = [
        start + (~ok).nonzero().flatten()
        for start in range(0, len(rows), CHECK_ROWS)
        if not bool((ok := torch.isfinite(rows[start : start + CHECK_ROWS]).all(dim=1)).all())
    ]
    if not bad:
        return embeddings
    found = torch.cat(bad)
    raise NonFiniteError(
        f"{what} gave non-finite (NaN or inf) embeddings for {len(found)} of {len(values)} texts "
        f"(first: text {int(found[0])}); its weights are probably NaN: check how it was trained"
    )
