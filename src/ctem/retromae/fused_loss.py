"""Cross-entropy over a large vocabulary without materialising the logits.

``fused_linear_cross_entropy(x, weight, bias, target)`` returns what
``F.cross_entropy(F.linear(x, weight, bias), target, ignore_index=-100)`` returns (mean over
the rows whose target is not ``ignore_index``), plus the top-1 accuracy over those rows, with
the same gradients for ``x``, ``weight`` and ``bias``. Shapes::

    x       [N, H]   hidden states (e.g. the MLM head's LayerNorm output at labelled positions)
    weight  [V, H]   vocabulary projection (RetroMAE: the encoder's tied word embeddings)
    bias    [V]      or None
    target  [N]      class ids in [0, V), or ignore_index
    ->      loss [] (float32, differentiable), accuracy [] (float32, detached)

How: the rows are processed ``chunk_size`` at a time. For each chunk the logits ``[c, V]``
are formed in float32, turned into the loss terms, the accuracy count (gold logit equal to
the row maximum) and the softmax, and the gradients are formed at once
(``softmax - onehot``: ``grad_x = P @ W``, ``grad_W += P.T @ x``, ``grad_b += P.sum(0)``);
then the chunk's logits are dropped. Backward only scales the saved gradients by the
incoming gradient and ``1 / n``; nothing is recomputed, so the matrix products are the same
three (forward, ``grad_x``, ``grad_W``) as with the unfused formulation.

Memory: the unfused formulation keeps ``[N, V]`` float32 logits (plus, through autograd, the
log-softmax ``[N, V]`` saved for backward and the ``[N, V]`` gradient formed in backward;
``argmax`` for accuracy reads them once more): about ``3 * 4 * N * V`` bytes at its peak,
2.6 GB for the RetroMAE step of ``experiment=cpack/pretrain`` (``N`` ~ 10,500 labelled
positions of 32 x 256 tokens, ``V`` = 21,128). The fused one keeps one chunk of float32
logits (``4 * chunk_size * V`` bytes; by default ``chunk_size`` is chosen so that this is
about 128 MiB, 1,568 rows for V = 21,128) plus the saved gradients: ``grad_x`` ``[N, H]`` in
``x``'s dtype and ``grad_W`` ``[V, H]`` / ``grad_b`` ``[V]`` in float32 (43 MB for
bert_small's 21,128 x 512), i.e. the size of ``weight``'s own gradient.

Precision: under autocast (e.g. bf16 on CUDA) the two matrix products per chunk run in the
autocast dtype, as ``F.linear`` would, and the softmax, the loss, the accuracy and the
accumulation of ``grad_W`` / ``grad_b`` run in float32. Without autocast the products run in
the inputs' dtype, the rest in float32 (float64 for float64 inputs); with float32 inputs the
results equal the unfused computation to rounding.

Distributed training and accumulation: the gradients leave through an ordinary
``torch.autograd.Function`` whose inputs are ``x``, ``weight`` and ``bias`` themselves, so
they reach the parameters' ``.grad`` through autograd as any layer's would: DDP's reducer
hooks, FSDP's (sharded-parameter) gradient hooks and gradient accumulation (gradients add
up in ``.grad`` across micro-batches) see nothing special. ``weight`` is not needed after
forward (FSDP may reshard it). Double backward is not supported. Rows of ``x`` that do not
need a gradient (``requires_grad`` off, or grad mode off as in evaluation) skip the
gradient work.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["auto_chunk_size", "fused_linear_cross_entropy"]

# float32 logits per chunk of the default chunk size (bytes)
_CHUNK_BYTES = 128 * 2**20


def auto_chunk_size(vocab_size: int) -> int:
    """Rows per chunk such that a chunk's float32 logits take about 128 MiB (a multiple
    of 32, at least 32)."""
    return max(32, _CHUNK_BYTES // (4 * max(vocab_size, 1)) // 32 * 32)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Forward returns ``(loss_sum_over_valid / n, correct / n)`` and saves the gradients
    of the mean loss; see the module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        target: torch.Tensor,
        ignore_index: int,
        chunk_size: int,
        grad_enabled: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = x.device
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else x.dtype
        need = ctx.needs_input_grad if grad_enabled else (False,) * 3
        need_x, need_w, need_b = need[0], need[1], bias is not None and need[2]
        acc = torch.float64 if dtype == torch.float64 else torch.float32  # softmax, sums, loss
        with torch.autocast(device_type=device.type, enabled=False):
            xs, ws = x.to(dtype), weight.to(dtype)
            bs = None if bias is None else bias.to(dtype)
            valid = target != ignore_index
            masked = bool((~valid).any())  # one host sync per call, none per chunk
            gold_all = torch.where(valid, target, 0) if masked else target
            n = valid.sum().float()
            loss = torch.zeros((), dtype=acc, device=device)
            correct = torch.zeros((), dtype=acc, device=device)
            grad_x = torch.empty_like(x) if need_x else None
            grad_w = torch.zeros(weight.shape, dtype=acc, device=device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=acc, device=device) if need_b else None
            for start in range(0, x.size(0), chunk_size):
                rows, gold = xs[start : start + chunk_size], gold_all[start : start + chunk_size]
                logits = (torch.addmm(bs, rows, ws.t()) if bs is not None else rows @ ws.t()).to(acc)
                row_max = logits.amax(dim=1, keepdim=True)
                gold_logit = logits.gather(1, gold[:, None])
                probs = logits.sub_(row_max).exp_()  # in place: the chunk's only [c, V] buffer
                total = probs.sum(dim=1, keepdim=True)
                row_loss = (row_max + total.log() - gold_logit).squeeze(1)
                hit = (gold_logit >= row_max).squeeze(1)
                if masked:
                    keep = valid[start : start + chunk_size]
                    row_loss, hit = row_loss * keep, hit & keep
                loss += row_loss.sum()
                correct += hit.sum()
                if not (need_x or need_w or need_b):
                    continue
                probs.div_(total)
                probs[torch.arange(gold.size(0), device=device), gold] -= 1.0  # softmax - onehot
                if masked:
                    probs.mul_(keep[:, None])
                if need_b:
                    grad_b += probs.sum(dim=0)
                p = probs.to(dtype)
                if need_x:
                    grad_x[start : start + chunk_size] = p @ ws
                if need_w:
                    if dtype == acc:
                        grad_w.addmm_(p.t(), rows)
                    else:
                        grad_w += (p.t() @ rows).to(acc)
            count = n.to(acc).clamp(min=1.0)
        ctx.save_for_backward(grad_x, grad_w, grad_b, count)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        accuracy = correct / count
        ctx.mark_non_differentiable(accuracy)
        return loss / count, accuracy

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_accuracy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_w, grad_b, count = ctx.saved_tensors
        scale = grad_loss / count
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            None if grad_x is None else grad_x * scale.to(grad_x.dtype),
            None if grad_w is None else (grad_w * scale).to(weight_dtype),
            None if grad_b is None else (grad_b * scale).to(bias_dtype),
            None,
            None,
            None,
            None,
        )


def fused_linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of ``x @ weight.T + bias`` against ``target`` and top-1 accuracy,
    over the rows whose target is not ``ignore_index``, without an ``[N, V]`` logits tensor.

    Args:
        x: ``[N, H]`` (or ``[..., H]`` with ``target`` ``[...]``).
        weight: ``[V, H]``.
        bias: ``[V]`` or ``None``.
        target: ``[N]`` class ids; ``ignore_index`` rows count for nothing.
        ignore_index: the target value of rows to skip.
        chunk_size: rows of logits formed at once (default ``auto_chunk_size(V)``: ~128 MiB
            of float32 logits). Results do not depend on it beyond float rounding.

    Returns:
        ``(loss, accuracy)``: float32 scalars (float64 for float64 inputs); ``loss`` carries the gradients of ``x``,
        ``weight`` and ``bias``; ``accuracy`` (share of rows whose gold logit is the row's
        maximum) is detached. Both are 0 when no row counts (and the gradients then are 0).
    """
    if x.size(-1) != weight.size(-1):
        raise ValueError(f"x has {x.size(-1)} features, weight {tuple(weight.shape)} expects {weight.size(-1)}")
    x, target = x.reshape(-1, x.size(-1)), target.reshape(-1)
    if x.size(0) != target.size(0):
        raise ValueError(f"{x.size(0)} rows of x but {target.size(0)} targets")
    chunk = chunk_size or auto_chunk_size(weight.size(0))
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return _FusedLinearCrossEntropy.apply(x, weight, bias, target, ignore_index, chunk, torch.is_grad_enabled())
