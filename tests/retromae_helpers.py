"""Shared pieces of the RetroMAE tests: a wider tiny encoder (over ``tests.helpers.tiny``'s
vocabulary), random texts, the shared corpus."""

from __future__ import annotations

import os
from pathlib import Path

from ctem import TextEncoder
from tests.helpers.tiny import TINY_BERT, sentences
from tests.helpers.tiny import tiny_encoder as helpers_tiny_encoder

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTEM_SHARED_DATA", ROOT.parent / "shared" / "data"))
CORPUS = SHARED / "train" / "pretrain" / "corpus.jsonl"
TINY = dict(TINY_BERT, hidden_size=64, intermediate_size=128)


def tiny_encoder(vocab: Path, dropout: float = 0.0, **config: object) -> TextEncoder:
    """A random 2-layer BERT (hidden 64) using ``vocab``; ``config`` overrides its sizes."""
    return helpers_tiny_encoder(vocab, dropout, bert=dict(TINY, **config))


def random_texts(n: int, seed: int = 0, min_len: int = 4, max_len: int = 40) -> list[str]:
    """``n`` strings of test-vocabulary characters of varied length (longer than ``sentences``')."""
    return sentences(n, seed=seed, min_len=min_len, max_len=max_len)
