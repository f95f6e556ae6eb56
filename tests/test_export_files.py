"""What an exported model folder holds beyond the weights: the tokenizer's real length
limit, and file modes that follow the user's umask."""

from __future__ import annotations

import os
import stat

import torch
from transformers import AutoModel, AutoTokenizer

from ctem.mining import write_jsonl_atomic
from tests.helpers.tiny import tiny_encoder, write_vocab


def test_saved_tokenizer_truncates_to_the_position_table(tmp_path) -> None:
    encoder = tiny_encoder(write_vocab(tmp_path))
    folder = encoder.save_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.model_max_length == 512
    batch = tokenizer(["的" * 2000], truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 512
    with torch.no_grad():
        AutoModel.from_pretrained(folder)(**batch)  # 2,000 characters: no position overflow


def test_outputs_follow_the_umask(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        folder = tiny_encoder(write_vocab(tmp_path)).save_pretrained(tmp_path / "model")
        mined = write_jsonl_atomic([{"query": "a", "pos": ["b"], "neg": []}], tmp_path / "mined.jsonl")
    finally:
        os.umask(old)
    for path in [folder / "model.safetensors", folder / "config.json", mined]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert stat.S_IMODE((folder / "1_Pooling").stat().st_mode) == 0o750
