"""Model merging (LM-Cocktail): a weighted average of the weights of two or more models of
the same architecture, e.g. a domain fine-tune and its base, to keep the base's general
ability while keeping most of the in-domain gain.

The weights are given, or chosen from a few examples of the target tasks (LM-Cocktail's
``mix_models_with_data``): each model's InfoNCE loss on the examples, ``l_i``, gives weight
``softmax(-l / temperature)_i``, so the models that already fit the examples weigh more.

The merged folder is a complete ctem folder (written as a whole: ``ctem.files.staged_folder``
through ``TextEncoder.save_pretrained``) that keeps the inputs' pooling, normalisation,
max lengths and query instruction; folders that disagree in architecture, pooling,
normalisation or tokenizer are refused with one line (a merged model that silently falls
back to another pooling is FlagEmbedding #311's bug).

Reference: Xiao et al., "LM-Cocktail: Resilient Tuning of Language Models via Model
Merging", 2023.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ctem.encoder import TextEncoder
from ctem.files import check_not_inputs
from ctem.instructions import with_instruction
from ctem.losses import BatchLayout, InfoNCELoss
from ctem.mining import read_mining_rows
from ctem.rows import OnBadRow, describe_source, no_rows
from ctem.settings import SettingError

# Backbone settings two merged models must share.
ARCHITECTURE_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
    "max_position_embeddings",
)


@dataclass
class MergeResult:
    """The merged folder and the (normalised) weight of each input model."""

    folder: Path
    weights: list[float]

    def summary(self, models: Sequence[str]) -> str:
        parts = ", ".join(f"{w:.3g} x {m}" for w, m in zip(self.weights, models))
        return f"{self.folder} = {parts}"


def normalized_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """``weights`` scaled to sum to 1 (``None``: equal weights)."""
    if weights is None:
        return [1.0 / count] * count
    values = [float(w) for w in weights]
    if len(values) != count:
        raise SettingError("weights", list(values), f"needs one weight per model ({count})")
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise SettingError("weights", list(values), "must be non-negative with a positive sum")
    return [w / sum(values) for w in values]


def check_mergeable(models: Sequence[str], encoders: Sequence[TextEncoder]) -> None:
    """``SettingError`` naming the first two folders that disagree in architecture, weights'
    names and shapes, pooling, normalisation or tokenizer."""
    first, reference = models[0], encoders[0]
    ref_config = reference.backbone.config
    ref_shapes = {k: tuple(v.shape) for k, v in reference.backbone.state_dict().items()}
    for name, encoder in zip(models[1:], encoders[1:]):
        config = encoder.backbone.config
        for key in ARCHITECTURE_KEYS:
            if getattr(config, key, None) != getattr(ref_config, key, None):
                _disagree(first, name, key, getattr(ref_config, key, None), getattr(config, key, None))
        if {k: tuple(v.shape) for k, v in encoder.backbone.state_dict().items()} != ref_shapes:
            _disagree(first, name, "weights", "their parameter names or shapes", "differ")
        for key in ("pooling", "normalize"):
            if getattr(encoder, key) != getattr(reference, key):
                _disagree(first, name, key, getattr(reference, key), getattr(encoder, key))
        if encoder.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
            _disagree(first, name, "tokenizer", "vocabulary", "differs")


def _disagree(first: str, other: str, what: str, a: object, b: object) -> None:
    raise SettingError("models", f"[{first},{other}]", f"cannot be merged: they disagree in {what} ({a} vs {b})")


@dataclass
class Examples:
    """A few training rows of the target tasks (``{"query", "pos", "neg"?, "prompt"?}``
    JSON lines) that choose the weights: each model's InfoNCE loss over them (temperature
    0.02, in-batch negatives plus up to ``group_size - 1`` of each row's negatives), and
    ``temperature`` of the softmax over the models' losses (LM-Cocktail's default 5)."""

    files: str | Sequence[str]
    temperature: float = 5.0
    group_size: int = 8
    on_bad_row: OnBadRow = "error"

    def read(self) -> list[dict]:
        """The example rows (bad ones: one line naming file, line and field, or skipped
        under ``on_bad_row=skip``), after checking ``temperature``: before any model loads."""
        if not self.temperature > 0:
            raise SettingError("example_temperature", self.temperature, "must be > 0")
        rows, report = read_mining_rows(self.files, self.on_bad_row)
        if not rows:
            raise no_rows(describe_source(self.files), report)
        return rows


def example_loss(encoder: TextEncoder, rows: Sequence[dict], group_size: int) -> float:
    """``encoder``'s InfoNCE loss on ``rows`` (queries with their ``prompt`` or the
    encoder's instruction; every row's first positive and its first ``group_size - 1``
    negatives, as many as every row has)."""
    group = 1 + min(group_size - 1, *(len(row["neg"]) for row in rows))
    queries = [with_instruction(row["query"], row["prompt"], encoder.query_instruction) for row in rows]
    passages = [text for row in rows for text in [row["pos"][0], *row["neg"][: group - 1]]]
    q = torch.from_numpy(encoder.encode(queries, is_query=True))
    p = torch.from_numpy(encoder.encode(passages))
    return float(InfoNCELoss(0.02)(q, p, BatchLayout(group)).loss)


def example_weights(encoders: Sequence[TextEncoder], examples: Examples, rows: Sequence[dict]) -> list[float]:
    """``softmax(-loss / temperature)`` over the models' losses on the example ``rows``."""
    losses = torch.tensor([example_loss(encoder, rows, examples.group_size) for encoder in encoders])
    return torch.softmax(-losses / examples.temperature, dim=0).tolist()


def merge_models(
    models: Sequence[str],
    output: str | os.PathLike,
    weights: Sequence[float] | None = None,
    trust_remote_code: bool = False,
    examples: Examples | None = None,
) -> MergeResult:
    """Write to ``output`` the weighted average of the backbones of ``models`` (folders or
    hub ids; ``weights`` scaled to sum to 1, or chosen from ``examples``, else equal), with
    the first model's tokenizer and settings (which all share: ``check_mergeable``).
    Floating-point weights are averaged in float64 and stored in their own dtype; other
    tensors (integer buffers) come from the first model."""
    if len(models) < 2:
        raise SettingError("models", list(models), "needs at least two model folders")
    if weights is not None and examples is not None:
        raise SettingError("weights", list(weights), "give weights or examples, not both")
    shares = normalized_weights(weights, len(models))
    check_not_inputs([output], [m for m in models if Path(m).exists()])
    rows = examples.read() if examples is not None else None
    encoders = [TextEncoder.from_pretrained(m, trust_remote_code=trust_remote_code) for m in models]
    check_mergeable(models, encoders)
    if examples is not None and rows is not None:
        shares = example_weights(encoders, examples, rows)
    states = [encoder.backbone.state_dict() for encoder in encoders]
    merged: dict[str, torch.Tensor] = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            total = sum(share * state[key].double() for share, state in zip(shares, states))
            merged[key] = total.to(value.dtype)
        else:
            merged[key] = value
    base = encoders[0]
    base.query_instruction = _shared_instruction(models, encoders)
    return MergeResult(base.save_pretrained(output, backbone_state=merged), shares)


def _shared_instruction(models: Sequence[str], encoders: Sequence[TextEncoder]) -> str | None:
    """The query instruction the models record: the same for all, else refused."""
    recorded = {encoder.query_instruction or "" for encoder in encoders}
    if len(recorded) > 1:
        _disagree(models[0], models[1], "query instruction", *sorted(recorded)[:2])
    return encoders[0].query_instruction
