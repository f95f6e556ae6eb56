"""``ctem-build-vocab``: train a WordPiece vocabulary on a corpus, for models built from scratch.

    ctem-build-vocab --out vocab/my_corpus --vocab-size 21128 corpus.jsonl more/*.txt

JSON-lines files (``.jsonl`` / ``.json``) contribute the strings under ``--field`` (default
``text``; repeat the flag for several fields, e.g. ``--field query --field pos``), other
files one text per non-blank line. Writes ``<out>/vocab.txt`` (BERT special tokens first,
Chinese characters split one by one), to be used as ``model.tokenizer=<out>/vocab.txt``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

from ctem.cli import input_errors_as_messages, signals_as_messages
from ctem.rows import DataFormatError, DataSizeError, iter_valid_rows, require_object
from ctem.tokenization import train_wordpiece_vocab


def _field_texts(raw: Any, location: str, fields: tuple[str, ...]) -> dict[str, list[str]]:
    """``{"texts": [...]}``: the string, or strings of a list, under each of ``fields`` that a
    JSON row has; any other value there (a number, a list holding one) is a ``DataFormatError``
    naming file, line and field (it was skipped without a word)."""
    row = require_object(raw, location)
    texts: list[str] = []
    for field in fields:
        value = row.get(field)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            texts.extend(value)
        elif value is not None:
            raise DataFormatError(location, field, f"expected a string or a list of strings, got {json.dumps(value, ensure_ascii=False)[:80]}")
    return {"texts": texts}


def _line_text(text: str, location: str) -> dict[str, list[str]]:
    return {"texts": [text]}


def iter_corpus_texts(files: Sequence[str], fields: tuple[str, ...]) -> Iterator[str]:
    """Texts of JSON-lines files (every string, or string in a list, under ``fields``) and
    plain text files (non-blank lines), in order, read with ``ctem.rows.iter_valid_rows``:
    a bad line (UTF-8, JSON, not an object) raises ``DataFormatError`` naming file and line."""
    for row in iter_valid_rows(files, partial(_field_texts, fields=fields), validate_text=_line_text):
        yield from row["texts"]


def nonempty(texts: Iterator[str], files: Sequence[str], fields: tuple[str, ...]) -> Iterator[str]:
    """``texts``, once its first text is known to exist (nothing is written otherwise):
    ``DataSizeError`` naming the files when there is none."""
    for first in texts:
        return itertools.chain([first], texts)
    raise DataSizeError(f"{', '.join(files)}: no texts to build a vocabulary from (empty files, or no field {list(fields)} in JSON rows)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ctem-build-vocab", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="corpus files: JSON lines (.jsonl/.json) or plain text (one text per line)")
    parser.add_argument("--out", required=True, help="output folder; vocab.txt is written there")
    parser.add_argument("--vocab-size", type=int, default=21128, help="vocabulary size incl. special tokens (default: 21128, as bert-base-chinese)")
    parser.add_argument("--min-frequency", type=int, default=2, help="minimum count of a token to enter the vocabulary (default: 2)")
    parser.add_argument("--field", action="append", dest="fields", help="JSON key(s) to read (default: text)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"ctem-build-vocab: error: not found: {', '.join(missing)}")
    fields = tuple(args.fields or ["text"])
    with input_errors_as_messages("ctem-build-vocab"), \
            signals_as_messages("ctem-build-vocab", f"{Path(args.out) / 'vocab.txt'} not written: run the command again"):
        texts = nonempty(iter_corpus_texts(args.files, fields), args.files, fields)
        path = train_wordpiece_vocab(texts, args.out, args.vocab_size, args.min_frequency)
    size = sum(1 for _ in open(path, encoding="utf-8"))
    print(f"[ctem] {size}-token WordPiece vocabulary written to {path}; use it with model.tokenizer={path}")


if __name__ == "__main__":
    main()
