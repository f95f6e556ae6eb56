"""Shared fixtures: the real Hydra config composed in-process, a run folder per test."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from ctem.config import config_dir, register_resolvers


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_train(*overrides)``: ``conf/train.yaml`` as ``python train.py`` would compose
    it, with every output (run folder, data cache) inside this test's ``tmp_path``."""
    register_resolvers()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=False)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.data_cache_dir = str(tmp_path / "cache")
        return cfg

    return _compose
