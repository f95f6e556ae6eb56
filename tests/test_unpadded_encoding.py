"""Padding-free encoding (``ctem.packing``) gives the padded batch's embeddings, loss and
gradients: length-sorted micro-chunks (SDPA, the CPU path) and packed sequences with a
variable-length attention (the flash-attention path, exercised here on the CPU through a
reference variable-length attention registered with transformers)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from ctem import packing
from ctem.losses import InfoNCELoss
from ctem.modules import BiEncoderModule, MultiTaskModule
from ctem.packing import PaddingFreeConfig, encode_padding_free, packs, split_tokens, unsort
from tests.helpers.tiny import sentences, tiny_encoder

VARLEN = "ctem_test_varlen"


def _reference_varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """What flash-attention's varlen kernel computes, for a packed batch ``[1, heads, T, d]``:
    attention within each ``cu_seq_lens_q`` segment only. Returns ``[1, T, heads, d]``."""
    assert attention_mask is None and query.size(0) == 1
    cu = kwargs["cu_seq_lens_q"].tolist()
    assert kwargs["max_length_q"] == max(b - a for a, b in zip(cu, cu[1:]))
    parts = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
        for q, k, v in ((x[:, :, a:b] for x in (query, key, value)) for a, b in zip(cu, cu[1:]))
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(VARLEN, _reference_varlen_attention)
AttentionMaskInterface.register(VARLEN, lambda *args, **kwargs: None)


def _encoder(vocab, dropout: float = 0.0, **overrides):
    torch.manual_seed(0)
    # A wide initialisation keeps random embeddings apart: the loss is far from uniform.
    return tiny_encoder(vocab, dropout=dropout, initializer_range=0.2, **{"pooling": "mean", **overrides})


def _varlen(encoder, monkeypatch):
    """``encoder`` switched to the reference variable-length attention, which ctem then packs for."""
    monkeypatch.setattr(packing, "VARLEN_ATTENTION", {*packing.VARLEN_ATTENTION, VARLEN})
    encoder.backbone.config._attn_implementation = VARLEN
    assert packs(encoder.backbone)
    return encoder


def _grads(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([w.grad.flatten() for w in module.parameters() if w.grad is not None])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- chunking
def test_chunks_respect_the_row_and_token_limits() -> None:
    lengths = [9, 3, 7, 7, 2, 5, 1, 8]
    mask = torch.tensor([[1] * n + [0] * (10 - n) for n in lengths])
    tokens = {"input_ids": mask * 5, "attention_mask": mask}
    chunks, order = split_tokens(tokens, None, 16)
    assert [c["attention_mask"].shape for c in chunks] == [(1, 9), (2, 8), (2, 7), (3, 3)]
    assert all(c["attention_mask"].numel() <= 16 or len(c["attention_mask"]) == 1 for c in chunks)
    assert sorted(order.tolist()) == list(range(8))
    chunks, _ = split_tokens(tokens, 2, 100)
    assert [len(c["input_ids"]) for c in chunks] == [2, 2, 2, 2]
    chunks, _ = split_tokens(tokens, None, 1)  # a row longer than the budget is a chunk of its own
    assert [len(c["input_ids"]) for c in chunks] == [1] * 8
    rows = torch.arange(8.0)[:, None]
    assert unsort(rows[order], order).tolist() == rows.tolist()
    with pytest.raises(ValueError, match="padding_free.chunk_tokens"):
        PaddingFreeConfig(chunk_tokens=0)


def test_default_token_limit_by_device() -> None:
    assert PaddingFreeConfig().token_limit(torch.device("cpu")) == packing.CPU_CHUNK_TOKENS
    assert PaddingFreeConfig().token_limit(torch.device("cuda")) == packing.ACCELERATOR_CHUNK_TOKENS
    assert PaddingFreeConfig(chunk_tokens=64).token_limit(torch.device("cpu")) == 64


# ---------------------------------------------------------------- embeddings and gradients
@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
@pytest.mark.parametrize("path", ["chunks", "packed"])
def test_padding_free_embeddings_and_gradients_equal_padded(tiny_vocab, monkeypatch, pooling: str, path: str) -> None:
    encoder = _encoder(tiny_vocab, pooling=pooling)
    tokens = encoder.tokenize(sentences(14, seed=3, max_len=30), 40)
    assert tokens["attention_mask"].sum() < 0.8 * tokens["attention_mask"].numel()  # padding to skip
    weights = torch.randn(14, encoder.dim)
    padded = encoder(**tokens)
    (padded * weights).sum().backward()
    ref = _grads(encoder)
    encoder.zero_grad(set_to_none=True)
    if path == "packed":
        _varlen(encoder, monkeypatch)
    out = encode_padding_free(encoder, tokens, chunk_rows=4, chunk_tokens=60, packed=path == "packed")
    (out * weights).sum().backward()
    torch.testing.assert_close(out, padded, rtol=0, atol=1e-5)
    assert _rel(_grads(encoder), ref) < 1e-5


def test_packed_rows_keep_their_positions_with_left_padding(tiny_vocab, monkeypatch) -> None:
    """Packed position ids are the columns of the padded batch, as BERT's padded forward uses."""
    encoder = _encoder(tiny_vocab)
    encoder.tokenizer.padding_side = "left"
    tokens = encoder.tokenize(sentences(6, seed=4, max_len=20), 24)
    assert tokens["attention_mask"][:, 0].eq(0).any()
    padded = encoder(**tokens)
    torch.testing.assert_close(encode_padding_free(encoder, tokens, 2, None), padded, rtol=0, atol=1e-5)
    _varlen(encoder, monkeypatch)
    torch.testing.assert_close(encode_padding_free(encoder, tokens, None, None, packed=True), padded, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the training step
class _Recorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grads: list[torch.Tensor] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append(_grads(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def _step(make_trainer, vocab, monkeypatch, padding_free, group_size: int, in_batch: bool = True, dropout: float = 0.0,
          module_class=BiEncoderModule, varlen: bool = False) -> _Recorder:  # fmt: skip
    """Two optimizer steps of ``module_class`` on fixed batches; the losses and gradients."""
    encoder = _encoder(vocab, dropout=dropout)
    if varlen:
        _varlen(encoder, monkeypatch)
    module = module_class(
        encoder, InfoNCELoss(temperature=0.05), optimizer={"lr": 1e-3, "warmup_steps": 0}, padding_free=padding_free
    )
    batches = [
        {
            "query": encoder.tokenize(sentences(7, seed=10 + i, max_len=25), 32),
            "passages": encoder.tokenize(sentences(7 * group_size, seed=20 + i, max_len=30), 40),
            "group_size": group_size,
            "in_batch_negatives": in_batch,
            "task": "t",
        }
        for i in range(2)
    ]
    recorder = _Recorder()
    trainer = make_trainer(max_steps=2, callbacks=[recorder])
    torch.manual_seed(1)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return recorder


@pytest.mark.parametrize(
    "group_size,in_batch,chunking,module_class",
    [
        (1, True, {"chunk_rows": 2}, BiEncoderModule),
        (2, True, {"chunk_tokens": 50}, BiEncoderModule),
        (3, True, {}, BiEncoderModule),  # the default limit (256 token positions on the CPU)
        (2, False, {"chunk_rows": 3, "chunk_tokens": 40}, MultiTaskModule),
        (2, True, "packed", BiEncoderModule),
    ],
    ids=["g1_rows", "g2_tokens", "g3_default", "g2_own_group_multitask", "g2_packed"],
)
@pytest.mark.slow
def test_training_step_equals_padded(make_trainer, tiny_vocab, monkeypatch, group_size, in_batch, chunking, module_class) -> None:
    """Loss and gradients of two steps (the second after an AdamW update) equal the padded
    path's to float rounding, with dropout off (the same network on both paths)."""
    padded = _step(make_trainer, tiny_vocab, monkeypatch, {"enabled": False}, group_size, in_batch, module_class=module_class)
    varlen = chunking == "packed"
    config = {} if varlen else chunking
    free = _step(make_trainer, tiny_vocab, monkeypatch, config, group_size, in_batch, module_class=module_class, varlen=varlen)
    assert len(free.losses) == len(padded.losses) == 2
    for loss, ref in zip(free.losses, padded.losses):
        assert abs(loss - ref) <= 1e-5 * abs(ref)
    for grad, ref in zip(free.grads, padded.grads):
        assert _rel(grad, ref) < 1e-5


def test_training_step_with_dropout_is_finite(make_trainer, tiny_vocab, monkeypatch) -> None:
    """With dropout on, the chunks draw their masks from the random stream in other shapes
    and order than one padded call does (and the padded call also draws masks for padding
    positions), so the two paths see different dropout masks and are not compared; the
    padding-free step must still give a finite loss and finite gradients, and dropout must
    act (the loss differs from the dropout-free one)."""
    free = _step(make_trainer, tiny_vocab, monkeypatch, {"chunk_rows": 3}, 2, dropout=0.1)
    plain = _step(make_trainer, tiny_vocab, monkeypatch, {"chunk_rows": 3}, 2, dropout=0.0)
    assert all(math.isfinite(loss) for loss in free.losses)
    assert all(bool(torch.isfinite(g).all()) for g in free.grads)
    assert free.losses[0] != pytest.approx(plain.losses[0], rel=1e-4)


def test_the_stage_configs_carry_the_knob(compose_train) -> None:
    for stage in ("contrastive", "multitask"):
        cfg = compose_train(f"stage={stage}")
        config = PaddingFreeConfig(**cfg.stage.padding_free)
        assert config.enabled and config.chunk_tokens is None and config.chunk_rows is None
