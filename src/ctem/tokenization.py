"""Tokenizer loading and WordPiece vocabulary training.

A tokenizer source is either a HF tokenizer folder / hub id, or a plain WordPiece
``vocab.txt`` (BERT style, one token per line), as shipped with Chinese BERT models.
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Iterable

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from ctem.files import write_text_atomic
from ctem.settings import SettingError

BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ASCII_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def check_local_or_hub(source: str, what: str) -> None:
    """Raise ``FileNotFoundError`` when ``source`` is clearly a local path (``./``, ``../``,
    ``/``, ``~``, a ``.txt`` file, or more than one ``/``) that does not exist, instead of
    letting the hub client reject it as a malformed repository id."""
    looks_local = source.startswith((".", "/", "~")) or source.endswith(".txt") or source.count("/") > 1
    if looks_local and not Path(source).expanduser().exists():
        raise FileNotFoundError(f"{what} not found: {source} (relative paths start from {Path.cwd()})")


def load_tokenizer(source: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A fast tokenizer from a ``vocab.txt`` file, a tokenizer folder or a hub id
    (``trust_remote_code``: run tokenizer code the folder ships; passed explicitly, so
    transformers never asks on stdin)."""
    check_local_or_hub(source, "tokenizer")
    path = Path(source)
    if path.is_file():
        if path.suffix != ".txt":
            raise ValueError(f"{source}: a tokenizer file must be a WordPiece vocab.txt")
        # transformers 5 names the argument `vocab`, transformers 4 `vocab_file`.
        arg = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
        return BertTokenizerFast(**{arg: str(path)}, do_lower_case=True, tokenize_chinese_chars=True)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def check_max_length(tokenizer: PreTrainedTokenizerBase, max_length: int, setting: str) -> int:
    """``max_length`` (tokens per text, special tokens included) if it leaves room for at
    least one token of text; else ``SettingError`` naming ``setting``. Below the number of
    special tokens a tokenizer adds, it silently does not truncate at all."""
    special = tokenizer.num_special_tokens_to_add(pair=False)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= special:
        raise SettingError(
            setting, max_length, f"must be an integer of at least {special + 1} (the tokenizer adds {special} special token(s) to every text)"
        )
    return max_length


def train_wordpiece_vocab(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 8000,
    min_frequency: int = 1,
) -> Path:
    """Train a BERT WordPiece vocabulary (Chinese characters split one by one) with ``tokenizers``.

    Lower-case ASCII letters and digits are always included, alone and as ``##``
    continuations, so any Latin word or number tokenises without ``[UNK]``. Writes
    ``out_dir/vocab.txt`` and returns its path.
    """
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tokenizer.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BERT_SPECIAL_TOKENS),
        limit_alphabet=vocab_size,
        initial_alphabet=list(_ASCII_ALNUM),
        wordpieces_prefix="##",
    )
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_model(scratch)
        tokens = (Path(scratch) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    known = set(tokens)
    tokens += [t for c in _ASCII_ALNUM for t in (c, f"##{c}") if t not in known]
    # atomic: an interrupted or failed write leaves the old vocab.txt (or none), never half of one
    return write_text_atomic(Path(out_dir) / "vocab.txt", "\n".join(tokens) + "\n")
