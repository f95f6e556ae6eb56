"""fused_linear_cross_entropy equals F.cross_entropy(F.linear(...), ignore_index=-100) in loss,
accuracy and gradients, at chunk boundaries, with ignored rows, with none, under gradient
accumulation, without grad mode and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ctem.retromae.fused_loss import auto_chunk_size, fused_linear_cross_entropy


def _inputs(n: int, h: int = 16, v: int = 53, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g, dtype=dtype).requires_grad_()
    w = (torch.randn(v, h, generator=g, dtype=dtype) * 0.5).requires_grad_()
    b = torch.randn(v, generator=g, dtype=dtype).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    return x, w, b, t


def _reference(x, w, b, t):
    logits = F.linear(x, w, b).float()
    keep = t != -100
    loss = F.cross_entropy(logits, t, ignore_index=-100) if keep.any() else logits.sum() * 0.0
    accuracy = (logits.argmax(-1) == t)[keep].float().mean() if keep.any() else torch.zeros(())
    return loss, accuracy.detach()


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


@pytest.mark.parametrize(("n", "chunk"), [(37, 8), (37, 1), (37, 37), (37, 1000), (64, 16), (5, None)])
@pytest.mark.parametrize("ignored", [False, True])
def test_equals_linear_then_cross_entropy(n: int, chunk: int | None, ignored: bool) -> None:
    x, w, b, t = _inputs(n)
    if ignored:
        t[::3] = -100
    loss, accuracy = fused_linear_cross_entropy(x, w, b, t, chunk_size=chunk)
    ref_loss, ref_accuracy = _reference(x, w, b, t)
    assert torch.allclose(loss, ref_loss, rtol=0, atol=1e-5)
    assert torch.allclose(accuracy, ref_accuracy) and not accuracy.requires_grad
    for ours, theirs in zip(_grads(loss, x, w, b), _grads(ref_loss, x, w, b)):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_float64_passes_gradcheck() -> None:
    x, w, b, t = _inputs(11, h=5, v=9, dtype=torch.float64)
    t[2] = -100
    assert torch.autograd.gradcheck(lambda x, w, b: fused_linear_cross_entropy(x, w, b, t, chunk_size=4)[0], (x, w, b))


@pytest.mark.parametrize("n", [0, 9])
def test_no_counted_row_gives_zero_loss_and_zero_gradients(n: int) -> None:
    x, w, b, t = _inputs(n)
    t[:] = -100
    loss, accuracy = fused_linear_cross_entropy(x, w, b, t, chunk_size=4)
    assert loss.item() == 0.0 and accuracy.item() == 0.0
    loss.backward()
    assert x.grad.shape == x.shape and not x.grad.any() and not w.grad.any() and not b.grad.any()


def test_gradients_accumulate_over_calls_and_scale_with_the_upstream_gradient() -> None:
    x, w, b, t = _inputs(30)
    (fused_linear_cross_entropy(x[:13], w, b, t[:13], chunk_size=4)[0] * 0.5).backward()
    (fused_linear_cross_entropy(x[13:], w, b, t[13:], chunk_size=4)[0] * 2.0).backward()
    fused = [p.grad.clone() for p in (x, w, b)]
    for p in (x, w, b):
        p.grad = None
    (_reference(x[:13], w, b, t[:13])[0] * 0.5 + _reference(x[13:], w, b, t[13:])[0] * 2.0).backward()
    for ours, p in zip(fused, (x, w, b)):
        assert torch.allclose(ours, p.grad, rtol=1e-4, atol=1e-6)


def test_frozen_inputs_and_no_grad_mode() -> None:
    x, w, b, t = _inputs(20)
    with torch.no_grad():
        loss, _ = fused_linear_cross_entropy(x, w, b, t, chunk_size=6)
    assert not loss.requires_grad and torch.allclose(loss, _reference(x, w, b, t)[0], atol=1e-5)
    w.requires_grad_(False)
    loss, _ = fused_linear_cross_entropy(x, w, None, t, chunk_size=6)
    ref = F.cross_entropy(F.linear(x, w), t)
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(_grads(loss, x)[0], _grads(ref, x)[0], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_runs_the_products_in_bf16_and_keeps_dtypes() -> None:
    x, w, b, t = _inputs(40, h=32, v=101)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = fused_linear_cross_entropy(x, w, b, t, chunk_size=16)
        ref = F.cross_entropy(F.linear(x, w, b).float(), t)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, ref, atol=2e-2)
    ours, theirs = _grads(loss, x, w, b), _grads(ref, x, w, b)
    for a, c, p in zip(ours, theirs, (x, w, b)):
        assert a.dtype == p.dtype
        assert torch.allclose(a, c, rtol=0, atol=2e-2 * c.abs().max().item())


def test_shapes_are_checked_and_chunks_sized() -> None:
    x, w, b, t = _inputs(4)
    with pytest.raises(ValueError, match="targets"):
        fused_linear_cross_entropy(x, w, b, t[:3])
    with pytest.raises(ValueError, match="features"):
        fused_linear_cross_entropy(x[:, :5], w, b, t)
    assert auto_chunk_size(21128) == 1568 and auto_chunk_size(250_002) == 128 and auto_chunk_size(10**9) == 32
