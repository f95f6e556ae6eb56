"""Builders shared by the curation tests: a scorer with known cosines, random texts, files."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterable

import pytest
import torch

from ctem import TextEncoder

KNOWN_TOKENS = ["a", "b", "c", "d"]
# Word vectors with zero mean and equal norm (BERT's LayerNorm keeps their direction), so
# with mean pooling and no transformer layers a one-letter text embeds to its vector:
# cos(a, a) = 1, cos(a, b) = 0.5, cos(a, c) = 0, cos(a, d) = -1.
KNOWN_VECTORS = {
    "a": [1, -1, 0, 0, 0, 0, 0, 0],
    "b": [1, 0, -1, 0, 0, 0, 0, 0],
    "c": [0, 0, 0, 0, 1, -1, 0, 0],
    "d": [-1, 1, 0, 0, 0, 0, 0, 0],
}
KNOWN_COSINE_TO_A = {"a": 1.0, "b": 0.5, "c": 0.0, "d": -1.0}


def known_scores_encoder(directory: Path) -> TextEncoder:
    """A 0-layer BERT (hidden 8, mean pooling) whose embedding of "x" is ``KNOWN_VECTORS[x]``."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = Path(directory) / "vocab.txt"
    vocab.write_text("\n".join(specials + KNOWN_TOKENS) + "\n", encoding="utf-8")
    config = dict(model_type="bert", hidden_size=8, num_hidden_layers=0, num_attention_heads=1, intermediate_size=8)
    encoder = TextEncoder(config=config, tokenizer=str(vocab), pooling="mean")
    emb = encoder.backbone.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight.zero_()  # [CLS]/[SEP] stay zero: they add nothing to the mean
        for token, vector in KNOWN_VECTORS.items():
            emb.word_embeddings.weight[encoder.tokenizer.convert_tokens_to_ids(token)] = torch.tensor(vector, dtype=torch.float)
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.LayerNorm.weight.fill_(1.0)
        emb.LayerNorm.bias.zero_()
    return encoder


def random_text(rng: random.Random, length: int) -> str:
    """``length`` random CJK characters."""
    return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(length))


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (and do not fight parallel test workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
