"""Text normalisation and character n-grams shared by deduplication and decontamination."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass


def normalize_text(text: str, lowercase: bool = True, strip_punctuation: bool = True) -> str:
    """The comparison form of ``text``: Unicode NFKC (full-width to half-width, compatibility
    forms), optionally case-folded, with all whitespace removed and, optionally, every
    punctuation and symbol character (Unicode categories ``P*`` and ``S*``) removed."""
    text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.casefold()
    kept = []
    for ch in text:
        if ch.isspace():
            continue
        if strip_punctuation and unicodedata.category(ch)[0] in "PS":
            continue
        kept.append(ch)
    return "".join(kept)


def char_ngrams(text: str, n: int) -> set[str]:
    """Character ``n``-grams of ``text``; a non-empty text shorter than ``n`` is one gram."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    if len(text) <= n:
        return {text} if text else set()
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def text_digest(*parts: str) -> bytes:
    """A 16-byte BLAKE2b digest of ``parts`` (joined with a separator no text contains)."""
    return hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=16).digest()


@dataclass(frozen=True)
class TextNormalizer:
    """``normalize_text`` with fixed settings (callable on a string)."""

    lowercase: bool = True
    strip_punctuation: bool = True

    def __call__(self, text: str) -> str:
        return normalize_text(text, self.lowercase, self.strip_punctuation)
