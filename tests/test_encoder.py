"""TextEncoder: pooling, encode(), and loading the saved folder in transformers / sentence-transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ctem import TextEncoder
from ctem.encoder import pool
from tests.helpers.tiny import sentences, tiny_encoder


def test_pooling_modes() -> None:
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "cls").tolist() == [[0, 1], [6, 7]]
    assert pool(hidden, mask, "mean").tolist() == [[1, 2], [8, 9]]
    assert pool(hidden, mask, "last").tolist() == [[2, 3], [10, 11]]
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pool(hidden, left, "last").tolist() == [[4, 5], [10, 11]]


def test_encode_keeps_order_and_mode(tiny_vocab) -> None:
    enc = tiny_encoder(tiny_vocab)
    enc.train()
    texts = sentences(7, seed=3)
    batched = enc.encode(texts, batch_size=3)
    one_by_one = np.stack([enc.encode([t])[0] for t in texts])
    assert batched.shape == (7, 32) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert enc.training, "encode must restore training mode"
    with_instr = enc.encode(texts[:2], instruction="查询：")
    assert not np.allclose(with_instr, batched[:2])


@pytest.mark.parametrize(("pooling", "normalize"), [("cls", True), ("mean", False), ("last", True)])
def test_saved_model_loads_in_sentence_transformers_and_transformers(tiny_vocab, tmp_path, pooling, normalize) -> None:
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoModel

    enc = tiny_encoder(tiny_vocab, pooling=pooling, normalize=normalize, query_instruction="查询：")
    out = enc.save_pretrained(tmp_path / "m")
    texts = sentences(5, seed=4)
    ours = enc.encode(texts)
    theirs = st.SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    hf = AutoModel.from_pretrained(out)
    batch = enc.tokenize(texts, enc.passage_max_length)
    hidden = hf(**batch).last_hidden_state
    manual = pool(hidden, batch["attention_mask"], pooling)
    if normalize:
        manual = torch.nn.functional.normalize(manual, dim=-1)
    np.testing.assert_allclose(manual.detach().numpy(), ours, atol=1e-5)
    reloaded = TextEncoder.from_pretrained(out)
    assert (reloaded.pooling, reloaded.normalize) == (pooling, normalize)
    np.testing.assert_allclose(reloaded.encode(texts), ours, atol=1e-5)
    prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "查询："


def test_errors_are_clear(tiny_vocab) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TextEncoder()
    with pytest.raises(ValueError, match="unknown pooling"):
        tiny_encoder(tiny_vocab, pooling="max")
    with pytest.raises(ValueError, match="model_type"):
        TextEncoder(config={"hidden_size": 8}, tokenizer=str(tiny_vocab))


def test_from_scratch_vocab_size_follows_tokenizer(tiny_vocab) -> None:
    enc = tiny_encoder(tiny_vocab)
    assert enc.backbone.config.vocab_size == len(enc.tokenizer)
