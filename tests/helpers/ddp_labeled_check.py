"""Two epochs of ``MultiTaskModule`` on a ``LabeledDataModule`` mixture under CPU DDP.

Run as ``python ddp_labeled_check.py VOCAB DATA_DIR OUT WORLD``: Lightning starts the other
ranks by re-running this command (``start_method="popen"``). Each rank writes
``OUT/rank<r>.json``: per training step the epoch, the batch's task and in-batch flag, and
its query token ids.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import DDPStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ctem.losses import InfoNCELoss  # noqa: E402
from ctem.modules import MultiTaskModule  # noqa: E402
from ctem.data_modules import LabeledDataModule  # noqa: E402
from tests.helpers.tiny import tiny_encoder  # noqa: E402
from tests.helpers.trainer import cpu_trainer  # noqa: E402

BATCH_PER_RANK = 2


class BatchRecorder(L.Callback):
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ids = batch["query"]["input_ids"]
        mask = batch["query"]["attention_mask"].bool()
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "task": batch["task"],
                "in_batch_negatives": batch["in_batch_negatives"],
                "queries": [row[m].tolist() for row, m in zip(ids, mask)],
            }
        )

    def on_train_end(self, trainer, pl_module) -> None:
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"rank": trainer.global_rank, "steps": self.steps}))


def main(vocab: Path, data_dir: Path, out: Path, world: int) -> None:
    L.seed_everything(0)
    encoder = tiny_encoder(vocab)
    datamodule = LabeledDataModule(
        encoder.tokenizer,
        str(data_dir),
        batch_size=BATCH_PER_RANK,
        train_group_size=2,
        query_max_length=48,
        passage_max_length=16,
        seed=3,
        cache_dir=str(out / "cache"),
    )
    module = MultiTaskModule(
        encoder, InfoNCELoss(temperature=0.05), optimizer={"lr": 1e-3, "warmup_steps": 0}, negatives_cross_device=True
    )
    trainer = cpu_trainer(
        out,
        devices=world,
        strategy=DDPStrategy(process_group_backend="gloo", start_method="popen", timeout=timedelta(seconds=60)),
        max_epochs=2,
        callbacks=[BatchRecorder(out)],
    )
    trainer.fit(module, datamodule=datamodule)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
