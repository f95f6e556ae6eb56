"""Tiny models and vocabularies built inside tests (no downloads, no shared data)."""

from __future__ import annotations

from pathlib import Path

from ctem import TextEncoder

# Characters of the tiny test vocabulary (plus BERT's special tokens).
TEST_CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质信"
TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def write_vocab(directory: Path, chars: str = TEST_CHARS) -> Path:
    """A WordPiece vocab.txt of special tokens, ASCII letters/digits, punctuation and ``chars``."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list("abcdefghijklmnopqrstuvwxyz0123456789，。？！,.?!")
    tokens += list(chars)
    path = Path(directory) / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def tiny_encoder(
    vocab: Path, dropout: float = 0.0, initializer_range: float = 0.02, bert: dict = TINY_BERT, **overrides
) -> TextEncoder:
    """A randomly initialised BERT of size ``bert`` (default 2 layers, hidden 32) with ``vocab``;
    ``overrides`` go to ``TextEncoder`` (pooling, lengths, instructions)."""
    config = dict(
        bert,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        initializer_range=initializer_range,
    )
    return TextEncoder(config=config, tokenizer=str(vocab), **overrides)


def sentences(n: int, seed: int = 0, min_len: int = 3, max_len: int = 12) -> list[str]:
    """``n`` random strings of test-vocabulary characters, of varied length."""
    import random

    rng = random.Random(seed)
    chars = TEST_CHARS
    return ["".join(rng.choice(chars) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]
