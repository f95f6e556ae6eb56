"""ctem-build-vocab's vocab.txt is written atomically: a failed write keeps the old file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ctem.tokenization import train_wordpiece_vocab

TEXTS = ["今天天气很好", "我喜欢吃苹果", "银行贷款利率", "hello world 123"] * 5


def test_failed_write_keeps_the_old_vocab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "vocab.txt"
    old.write_text("[PAD]\n[UNK]\nold\n", encoding="utf-8")

    def full_disk(src, dst):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        train_wordpiece_vocab(TEXTS, tmp_path, vocab_size=200)
    assert old.read_text(encoding="utf-8") == "[PAD]\n[UNK]\nold\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.txt"]  # no temporary left


def test_vocab_written_in_place_of_the_old(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("old\n", encoding="utf-8")
    path = train_wordpiece_vocab(TEXTS, tmp_path, vocab_size=200)
    tokens = path.read_text(encoding="utf-8").splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and "苹" in tokens
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.txt"]
