"""bench/retromae_speed.py compares like with like: ctem's RetroMAE losses (head only at the
labelled positions, vocabulary projection fused with the cross-entropy) equal the original
full-vocabulary formulation and the previous ctem one (gathered logits) on the same batch, and
so do the gradients of the encoder, the tied word embeddings and the head, for any chunk size."""

from __future__ import annotations

import sys

import pytest
import torch

from ctem.modules import RetroMAEModule
from ctem.modules.retromae import _masked_lm_loss
from ctem.data_modules.corpus import RetroMAECollator, tokenize_texts
from tests.retromae_helpers import ROOT, random_texts, tiny_encoder

sys.path.insert(0, str(ROOT / "bench"))
import retromae_speed  # noqa: E402


@pytest.fixture(scope="module")
def module_and_batch(tiny_vocab) -> tuple[RetroMAEModule, dict]:
    torch.manual_seed(0)
    module = RetroMAEModule(tiny_encoder(tiny_vocab), reuse_pretrained_mlm_head=False)
    with torch.no_grad():
        module.mlm_head.bias.normal_()  # a bias that matters
    tokenizer = module.encoder.tokenizer
    tokens = tokenize_texts(random_texts(8, seed=1), tokenizer, 40)
    rows = [{"input_ids": i, "word_ids": w} for i, w in zip(tokens["input_ids"], tokens["word_ids"])]
    return module.eval(), RetroMAECollator(tokenizer, generator=torch.Generator().manual_seed(0))(rows)


def _losses_and_grads(module: RetroMAEModule, losses) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    values = losses()
    values[0].backward()
    return torch.stack([v.detach() for v in values]), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _odd_chunk(*counts: int) -> int:
    """The smallest chunk size >= 3 that divides none of ``counts`` (a partial last chunk)."""
    return next(c for c in range(3, 64) if all(n % c for n in counts))


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["full-logits", "gathered-logits"])
@pytest.mark.parametrize("chunk", ["default", "odd", "one"])
def test_ctem_losses_and_gradients_equal_the_unfused_formulations(module_and_batch, peer: str, chunk: str) -> None:
    module, batch = module_and_batch
    counts = [int((batch[k] != -100).sum()) for k in ("encoder_labels", "decoder_labels")]
    module.loss_chunk_size = {"default": None, "odd": _odd_chunk(*counts), "one": 1}[chunk]
    try:
        ours, our_grads = _losses_and_grads(module, lambda: retromae_speed.ctem_losses(module, batch))
    finally:
        module.loss_chunk_size = None
    peer_losses = {"full-logits": retromae_speed.full_logits_losses, "gathered-logits": retromae_speed.gathered_logits_losses}[peer]
    theirs, their_grads = _losses_and_grads(module, lambda: peer_losses(module, batch))
    assert counts[0] < batch["encoder_labels"].numel() / 2, "the encoder labels few positions"
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours, theirs)
    assert our_grads.keys() == their_grads.keys()
    for name in ("encoder.backbone.encoder.layer.0.attention.self.query.weight", "encoder.backbone.embeddings.word_embeddings.weight", "mlm_head.bias", "mlm_head.dense.weight", "decoder"):
        assert any(n.startswith(name) for n in our_grads), f"no gradient for {name}"
    for name, grad in our_grads.items():
        assert torch.allclose(grad, their_grads[name], rtol=1e-4, atol=1e-6), name


def test_accuracy_is_the_argmax_accuracy(module_and_batch) -> None:
    module, batch = module_and_batch
    with torch.no_grad():
        hidden = module.encoder_hidden_states(batch)
        labels = batch["encoder_labels"]
        _, accuracy = _masked_lm_loss(module.mlm_head, hidden, labels, module.word_embeddings, chunk_size=3)
        logits = module.mlm_head(hidden[labels != -100], module.word_embeddings)
        expected = (logits.argmax(-1) == labels[labels != -100]).float().mean()
    assert torch.allclose(accuracy, expected)


def test_no_labelled_position_gives_zero_loss_and_zero_gradients(module_and_batch) -> None:
    module, batch = module_and_batch
    module.zero_grad(set_to_none=True)
    hidden = module.encoder_hidden_states(batch)
    none = torch.full_like(batch["encoder_labels"], -100)
    loss, accuracy = _masked_lm_loss(module.mlm_head, hidden, none, module.word_embeddings)
    assert loss.item() == 0.0 and accuracy.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert module.mlm_head.bias.grad is not None and module.mlm_head.bias.grad.abs().sum() == 0
    assert module.word_embeddings.grad.abs().sum() == 0
