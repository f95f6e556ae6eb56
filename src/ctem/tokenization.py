"""Tokenizer loading and WordPiece vocabulary training.

A tokenizer source is either a HF tokenizer folder / hub id, or a plain WordPiece
``vocab.txt`` (BERT style, one token per line), as shipped with Chinese BERT models.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Iterable, Iterator

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ASCII_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def check_local_or_hub(source: str, what: str) -> None:
    """Raise ``FileNotFoundError`` when ``source`` is clearly a local path (``./``, ``../``,
    ``/``, ``~``, a ``.txt`` file, or more than one ``/``) that does not exist, instead of
    letting the hub client reject it as a malformed repository id."""
    looks_local = source.startswith((".", "/", "~")) or source.endswith(".txt") or source.count("/") > 1
    if looks_local and not Path(source).expanduser().exists():
        raise FileNotFoundError(f"{what} not found: {source} (relative paths start from {Path.cwd()})")


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A fast tokenizer from a ``vocab.txt`` file, a tokenizer folder or a hub id."""
    check_local_or_hub(source, "tokenizer")
    path = Path(source)
    if path.is_file():
        if path.suffix != ".txt":
            raise ValueError(f"{source}: a tokenizer file must be a WordPiece vocab.txt")
        # transformers 5 names the argument `vocab`, transformers 4 `vocab_file`.
        arg = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
        return BertTokenizerFast(**{arg: str(path)}, do_lower_case=True, tokenize_chinese_chars=True)
    return AutoTokenizer.from_pretrained(source)


def iter_jsonl_texts(files: Iterable[str | Path], fields: tuple[str, ...]) -> Iterator[str]:
    """Every string (or string in a list) under ``fields`` of every JSON line of ``files``."""
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                row = json.loads(line)
                for field in fields:
                    value = row.get(field)
                    if isinstance(value, str):
                        yield value
                    elif isinstance(value, list):
                        yield from (v for v in value if isinstance(v, str))


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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_model(str(out))
    path = out / "vocab.txt"
    tokens = path.read_text(encoding="utf-8").splitlines()
    known = set(tokens)
    tokens += [t for c in _ASCII_ALNUM for t in (c, f"##{c}") if t not in known]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path
