"""Shared helpers of the evaluation tests: toy encoders, tiny tasks, a tiny BERT over their characters."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def bag_of_chars(texts: list[str], instruction: str | None = None, dim: int = 64) -> np.ndarray:
    """A deterministic hashing bag-of-characters encoder ``[N, dim]``."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for ch in (instruction or "") + text:
            out[i, zlib.crc32(ch.encode()) % dim] += 1.0
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_tiny_tasks(root: Path) -> Path:
    """Two small tasks: an STS task and a retrieval task (Chinese text)."""
    words = ["苹果", "香蕉", "天气", "下雨", "银行", "贷款", "电影", "音乐", "足球", "篮球", "手机", "电脑"]
    sts = root / "TinySTS"
    sts.mkdir(parents=True)
    (sts / "task.json").write_text(json.dumps({"name": "TinySTS", "type": "STS", "main_score": "cosine_spearman", "language": "zh"}))
    rows = []
    for i, w in enumerate(words):
        rows.append({"sentence1": f"我喜欢{w}", "sentence2": f"我很喜欢{w}", "score": 5.0})
        rows.append({"sentence1": f"我喜欢{w}", "sentence2": f"今天{words[(i + 5) % len(words)]}很好", "score": float(i % 3)})
    write_jsonl(sts / "test.jsonl", rows)
    ret = root / "TinyRetrieval"
    ret.mkdir()
    (ret / "task.json").write_text(json.dumps({"name": "TinyRetrieval", "type": "Retrieval", "main_score": "ndcg_at_10", "language": "zh"}))
    write_jsonl(ret / "corpus.jsonl", [{"id": f"d{i}", "text": f"关于{w}的一篇文章，{w}很常见。"} for i, w in enumerate(words)])
    write_jsonl(ret / "queries.jsonl", [{"id": f"q{i}", "text": f"什么是{w}"} for i, w in enumerate(words)])
    write_jsonl(ret / "qrels.jsonl", [{"qid": f"q{i}", "pid": f"d{i}", "score": 1} for i in range(len(words))])
    return root


def tiny_vocab() -> Path:
    """``write_vocab``'s vocab.txt (written once per process) over every CJK character in this
    folder's test files, so the tiny encoder reads the tasks' texts without [UNK]."""
    import tempfile

    from tests.helpers.tiny import write_vocab

    folder = Path(tempfile.gettempdir()) / f"ctem-eval-tests-vocab-{os.getpid()}"
    if not (folder / "vocab.txt").is_file():
        text = "".join(f.read_text(encoding="utf-8") for f in sorted(HERE.glob("*.py")))
        folder.mkdir(exist_ok=True)
        write_vocab(folder, chars="".join(sorted({c for c in text if "\u4e00" <= c <= "\u9fff"})))
    return folder / "vocab.txt"


def make_tiny_encoder(**overrides):
    """``tiny_encoder`` (seed 0) over ``tiny_vocab()``."""
    import torch

    from tests.helpers.tiny import tiny_encoder

    torch.manual_seed(0)
    return tiny_encoder(tiny_vocab(), **overrides)
