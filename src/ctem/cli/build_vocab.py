"""``ctem-build-vocab``: train a WordPiece vocabulary on a corpus, for models built from scratch.

    ctem-build-vocab --out vocab/my_corpus --vocab-size 21128 corpus.jsonl more/*.txt

JSON-lines files (``.jsonl`` / ``.json``) contribute the strings under ``--field`` (default
``text``; repeat the flag for several fields, e.g. ``--field query --field pos``), other
files one text per non-blank line. Writes ``<out>/vocab.txt`` (BERT special tokens first,
Chinese characters split one by one), to be used as ``model.tokenizer=<out>/vocab.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Sequence

from ctem.tokenization import iter_jsonl_texts, train_wordpiece_vocab


def iter_corpus_texts(files: Sequence[str], fields: tuple[str, ...]) -> Iterator[str]:
    """Texts of JSON-lines files (``fields``) and plain text files (lines), in order."""
    for file in files:
        if file.endswith((".jsonl", ".json")):
            yield from iter_jsonl_texts([file], fields)
            continue
        with open(file, encoding="utf-8") as handle:
            yield from (line.strip() for line in handle if line.strip())


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
        raise SystemExit(f"ctem-build-vocab: not found: {', '.join(missing)}")
    fields = tuple(args.fields or ["text"])
    path = train_wordpiece_vocab(iter_corpus_texts(args.files, fields), args.out, args.vocab_size, args.min_frequency)
    size = sum(1 for _ in open(path, encoding="utf-8"))
    print(f"[ctem] {size}-token WordPiece vocabulary written to {path}; use it with model.tokenizer={path}")


if __name__ == "__main__":
    main()
