"""The gradient cache gives the loss and gradients of plain back-propagation, dropout on, and
composes with Lightning's clipping, accumulation and schedule like a plain step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ctem.grad_cache import blockwise_loss, embed_chunks, loss_with_replay, split_tokens, unsort
from ctem.losses import BatchLayout, InfoNCELoss
from ctem.modules import BiEncoderModule
from tests.helpers.tiny import sentences, tiny_encoder, write_vocab


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: w.grad.clone() for n, w in module.named_parameters() if w.grad is not None}


@pytest.mark.parametrize("ddp_sync", [False, True], ids=["backward", "autograd_grad"])
def test_cached_equals_uncached_with_dropout(tmp_path, ddp_sync: bool) -> None:
    torch.manual_seed(0)
    enc = tiny_encoder(write_vocab(tmp_path), dropout=0.1, pooling="mean", initializer_range=0.2)
    enc.train()
    q_tok = enc.tokenize(sentences(12, seed=5), 16)
    p_tok = enc.tokenize(sentences(24, seed=6, max_len=20), 24)
    loss_fn = InfoNCELoss(0.05)
    (q_chunks, q_order), (p_chunks, p_order) = split_tokens(q_tok, 5), split_tokens(p_tok, 5)

    # Reference: the same chunks encoded with a graph in the same order, one backward of
    # the loss scaled by 0.5 (as accumulation over two batches would).
    torch.manual_seed(123)
    q = unsort(torch.cat([enc(**c) for c in q_chunks]), q_order)
    p = unsort(torch.cat([enc(**c) for c in p_chunks]), p_order)
    ref_loss = loss_fn(q, p, BatchLayout(2)).loss
    (ref_loss * 0.5).backward()
    ref_grads = _grads(enc)
    enc.zero_grad(set_to_none=True)

    torch.manual_seed(123)
    queries, passages = embed_chunks(enc, q_tok, 5), embed_chunks(enc, p_tok, 5)
    cached = blockwise_loss(loss_fn, queries.embeddings, passages.embeddings, BatchLayout(2), 5)
    loss, q_grad, p_grad = cached.loss, cached.query_grad, cached.passage_grad
    parameters = [w for w in enc.parameters() if w.requires_grad]
    out = loss_with_replay(loss, enc, [(queries, q_grad), (passages, p_grad)], parameters, ddp_sync)
    assert out.is_leaf and all(w.grad is None for w in parameters)  # no gradient before backward
    (out * 0.5).backward()

    assert abs(out.item() - ref_loss.item()) < 1e-6
    assert len(queries.states) == 3 and len(passages.states) == 5
    flat_ref = torch.cat([g.flatten() for g in ref_grads.values()])
    flat = torch.cat([dict(enc.named_parameters())[n].grad.flatten() for n in ref_grads])
    assert float((flat - flat_ref).norm() / flat_ref.norm()) < 1e-5


def test_replay_runs_under_the_autocast_of_the_first_pass(tmp_path) -> None:
    """Lightning runs backward outside the autocast of training_step: the replay must
    re-enter it, or the replayed chunks would run in float32 and give a float32 step's
    gradient instead of the bf16 step's."""
    torch.manual_seed(0)
    enc = tiny_encoder(write_vocab(tmp_path), pooling="mean", initializer_range=0.2)
    q_tok, p_tok = enc.tokenize(sentences(6, seed=5), 16), enc.tokenize(sentences(6, seed=6), 16)
    loss_fn = InfoNCELoss(0.05)
    flat = lambda: torch.cat([w.grad.flatten() for w in enc.parameters() if w.grad is not None])  # noqa: E731
    ref = {}
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            ref_loss = loss_fn(enc(**q_tok), enc(**p_tok), BatchLayout(1)).loss
        ref_loss.backward()
        ref[bf16] = flat()
        enc.zero_grad(set_to_none=True)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        queries, passages = embed_chunks(enc, q_tok, 3), embed_chunks(enc, p_tok, 3)
        cached = blockwise_loss(loss_fn, queries.embeddings, passages.embeddings, BatchLayout(1), 6)
        loss, q_grad, p_grad = cached.loss, cached.query_grad, cached.passage_grad
        parameters = [w for w in enc.parameters() if w.requires_grad]
        out = loss_with_replay(loss, enc, [(queries, q_grad), (passages, p_grad)], parameters, False)
    out.backward()  # outside autocast, as in Lightning
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    # bf16 rounding differs between the two backward paths a little; float32 differs a lot
    assert rel(flat(), ref[True]) < 0.2 * rel(ref[False], ref[True])


@pytest.mark.parametrize("in_batch", [True, False])
def test_blockwise_loss_equals_full_matrix(in_batch: bool) -> None:
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1).requires_grad_(True)
    p = torch.nn.functional.normalize(torch.randn(30 * 3, 8), dim=-1).requires_grad_(True)
    loss_fn = InfoNCELoss(0.05)
    layout = BatchLayout(3, query_offset=7, in_batch_negatives=in_batch)
    full = loss_fn(q, p, layout)
    full.loss.backward()
    cached = blockwise_loss(loss_fn, q.detach(), p.detach(), layout, block_size=4)
    assert cached.loss.item() == pytest.approx(full.loss.item(), rel=1e-6)
    assert cached.accuracy.item() == pytest.approx((full.scores.argmax(1) == full.targets).float().mean().item())
    torch.testing.assert_close(cached.query_grad, q.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cached.passage_grad, p.grad, rtol=1e-5, atol=1e-7)


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


# ---------------------------------------------------------------- composition with Lightning
def _batches(encoder, n: int, group_size: int = 2) -> list[dict]:
    return [
        {
            "query": encoder.tokenize(sentences(6, seed=10 + i), 16),
            "passages": encoder.tokenize(sentences(6 * group_size, seed=20 + i, max_len=20), 24),
            "group_size": group_size,
        }
        for i in range(n)
    ]


def _train(make_trainer, vocab, cache: bool, batches: int, **trainer_args) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Weights before and after fitting on ``batches`` fixed batches (no dropout: plain and
    cached steps then see the same network), and the trainer."""
    torch.manual_seed(0)
    encoder = tiny_encoder(vocab, pooling="mean", initializer_range=0.2)
    module = BiEncoderModule(
        encoder,
        InfoNCELoss(temperature=0.05),
        # Warm-up over 2 of the 3 optimizer steps: the learning rate changes every step. A
        # large eps makes AdamW's update about linear in the gradient, so rounding noise on
        # gradients that are zero in exact arithmetic (attention key biases) stays noise.
        optimizer={"lr": 1.0, "eps": 1.0, "warmup_steps": 2},
        grad_cache={"enabled": cache, "chunk_size": 4},
        final_model_dir=None,
    )
    trainer = make_trainer(**trainer_args)
    start = {n: w.detach().clone() for n, w in module.named_parameters()}
    trainer.fit(module, train_dataloaders=DataLoader(_batches(encoder, batches), batch_size=None))
    return start, {n: w.detach().clone() for n, w in module.named_parameters()}, trainer


@pytest.mark.parametrize(
    "trainer_args",
    [
        {"gradient_clip_val": 0.05},
        {"accumulate_grad_batches": 2},
        {"accumulate_grad_batches": 2, "gradient_clip_val": 0.05, "gradient_clip_algorithm": "value"},
    ],
    ids=["clip_norm", "accumulate_2", "accumulate_2_clip_value"],
)
@pytest.mark.slow
def test_trainer_clipping_accumulation_and_schedule_apply_to_cached_steps(make_trainer, tiny_vocab, trainer_args) -> None:
    batches = 3 * trainer_args.get("accumulate_grad_batches", 1)
    start, plain, plain_trainer = _train(make_trainer, tiny_vocab, False, batches, **trainer_args)
    _, cached, cached_trainer = _train(make_trainer, tiny_vocab, True, batches, **trainer_args)
    assert plain_trainer.global_step == cached_trainer.global_step == 3
    assert any((plain[n] - start[n]).abs().max() > 1e-3 for n in plain)  # the steps did move the weights
    for name, weight in plain.items():
        torch.testing.assert_close(cached[name], weight, rtol=0, atol=1e-6, msg=name)


def test_clipping_changes_the_cached_step(make_trainer, tiny_vocab) -> None:
    """Clipping is not a no-op in the comparison above: the clipped run ends elsewhere."""
    _, clipped, _ = _train(make_trainer, tiny_vocab, True, 3, gradient_clip_val=0.05)
    _, free, _ = _train(make_trainer, tiny_vocab, True, 3)
    assert max(float((clipped[n] - free[n]).abs().max()) for n in free) > 1e-4


def test_grad_cache_is_refused_under_fsdp(tmp_path) -> None:
    module = BiEncoderModule(tiny_encoder(write_vocab(tmp_path)), InfoNCELoss(), grad_cache={"enabled": True})
    # Lightning's FSDP needs GPUs: a stand-in trainer carries the strategy to `setup`.
    module.trainer = SimpleNamespace(strategy=FSDPStrategy(), datamodule=None)
    with pytest.raises(ValueError, match="does not work with FSDP"):
        module.setup("fit")


def test_grad_cache_is_refused_with_ddp_unused_parameter_search(tmp_path) -> None:
    module = BiEncoderModule(tiny_encoder(write_vocab(tmp_path)), InfoNCELoss(), grad_cache={"enabled": True})
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(module, find_unused_parameters=True)
        module.trainer = SimpleNamespace(strategy=SimpleNamespace(model=ddp))
        with pytest.raises(ValueError, match="find_unused_parameters=false"):
            module.on_fit_start()
    finally:
        dist.destroy_process_group()
