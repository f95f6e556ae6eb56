"""Lightning checkpoints are written atomically by every trainer config: a full disk leaves
the previous checkpoint (or none), never a truncated ``.ckpt``, and the command says so in
one line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from ctem.cli import input_errors_as_messages
from tests.reliability.conftest import file_size_limit

TRAINERS = ["cpu", "gpu", "ddp", "ddp_cpu", "fsdp", "ddp_multinode"]


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_config_writes_checkpoints_atomically(compose_train, trainer) -> None:
    cfg = compose_train(f"trainer={trainer}")
    assert [p["_target_"] for p in cfg.trainer.plugins] == ["ctem.checkpoint_io.AtomicCheckpointIO"]
    if trainer in ("cpu", "ddp_cpu"):
        from ctem.checkpoint_io import AtomicCheckpointIO

        built = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_full_disk_leaves_the_previous_checkpoint_and_no_temporary(tmp_path) -> None:
    from ctem.checkpoint_io import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    before = target.read_bytes()
    with file_size_limit(100_000), pytest.raises(OSError) as raised:
        AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.zeros(100_000)}, target)
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(target)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(target, weights_only=True) == {"step": 1}


def test_training_on_a_full_disk_stops_with_one_line_and_no_checkpoint(tmp_path, compose_train) -> None:
    from ctem.cli.train import run

    cfg = compose_train("trainer.max_steps=1", "logger=none", "callbacks=model_checkpoint", "trainer.enable_progress_bar=false")
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    with file_size_limit(1_000_000), pytest.raises(SystemExit) as done, input_errors_as_messages("ctem-train"):
        run(cfg)
    assert str(done.value.code) == f"ctem-train: error: {checkpoints / 'last.ckpt'}: File too large"
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []
    assert not (Path(cfg.paths.output_dir) / "final_model").exists()
