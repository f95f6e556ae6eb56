"""A checkpoint to resume from is checked before any training step: a truncated file, one of
another model size or of another stage is one line naming ``ckpt_path`` and what is wrong
(each used to be a traceback from deep inside Lightning or torch); nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctem.checkpoint_io import CheckpointError
from ctem.cli import error_message
from ctem.cli.train import run
from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import write_pairs
from tests.reliability.probes import tiny_run


@pytest.mark.slow
def test_a_checkpoint_this_run_cannot_continue_is_one_line(compose_train, tmp_path) -> None:
    vocab, data = write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 8)
    args = [a for a in tiny_run(vocab, data, tmp_path / "run", "trainer.max_steps=2") if not a.startswith("hydra.")]
    run(compose_train(*args))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    retromae = [*args, "stage=retromae", "data=corpus", f"data.train_files=[{data}]", "data.text_field=query"]
    retromae = [a for a in retromae if not a.startswith("data.train_group_size")]
    cases = {
        "truncated": ((*args, f"ckpt_path={truncated}"), f"ckpt_path={truncated}: not a readable checkpoint (truncated, or not a Lightning .ckpt"),
        "missing": ((*args, f"ckpt_path={tmp_path / 'none.ckpt'}"), f"ckpt_path={tmp_path / 'none.ckpt'}: no such checkpoint file"),
        "model size": ((*args, "model.config.hidden_size=32", "model.config.intermediate_size=64", f"ckpt_path={checkpoint}"),
                       f"ckpt_path={checkpoint}: saved by another model size: "),
        "stage": ((*retromae, f"ckpt_path={checkpoint}"), f"ckpt_path={checkpoint}: saved by another stage than this RetroMAEModule: "),
    }
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    for case, (overrides, line) in cases.items():
        with pytest.raises(CheckpointError) as raised:
            run(compose_train(*overrides))
        message = error_message("ctem-train", raised.value)
        assert message.startswith(f"ctem-train: error: {line}") and "\n" not in message, (case, message)
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before, "nothing written (no resumed_from.txt either)"


def test_a_sharded_checkpoint_folder_is_left_to_lightning(tmp_path) -> None:
    from torch import nn

    from ctem.checkpoint_io import check_resumable

    (tmp_path / "sharded.ckpt").mkdir()
    assert check_resumable(tmp_path / "sharded.ckpt", nn.Linear(2, 2)) is None
