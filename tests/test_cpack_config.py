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
