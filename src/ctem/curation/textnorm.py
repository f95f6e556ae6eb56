"""Text normalisation and n-gram shingles shared by deduplication and decontamination.

Units follow the text's script (``units="auto"``): a text written without spaces between
words (Chinese, Japanese, Thai: :func:`ctem.languages.words_without_spaces`) is compared
character by character, with all whitespace removed and shingles of ``n`` characters; any
other text (English and every language written with spaces) keeps its word boundaries, as
single spaces, and its shingles are ``n`` consecutive words. ``units="characters"`` or
``"words"`` applies one rule to every text.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Callable, Literal

from ctem.languages import words_without_spaces

Units = Literal["auto", "characters", "words"]
UNITS: tuple[str, ...] = ("auto", "characters", "words")


def normalize_text(text: str, lowercase: bool = True, strip_punctuation: bool = True, units: Units = "auto") -> str:
    """The comparison form of ``text``: Unicode NFKC (full-width to half-width, compatibility
    forms), optionally case-folded and, optionally, without any punctuation and symbol
    character (Unicode categories ``P*`` and ``S*``). Whitespace is removed from texts
    compared by characters and collapsed to single spaces (ends stripped) in texts compared
    by words (``units``; ``auto``: by the text's script)."""
    text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.casefold()
    if _by_words(text, units):
        if strip_punctuation:
            text = text.translate(_PUNCTUATION)
        return " ".join(text.split())
    return text.translate(_PUNCTUATION_AND_SPACE if strip_punctuation else _SPACE)


class _DeletionTable(dict):
    """A ``str.translate`` table that deletes the characters ``deleted(ch)`` names, filled
    as characters are met (the whole of Unicode would be 1.1M lookups up front)."""

    def __init__(self, deleted: Callable[[str], bool]) -> None:
        super().__init__()
        self.deleted = deleted

    def __missing__(self, code: int) -> int | None:
        value = None if self.deleted(chr(code)) else code
        self[code] = value
        return value


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


_PUNCTUATION = _DeletionTable(_is_punctuation)
_SPACE = _DeletionTable(str.isspace)
_PUNCTUATION_AND_SPACE = _DeletionTable(lambda ch: ch.isspace() or _is_punctuation(ch))


def _by_words(text: str, units: Units) -> bool:
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    return units == "words" or (units == "auto" and not words_without_spaces(text))


def shingles(text: str, n: int, units: Units = "auto") -> set[str]:
    """The ``n``-gram set of normalised ``text``: ``n`` characters for texts compared by
    characters, ``n`` consecutive words for texts compared by words (``units``)."""
    if not _by_words(text, units):
        return char_ngrams(text, n)
    words = text.split()
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


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
    """``normalize_text`` and ``shingles`` with fixed settings (callable on a string)."""

    lowercase: bool = True
    strip_punctuation: bool = True
    units: Units = "auto"

    def __post_init__(self) -> None:
        _by_words("", self.units)  # refuse an unknown unit at construction

    def __call__(self, text: str) -> str:
        return normalize_text(text, self.lowercase, self.strip_punctuation, self.units)

    def shingles(self, normalized: str, n: int) -> set[str]:
        """The n-gram set of a text this normaliser produced."""
        return shingles(normalized, n, self.units)
