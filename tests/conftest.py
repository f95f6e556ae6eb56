"""Shared fixtures: the real Hydra config composed in-process, a run folder per test, a
Lightning trainer per test, and a tiny vocabulary and saved model built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from ctem.config import config_dir, register_resolvers

if TYPE_CHECKING:
    import lightning as L


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


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., L.Trainer]:
    """``make_trainer(**overrides)``: the tests' CPU ``L.Trainer`` (``cpu_trainer``) rooted in
    this test's ``tmp_path``."""
    from tests.helpers.trainer import cpu_trainer

    def _make(**overrides) -> L.Trainer:
        return cpu_trainer(tmp_path, **overrides)

    return _make


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory) -> Path:
    """``write_vocab``'s vocab.txt, written once per session (do not modify)."""
    from tests.helpers.tiny import write_vocab

    return write_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny encoder (seed 0) saved with ``TextEncoder.save_pretrained``, once per session
    (do not modify)."""
    import torch

    from tests.helpers.tiny import tiny_encoder, write_vocab

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    return tiny_encoder(write_vocab(root)).save_pretrained(root / "model")
