"""The gradient cache gives the loss and gradients of plain back-propagation, dropout on."""

from __future__ import annotations

import torch

from ctem.grad_cache import encode_without_graph, replay_with_graph, split_tokens
from ctem.losses import InfoNCELoss
from tests.helpers.tiny import sentences, tiny_encoder, write_vocab


def test_cached_equals_uncached_with_dropout(tmp_path) -> None:
    torch.manual_seed(0)
    enc = tiny_encoder(write_vocab(tmp_path), dropout=0.1, pooling="mean", initializer_range=0.2)
    enc.train()
    q_tok = enc.tokenize(sentences(12, seed=5), 16)
    p_tok = enc.tokenize(sentences(24, seed=6, max_len=20), 24)
    loss_fn = InfoNCELoss(0.05)
    q_chunks, p_chunks = split_tokens(q_tok, 5), split_tokens(p_tok, 5)

    # Reference: the same chunks encoded with a graph in the same order, one backward.
    torch.manual_seed(123)
    q = torch.cat([enc(**c) for c in q_chunks])
    p = torch.cat([enc(**c) for c in p_chunks])
    ref_loss = loss_fn(q, p, 2).loss
    ref_loss.backward()
    ref_grads = {n: w.grad.clone() for n, w in enc.named_parameters() if w.grad is not None}
    enc.zero_grad(set_to_none=True)

    torch.manual_seed(123)
    q_c, q_states = encode_without_graph(enc, q_chunks)
    p_c, p_states = encode_without_graph(enc, p_chunks)
    q_c.requires_grad_(True)
    p_c.requires_grad_(True)
    loss = loss_fn(q_c, p_c, 2).loss
    q_grad, p_grad = torch.autograd.grad(loss, [q_c, p_c])
    for s in replay_with_graph(enc, q_chunks, q_states, q_grad):
        s.backward()
    for s in replay_with_graph(enc, p_chunks, p_states, p_grad):
        s.backward()

    assert abs(loss.item() - ref_loss.item()) < 1e-6
    flat_ref = torch.cat([g.flatten() for g in ref_grads.values()])
    flat = torch.cat([dict(enc.named_parameters())[n].grad.flatten() for n in ref_grads])
    assert float((flat - flat_ref).norm() / flat_ref.norm()) < 1e-5
    # Without replaying the random state the dropout masks differ and so would the gradients.
    assert len(q_states) == 3 and len(p_states) == 5


def test_split_tokens_trims_padding() -> None:
    tokens = {
        "input_ids": torch.tensor([[1, 2, 0, 0], [1, 0, 0, 0], [1, 2, 3, 4]]),
        "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]),
    }
    chunks = split_tokens(tokens, 2)
    assert [c["input_ids"].shape for c in chunks] == [(2, 2), (1, 4)]
