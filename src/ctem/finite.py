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


def check_finite_embeddings(embeddings: Array, what: str = "the model") -> Array:
    """``embeddings`` ``[N, D]`` unchanged if every value is finite; else ``NonFiniteError``
    naming ``what`` (the model or the texts) and how many rows are affected."""
    values = embeddings if isinstance(embeddings, torch.Tensor) else torch.from_numpy(np.asarray(embeddings))
    finite_rows = torch.isfinite(values).reshape(len(values), -1).all(dim=1)
    if bool(finite_rows.all()):
        return embeddings
    bad = (~finite_rows).nonzero().flatten()
    raise NonFiniteError(
        f"{what} gave non-finite (NaN or inf) embeddings for {len(bad)} of {len(values)} texts "
        f"(first: text {int(bad[0])}); its weights are probably NaN: check how it was trained"
    )
