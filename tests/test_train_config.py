"""Config presets and top-level keys compose as the docs show them."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from ctem.config import config_dir, register_resolvers


@pytest.mark.parametrize("preset", ["default", "fdr", "limit", "overfit"])
def test_debug_presets_compose_with_hydra_settings(preset) -> None:
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"debug={preset}"], return_hydra_config=True)
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu"
    assert list(cfg.hydra.verbose) == ["ctem"]


def test_ckpt_path_is_a_top_level_key(compose_train) -> None:
    assert compose_train().ckpt_path is None
    assert compose_train("ckpt_path=run/checkpoints/last.ckpt").ckpt_path == "run/checkpoints/last.ckpt"
