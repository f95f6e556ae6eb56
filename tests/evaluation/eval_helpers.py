"""Shared helpers of the evaluation tests: toy encoders, tiny tasks, a tiny BERT."""

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
    (sts / "task.json").write_text(json.dumps({"name": "TinySTS", "type": "STS", "main_score": "cosine_spearman"}))
    rows = []
    for i, w in enumerate(words):
        rows.append({"sentence1": f"我喜欢{w}", "sentence2": f"我很喜欢{w}", "score": 5.0})
        rows.append({"sentence1": f"我喜欢{w}", "sentence2": f"今天{words[(i + 5) % len(words)]}很好", "score": float(i % 3)})
    write_jsonl(sts / "test.jsonl", rows)
    ret = root / "TinyRetrieval"
    ret.mkdir()
    (ret / "task.json").write_text(json.dumps({"name": "TinyRetrieval", "type": "Retrieval", "main_score": "ndcg_at_10"}))
    write_jsonl(ret / "corpus.jsonl", [{"id": f"d{i}", "text": f"关于{w}的一篇文章，{w}很常见。"} for i, w in enumerate(words)])
    write_jsonl(ret / "queries.jsonl", [{"id": f"q{i}", "text": f"什么是{w}"} for i, w in enumerate(words)])
    write_jsonl(ret / "qrels.jsonl", [{"qid": f"q{i}", "pid": f"d{i}", "score": 1} for i in range(len(words))])
    return root


def tiny_vocab() -> Path:
    """A WordPiece vocab.txt (written once per process) of BERT's special tokens, ASCII and
    every CJK character in this folder's test files, so the tiny encoder needs no shared data."""
    import tempfile

    path = Path(tempfile.gettempdir()) / f"ctem-eval-tests-vocab-{os.getpid()}.txt"
    if not path.is_file():
        text = "".join(f.read_text(encoding="utf-8") for f in sorted(HERE.glob("*.py")))
        chars = sorted({c for c in text if "\u4e00" <= c <= "\u9fff"} | set("，。？！"))
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789,.?!", *chars]
        path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def make_tiny_encoder(**overrides):
    """A random 2-layer BERT (hidden 64) over ``tiny_vocab()``."""
    import torch

    from ctem import TextEncoder

    torch.manual_seed(0)
    vocab = tiny_vocab()
    config = dict(
        model_type="bert",
        vocab_size=len(vocab.read_text(encoding="utf-8").split()),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    return TextEncoder(config=config, tokenizer=str(vocab), **overrides)
