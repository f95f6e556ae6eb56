"""Mask sampling of RetroMAE: encoder MLM corruption and the decoder's per-row attention masks.

Masks are drawn over *units*: a unit is one word (whole-word masking) or one token. Units
are given as ``word_ids`` ``[B, L]``: an integer >= 0 per token, equal for the tokens of one
word of a row; special tokens carry ``SPECIAL`` (-1: real, never masked) and padding
``PADDING`` (-2: never masked and never visible). All rows of a batch are sampled at once.

Counts are unbiased: a mask of ratio ``r`` over the ``n`` maskable tokens of a row hides on
average ``r * n`` tokens (stochastic rounding instead of ``round``, so short rows do not
drift the measured ratio). Units are taken in a random order while the budget lasts; a
multi-token word is taken when its middle falls inside the budget, which keeps the
expectation at ``r * n`` with whole words too.
"""

from __future__ import annotations

import torch

SPECIAL = -1
PADDING = -2


def _units(word_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-wide unit index of every maskable token (``-1`` elsewhere) and the token
    count of the unit each token belongs to, both ``[B, L]``."""
    maskable = word_ids >= 0
    row = torch.arange(word_ids.size(0)).unsqueeze(1).expand_as(word_ids)
    key = row * (int(word_ids.max().clamp(min=0)) + 1) + word_ids.clamp(min=0)
    _, inverse, counts = torch.unique(key[maskable], return_inverse=True, return_counts=True)
    unit = torch.full_like(word_ids, -1)
    unit[maskable] = inverse
    length = torch.zeros(word_ids.shape, dtype=torch.float)
    length[maskable] = counts[inverse].float()
    return unit, length


def sample_unit_masks(word_ids: torch.Tensor, ratio: float, num_masks: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num_masks`` independent masks per row: ``[B, num_masks, L]`` (True = masked).

    ``word_ids`` is ``[B, L]`` (negative = never masked). Each mask hides whole units in a
    random order until about ``ratio`` of the row's maskable tokens are hidden.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    batch, length = word_ids.shape
    maskable = word_ids >= 0
    if ratio == 0.0 or not bool(maskable.any()):
        return torch.zeros(batch, num_masks, length, dtype=torch.bool)
    unit, unit_length = _units(word_ids)
    unit_keys = torch.rand(num_masks, int(unit.max()) + 1, generator=generator)
    keys = unit_keys[:, unit.clamp(min=0)].permute(1, 0, 2)  # [B, P, L]: a token takes its unit's key
    keys = keys.masked_fill(~maskable.unsqueeze(1), float("inf"))
    # maskable tokens of the units drawn before this token's unit (equal keys = same unit)
    before = torch.searchsorted(keys.sort(dim=-1).values.contiguous(), keys.contiguous()).float()
    budget = ratio * maskable.sum(dim=1).view(batch, 1, 1) + torch.rand(batch, num_masks, 1, generator=generator)
    return maskable.unsqueeze(1) & (before + unit_length.unsqueeze(1) / 2 + 0.5 <= budget)


def decoder_attention_mask(
    word_ids: torch.Tensor,
    ratio: float,
    pool_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Enhanced-decoding attention masks ``[B, L, L]`` (True = row i may attend to key j).

    Per text a pool of ``min(pool_size, L)`` random masks of ``ratio`` is drawn and every
    position takes one of them at random, so rows see different contexts. Masked keys,
    padding keys and the row's own position are hidden; key 0 (the encoder's [CLS]
    embedding) and the other special tokens are visible to every other row. Padding rows
    see only key 0 (they are never predicted; this keeps their softmax defined).
    """
    batch, length = word_ids.shape
    real = word_ids != PADDING
    pool = sample_unit_masks(word_ids, ratio, max(1, min(pool_size, length)), generator)  # [B, P, L]
    choice = torch.randint(pool.size(1), (batch, length), generator=generator)
    visible = ~torch.gather(pool, 1, choice.unsqueeze(-1).expand(-1, -1, length))  # [B, L(rows), L(keys)]
    visible &= real.unsqueeze(1)
    visible &= ~torch.eye(length, dtype=torch.bool)
    padding_rows = ~real
    visible[padding_rows] = False
    visible[..., 0] |= padding_rows
    return visible


def corrupt_for_mlm(
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    mask_token_id: int,
    random_token_ids: torch.Tensor,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption of the masked positions: ``(inputs, labels)``, both ``[B, L]``.

    Of the positions in ``mask``, ``mask_token_prob`` become [MASK], ``random_token_prob`` a
    random token of ``random_token_ids`` and the rest stay unchanged. ``labels`` holds the
    original id at masked positions and ``-100`` elsewhere.
    """
    if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1:
        raise ValueError(f"mask_token_prob {mask_token_prob} + random_token_prob {random_token_prob} must be within [0, 1]")
    labels = torch.where(mask, input_ids, torch.full_like(input_ids, -100))
    draw = torch.rand(input_ids.shape, generator=generator)
    to_mask = mask & (draw < mask_token_prob)
    to_random = mask & (draw >= mask_token_prob) & (draw < mask_token_prob + random_token_prob)
    inputs = input_ids.clone()
    inputs[to_mask] = mask_token_id
    picks = torch.randint(random_token_ids.numel(), input_ids.shape, generator=generator)
    inputs[to_random] = random_token_ids[picks][to_random]
    return inputs, labels
