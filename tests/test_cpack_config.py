"""The C-Pack chain's configs train what the recipe says (pooling, instructions)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("experiment", ["cpack/pretrain", "cpack/contrastive", "cpack/finetune"])
def test_cpack_chain_pools_cls(compose_train, experiment) -> None:
    cfg = compose_train(f"experiment={experiment}", "model.name_or_path=some/model")
    assert cfg.model.pooling == "cls"


@pytest.mark.parametrize("size", ["bert_small", "bert_base", "bert_large"])
def test_from_scratch_sizes_pool_cls_and_quickstart_mean(compose_train, size) -> None:
    assert compose_train(f"model={size}").model.pooling == "cls"
    assert compose_train().model.pooling == "mean"


@pytest.mark.parametrize(
    ("experiment", "lr", "warmup_ratio"),
    [("cpack/pretrain", 2e-4, 0.05), ("cpack/contrastive", 1e-4, 0.1), ("cpack/finetune", 5e-5, 0.1),
     ("cpack/cpu/pretrain", 1e-3, 0.1), ("cpack/cpu/contrastive", 1e-3, 0.1), ("cpack/cpu/finetune", 3e-4, 0.1)],
)
def test_experiments_override_the_stage_optimizer(compose_train, experiment, lr, warmup_ratio) -> None:
    """The experiments set `stage.optimizer.*` over the optimizer group; the rest stays AdamW's."""
    optimizer = compose_train(f"experiment={experiment}", "model.name_or_path=some/model").stage.optimizer
    assert (optimizer.lr, optimizer.warmup_ratio, optimizer.weight_decay, list(optimizer.betas)) == (lr, warmup_ratio, 0.01, [0.9, 0.999])
