"""Languages: the codes ctem's settings and task folders use, mteb's language tags for them,
and how a text's script decides whether its words are separated by spaces.

A language is named by its ISO 639-1 code (``en``, ``zh``, ...: ``conf/lang/``, the
``language`` field of a task folder's ``task.json``, a model card's ``language``).
mteb's result files tag languages as ISO 639-3 + ISO 15924 script (``eng-Latn``,
``cmn-Hans``); :func:`mteb_language_tag` maps one to the other and accepts a tag written
in mteb's form as it is.
"""

from __future__ import annotations

import re
from typing import Sequence

# ISO 639-1 code -> mteb's language tag (ISO 639-3 + script), for the languages of MTEB's
# monolingual and multilingual task families.
MTEB_LANGUAGE_TAGS: dict[str, str] = {
    "ar": "ara-Arab",
    "bn": "ben-Beng",
    "cs": "ces-Latn",
    "da": "dan-Latn",
    "de": "deu-Latn",
    "el": "ell-Grek",
    "en": "eng-Latn",
    "es": "spa-Latn",
    "fa": "fas-Arab",
    "fi": "fin-Latn",
    "fr": "fra-Latn",
    "he": "heb-Hebr",
    "hi": "hin-Deva",
    "hu": "hun-Latn",
    "id": "ind-Latn",
    "it": "ita-Latn",
    "ja": "jpn-Jpan",
    "ko": "kor-Hang",
    "nl": "nld-Latn",
    "no": "nor-Latn",
    "pl": "pol-Latn",
    "pt": "por-Latn",
    "ro": "ron-Latn",
    "ru": "rus-Cyrl",
    "sv": "swe-Latn",
    "th": "tha-Thai",
    "tr": "tur-Latn",
    "uk": "ukr-Cyrl",
    "vi": "vie-Latn",
    "zh": "cmn-Hans",
}
_MTEB_TAG = re.compile(r"^[a-z]{3}-[A-Z][a-z]{3}$")

# Scripts written without spaces between words: Han, Hiragana, Katakana, Thai, Lao, Khmer,
# Myanmar. A text with any of these characters is compared character by character.
_SPACELESS = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\U00020000-\U0002fa1f]"
)


def mteb_language_tag(language: str) -> str:
    """mteb's tag of ``language`` (an ISO 639-1 code of :data:`MTEB_LANGUAGE_TAGS`, or a tag
    already in mteb's ``xxx-Xxxx`` form); ``ValueError`` naming the known codes otherwise."""
    if language in MTEB_LANGUAGE_TAGS:
        return MTEB_LANGUAGE_TAGS[language]
    if _MTEB_TAG.match(language):
        return language
    raise ValueError(
        f"unknown language {language!r}: use an ISO 639-1 code ({', '.join(sorted(MTEB_LANGUAGE_TAGS))}) "
        "or an mteb tag such as eng-Latn"
    )


# Languages written without spaces between words (their texts hold _SPACELESS characters).
SPACELESS_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my"})


def written_in(language: str, texts: Sequence[str]) -> bool:
    """Whether ``texts`` (a sample) look written in ``language``'s script: for a language
    written without spaces (:data:`SPACELESS_LANGUAGES`) at least a third of them hold one of
    its characters; for any other language at most a tenth do. Empty samples pass."""
    if not texts:
        return True
    share = sum(words_without_spaces(t) for t in texts) / len(texts)
    return share >= 1 / 3 if language in SPACELESS_LANGUAGES else share <= 0.1


def words_without_spaces(text: str) -> bool:
    """Whether ``text`` is written in a script without spaces between words (Chinese,
    Japanese, Thai, ...): then characters, not whitespace-separated words, are its units."""
    return _SPACELESS.search(text) is not None
