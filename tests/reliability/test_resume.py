"""A run killed and resumed from its checkpoint (``ckpt_path=``) trains on the same batches
with the same randomness (dropout on) as an uninterrupted run: equal weights, whether the
checkpoint was taken mid-epoch, on an epoch's last batch or at an epoch's end."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ctem.api import train
from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import write_pairs
from tests.reliability.probes import tiny_run

STEPS = 12  # 20 rows in batches of 4: 5 batches per epoch, so 2.4 epochs


class SignalAt(L.Callback):
    """Sends this process SIGTERM at the end of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """A run of ``STEPS`` steps keeping a checkpoint of every step (``checkpoints/``) and of
    every epoch end (``epoch_ends/``); its final weights."""
    root = tmp_path_factory.mktemp("resume")
    vocab, data = write_vocab(root), write_pairs(root / "pairs.jsonl", 20)
    epoch_ends = ModelCheckpoint(dirpath=root / "epoch_ends", every_n_epochs=1, save_top_k=-1)
    every_step = ["callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.save_top_k=-1"]
    out = train(run(vocab, data, root / "full", *every_step), extra_callbacks=[epoch_ends])
    return {"root": root, "vocab": vocab, "data": data, "weights": weights(out), "full": root / "full"}


def run(vocab: Path, data: Path, run_dir: Path, *more: str) -> list[str]:
    return tiny_run(vocab, data, run_dir, f"trainer.max_steps={STEPS}", "stage.optimizer.lr=1e-3", *more)


def weights(out: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in out["module"].encoder.state_dict().items()}


def assert_equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run's by up to {worst:.3g}"


@pytest.mark.parametrize(
    ("folder", "step"),
    [("checkpoints", 3), ("checkpoints", 7), ("checkpoints", 5), ("epoch_ends", 5)],
    ids=["mid_epoch0", "mid_epoch1", "last_batch_of_epoch0", "end_of_epoch0"],
)
@pytest.mark.slow
def test_resuming_a_checkpoint_reproduces_the_uninterrupted_run(uninterrupted, folder, step) -> None:
    u = uninterrupted
    (checkpoint,) = (u["root"] / folder if folder == "epoch_ends" else u["full"] / folder).glob(f"*-step={step}.ckpt")
    resumed = train(run(u["vocab"], u["data"], u["root"] / f"resumed_{folder}_{step}", f"ckpt_path='{checkpoint}'"))
    assert resumed["trainer"].global_step == STEPS
    assert_equal_weights(weights(resumed), u["weights"])


@pytest.mark.slow
@pytest.mark.parametrize("step", [4, 5], ids=["mid_epoch", "last_batch_of_epoch"])
def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_weights(uninterrupted, step) -> None:
    u = uninterrupted
    with pytest.raises(SystemExit, match="by SIGTERM; resumable checkpoint") as stop:
        train(run(u["vocab"], u["data"], u["root"] / f"killed_{step}"), extra_callbacks=[SignalAt(step)])
    checkpoint = str(stop.value).rsplit("ckpt_path=", 1)[1]
    resumed = train(run(u["vocab"], u["data"], u["root"] / f"continued_{step}", f"ckpt_path={checkpoint}"))
    assert_equal_weights(weights(resumed), u["weights"])


def other_data(kind: str, root: Path) -> list[str]:
    """Overrides of the multi-task stage on two labeled files, or of RetroMAE on a corpus
    (its masks are drawn from the random state of the process that collates: the main one,
    or with ``corpus_workers`` two loader workers)."""
    if kind.startswith("corpus"):
        workers = ["data.loader.num_workers=2"] if kind == "corpus_workers" else []
        return ["stage=retromae", "data=corpus", f"data.train_files=[{write_pairs(root / 'corpus.jsonl', 20)}]",
                "data.text_field=query", "data.max_seq_length=24", "data.batch_size=4", *workers]
    files = [write_pairs(root / f"{name}.jsonl", 12, seed=i) for i, name in enumerate(("sts", "nli"))]
    datasets = ",".join(f"{f.stem}:{{files:'{f}',type:{f.stem}}}" for f in files)
    return ["stage=multitask", "data=labeled", f"data.datasets={{{datasets}}}", "data.train_group_size=1", "data.batch_size=4"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["labeled", "corpus", "corpus_workers"])
@pytest.mark.parametrize("step", [2, 5, 7])
def test_every_data_module_resumes_exactly(tmp_path, kind, step) -> None:
    vocab = write_vocab(tmp_path)
    base = [a for a in run(vocab, tmp_path / "unused.jsonl", tmp_path / "x") if not a.startswith(("data", "hydra.run.dir"))]
    overrides = [*base, *other_data(kind, tmp_path)]
    every_step = ["callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.save_top_k=-1"]
    full = weights(train([*overrides, *every_step, f"hydra.run.dir={tmp_path / 'full'}"]))
    (checkpoint,) = (tmp_path / "full" / "checkpoints").glob(f"*-step={step}.ckpt")
    resumed = train([*overrides, f"ckpt_path='{checkpoint}'", f"hydra.run.dir={tmp_path / 'resumed'}"])
    assert_equal_weights(weights(resumed), full)
