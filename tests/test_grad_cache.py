"""The gradient cache gives the loss and gradients of plain back-propagation, dropout on."""

from __future__ import annotations

import pytest
import torch

from ctem.grad_cache import blockwise_infonce, encode_without_graph, replay_with_graph, split_tokens, unsort
from ctem.losses import InfoNCELoss
from tests.helpers.tiny import sentences, tiny_encoder, write_vocab


def test_cached_equals_uncached_with_dropout(tmp_path) -> None:
    torch.manual_seed(0)
    enc = tiny_encoder(write_vocab(tmp_path), dropout=0.1, pooling="mean", initializer_range=0.2)
    enc.train()
    q_tok = enc.tokenize(sentences(12, seed=5), 16)
    p_tok = enc.tokenize(sentences(24, seed=6, max_len=20), 24)
    loss_fn = InfoNCELoss(0.05)
    (q_chunks, q_order), (p_chunks, p_order) = split_tokens(q_tok, 5), split_tokens(p_tok, 5)

    # Reference: the same chunks encoded with a graph in the same order, one backward.
    torch.manual_seed(123)
    q = unsort(torch.cat([enc(**c) for c in q_chunks]), q_order)
    p = unsort(torch.cat([enc(**c) for c in p_chunks]), p_order)
    ref_loss = loss_fn(q, p, 2).loss
    ref_loss.backward()
    ref_grads = {n: w.grad.clone() for n, w in enc.named_parameters() if w.grad is not None}
    enc.zero_grad(set_to_none=True)

    torch.manual_seed(123)
    q_sorted, q_states = encode_without_graph(enc, q_chunks)
    p_sorted, p_states = encode_without_graph(enc, p_chunks)
    loss, _, q_grad, p_grad = blockwise_infonce(loss_fn, unsort(q_sorted, q_order), unsort(p_sorted, p_order), 2, 0, 5)
    for s in replay_with_graph(enc, q_chunks, q_states, q_grad[q_order]):
        s.backward()
    for s in replay_with_graph(enc, p_chunks, p_states, p_grad[p_order]):
        s.backward()

    assert abs(loss.item() - ref_loss.item()) < 1e-6
    flat_ref = torch.cat([g.flatten() for g in ref_grads.values()])
    flat = torch.cat([dict(enc.named_parameters())[n].grad.flatten() for n in ref_grads])
    assert float((flat - flat_ref).norm() / flat_ref.norm()) < 1e-5
    assert len(q_states) == 3 and len(p_states) == 5


@pytest.mark.parametrize("in_batch", [True, False])
def test_blockwise_infonce_equals_full_matrix(in_batch: bool) -> None:
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1).requires_grad_(True)
    p = torch.nn.functional.normalize(torch.randn(30 * 3, 8), dim=-1).requires_grad_(True)
    loss_fn = InfoNCELoss(0.05, in_batch_negatives=in_batch)
    full = loss_fn(q, p, 3, query_offset=7)
    full.loss.backward()
    loss, accuracy, q_grad, p_grad = blockwise_infonce(loss_fn, q.detach(), p.detach(), 3, 7, block_size=4)
    assert loss.item() == pytest.approx(full.loss.item(), rel=1e-6)
    assert accuracy.item() == pytest.approx((full.scores.argmax(1) == full.targets).float().mean().item())
    torch.testing.assert_close(q_grad, q.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(p_grad, p.grad, rtol=1e-5, atol=1e-7)


def test_split_tokens_sorts_by_length_and_trims_padding() -> None:
    tokens = {
        "input_ids": torch.tensor([[1, 2, 0, 0], [1, 0, 0, 0], [1, 2, 3, 4]]),
        "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]),
    }
    chunks, order = split_tokens(tokens, 2)
    assert order.tolist() == [2, 0, 1]
    assert [c["input_ids"].shape for c in chunks] == [(2, 4), (1, 1)]
    rows = torch.tensor([[10.0], [20.0], [30.0]])
    assert unsort(rows[order], order).tolist() == rows.tolist()
