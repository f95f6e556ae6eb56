"""MultiTaskModule: per-batch in-batch negatives switch and per-dataset loss logging."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from ctem.losses import BatchLayout, InfoNCELoss
from ctem.modules import MultiTaskModule
from ctem.data_modules import LabeledDataModule
from tests.helpers.labeled_data import write_mixture
from tests.helpers.tiny import tiny_encoder, write_vocab
from tests.helpers.trainer import cpu_trainer

TEMPERATURE = 0.05


class LossRecorder(L.Callback):
    """Before each step, both candidate losses of the batch; after it, the loss trained on."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with torch.no_grad():
            q = pl_module.encoder(**batch["query"])
            p = pl_module.encoder(**batch["passages"])
            g = batch["group_size"]
            self.steps.append(
                {
                    "task": batch["task"],
                    "in_batch": float(InfoNCELoss(TEMPERATURE)(q, p, BatchLayout(g)).loss),
                    "own_group": float(InfoNCELoss(TEMPERATURE)(q, p, BatchLayout(g, in_batch_negatives=False)).loss),
                }
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[-1]["trained"] = float(outputs["loss"])


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "grad_cache"])
def run(request, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("multitask")
    vocab = write_vocab(tmp)
    data = write_mixture(tmp / "data", {"cls": (12, "classification"), "qa": (16, "retrieval")}, negatives=2)
    torch.manual_seed(0)
    encoder = tiny_encoder(vocab, pooling="mean", initializer_range=0.2)
    datamodule = LabeledDataModule(
        encoder.tokenizer, str(data), batch_size=4, train_group_size=3, query_max_length=48, passage_max_length=16,
        cache_dir=str(tmp / "cache"),
    )
    module = MultiTaskModule(
        encoder,
        InfoNCELoss(TEMPERATURE),
        optimizer={"lr": 1e-3, "warmup_steps": 0},
        grad_cache={"enabled": request.param, "chunk_size": 3},
    )
    recorder = LossRecorder()
    trainer = cpu_trainer(tmp, logger=CSVLogger(tmp / "logs", name="", version=""), log_every_n_steps=2, callbacks=[recorder])
    trainer.fit(module, datamodule=datamodule)
    with open(tmp / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {"steps": recorder.steps, "rows": rows}


def test_in_batch_negatives_follow_the_dataset_flag(run):
    steps = run["steps"]
    assert [s["task"] for s in steps].count("cls") == 3 and [s["task"] for s in steps].count("qa") == 4
    for step in steps:
        # the two losses differ, so matching one of them tells which was trained on
        assert abs(step["in_batch"] - step["own_group"]) > 1e-3
        expected = step["own_group"] if step["task"] == "cls" else step["in_batch"]
        assert step["trained"] == pytest.approx(expected, rel=1e-4)


def test_loss_is_logged_per_dataset_as_window_means(run):
    steps, rows = run["steps"], run["rows"]
    logged = {}
    for row in rows:
        for task in ("cls", "qa"):
            value = row.get(f"train/loss/{task}")
            if value:
                logged[(int(row["step"]), task)] = float(value)
    expected = {}
    for start in range(0, len(steps), 2):  # log_every_n_steps=2 batches per window
        window = steps[start : start + 2]
        for task in {s["task"] for s in window}:
            losses = [s["trained"] for s in window if s["task"] == task]
            # full windows are written at their last batch's step, the rest at the epoch end
            step = start + 1 if len(window) == 2 else len(steps)
            expected[(step, task)] = sum(losses) / len(losses)
    assert logged.keys() == expected.keys()  # only tasks that had a batch in the window
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-5), key


def test_hard_negative_refresh_works_on_the_mixture(tmp_path, make_trainer):
    from ctem.callbacks import HardNegativeRefresh
    from ctem.mining import MiningConfig

    vocab = write_vocab(tmp_path)
    data = write_mixture(tmp_path / "data", {"cls": (8, "classification"), "qa": (8, "retrieval")}, negatives=1)
    torch.manual_seed(0)
    encoder = tiny_encoder(vocab)
    datamodule = LabeledDataModule(
        encoder.tokenizer, str(data), batch_size=4, train_group_size=2, query_max_length=48, passage_max_length=16,
        cache_dir=str(tmp_path / "cache"),
    )
    refresh = HardNegativeRefresh(every_n_steps=2, every_n_epochs=None, mining=MiningConfig(range=(0, 8), negative_number=2))
    trainer = make_trainer(max_steps=4, callbacks=[refresh])
    module = MultiTaskModule(encoder, InfoNCELoss(TEMPERATURE), optimizer={"lr": 1e-3, "warmup_steps": 0})
    before = [r["neg"] for r in datamodule.mining_rows()]
    trainer.fit(module, datamodule=datamodule)
    after = [r["neg"] for r in datamodule.mining_rows()]
    assert refresh.refreshes == 1 and trainer.global_step == 4
    assert len(after) == 16 and all(len(n) == 2 for n in after) and after != before
    # each dataset is mined in its own pool: no dataset gets another dataset's passages
    rows = datamodule.mining_rows()
    for group in ("cls", "qa"):
        own = {t for r, n in zip(rows, before) if r["group"] == group for t in r["pos"] + n}
        assert all(t in own for r, n in zip(rows, after) if r["group"] == group for t in n)
