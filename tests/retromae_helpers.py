"""Shared pieces of the RetroMAE tests: a tiny vocabulary, tiny encoders, corpus rows."""

from __future__ import annotations

import os
import random
from pathlib import Path

from ctem import TextEncoder

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTEM_SHARED_DATA", ROOT.parent / "shared" / "data"))
CORPUS = SHARED / "train" / "pretrain" / "corpus.jsonl"
CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质信"
TINY = dict(model_type="bert", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def write_vocab(directory: Path) -> Path:
    """A WordPiece vocab.txt: BERT special tokens, lower-case letters, digits, ``CHARS``."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789，。", *dict.fromkeys(CHARS)]
    path = Path(directory) / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def tiny_encoder(vocab: Path, dropout: float = 0.0, **config: object) -> TextEncoder:
    """A random 2-layer BERT (hidden 64) using ``vocab``."""
    settings = dict(TINY, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **config)
    return TextEncoder(config=settings, tokenizer=str(vocab))


def random_texts(n: int, seed: int = 0, min_len: int = 4, max_len: int = 40) -> list[str]:
    """``n`` strings of ``CHARS`` of varied length."""
    rng = random.Random(seed)
    return ["".join(rng.choice(CHARS) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]
