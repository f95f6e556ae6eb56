"""``CMTEBEvalCallback`` inside Lightning training runs (single process and 2-process DDP)."""

from __future__ import annotations

import copy
import csv
import json
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_helpers import make_tiny_encoder, make_tiny_tasks  # noqa: E402

from ctem.callbacks import CMTEBEvalCallback  # noqa: E402
from ctem import TextEncoder  # noqa: E402
from ctem.evaluation import CMTEBEvaluator, EncoderAdapter, EvalConfig, averages, load_local_tasks  # noqa: E402
from ctem.evaluation.runner import truncated  # noqa: E402
from ctem.settings import SettingError  # noqa: E402


TEXTS = ["今天天气很好", "我喜欢吃苹果", "银行贷款利率", "足球比赛很精彩", "手机电脑", "电影音乐"] * 4


class Collate:
    def __init__(self, encoder: TextEncoder) -> None:
        self.tokenizer = encoder.tokenizer

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt"))


class TinyModule(L.LightningModule):
    """Pulls each batch's embeddings together: enough to change the weights."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        assert self.encoder.training
        emb = self.encoder(**batch)
        return -(emb @ emb.T).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TEXTS, batch_size=4, collate_fn=Collate(self.encoder))


class RecordingCallback(CMTEBEvalCallback):
    """Also writes, per rank, how many texts it encoded and what it measured."""

    def __init__(self, record_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record_dir = record_dir

    def evaluate(self, trainer, pl_module):
        metrics = super().evaluate(trainer, pl_module)
        record = {"texts_encoded": self._adapter.texts_encoded, "average": metrics["cmteb/average"], "training": pl_module.training}
        Path(self.record_dir, f"rank{trainer.global_rank}_step{trainer.global_step}.json").write_text(json.dumps(record))
        if trainer.is_global_zero:
            pl_module.encoder.save_pretrained(Path(self.record_dir) / f"model_step{trainer.global_step}")
        return metrics


def test_callback_metrics_reach_csv_logger(tmp_path: Path, make_trainer) -> None:
    tasks_dir = make_tiny_tasks(tmp_path / "tasks")
    callback = CMTEBEvalCallback(tasks_dir=str(tasks_dir), every_n_steps=3, on_epoch_end=True, save_best=True, best_dir=str(tmp_path / "best"))
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(logger=logger, callbacks=[callback])
    module = TinyModule(make_tiny_encoder())
    trainer.fit(module)
    assert module.encoder.training  # back in training mode after evaluating
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv", encoding="utf-8")))
    logged = [r for r in rows if r.get("cmteb/average")]
    assert [int(r["step"]) for r in logged] == [3, 6]  # step 3, then the epoch end (6 batches)
    for key in ("cmteb/TinySTS/cosine_spearman", "cmteb/TinyRetrieval/ndcg_at_10", "cmteb/STS", "cmteb/Retrieval"):
        assert logged[-1][key] != ""
    assert float(logged[-1]["cmteb/average"]) == pytest.approx(trainer.callback_metrics["cmteb/average"].item())
    assert (tmp_path / "best" / "best.ckpt").is_file() and (tmp_path / "best" / "model.safetensors").is_file()


@pytest.mark.slow
def test_ddp_two_ranks_each_encode_half(tmp_path: Path, make_trainer) -> None:
    tasks_dir = make_tiny_tasks(tmp_path / "tasks")
    record = tmp_path / "record"
    record.mkdir()
    callback = RecordingCallback(record_dir=str(record), tasks_dir=str(tasks_dir), on_epoch_end=True)
    # each rank trains on its half of the texts
    trainer = make_trainer(devices=2, strategy="ddp_spawn", use_distributed_sampler=True, callbacks=[callback])
    trainer.fit(TinyModule(make_tiny_encoder()))
    ranks = [json.loads((record / f"rank{r}_step3.json").read_text()) for r in (0, 1)]
    # single-process reference on the trained weights
    encoder = TextEncoder.from_pretrained(record / "model_step3")
    adapter = EncoderAdapter(encoder)
    results = CMTEBEvaluator(load_local_tasks(tasks_dir)).run(adapter)
    total = adapter.texts_encoded
    assert [r["texts_encoded"] for r in ranks] != [total, total]
    assert sum(r["texts_encoded"] for r in ranks) == total
    assert all(abs(r["texts_encoded"] - total / 2) <= 2 for r in ranks)  # half each (odd lists differ by 1)
    assert ranks[0]["average"] == pytest.approx(ranks[1]["average"], abs=1e-6)
    assert ranks[0]["average"] == pytest.approx(averages(results)["average"], abs=1e-4)
    assert all(r["training"] for r in ranks)


def test_truncate_dim_evaluates_the_embedding_prefix_as_ctem_eval_does(tmp_path: Path, make_trainer) -> None:
    tasks_dir = make_tiny_tasks(tmp_path / "tasks")
    encoder = make_tiny_encoder()
    before = copy.deepcopy(encoder)  # the weights evaluated at train start
    callback = CMTEBEvalCallback(tasks_dir=str(tasks_dir), eval=EvalConfig(truncate_dim=8), on_train_start=True, on_epoch_end=False)
    make_trainer(max_steps=1, callbacks=[callback]).fit(TinyModule(encoder))
    tasks = load_local_tasks(tasks_dir)
    prefix = averages(CMTEBEvaluator(tasks).run(truncated(EncoderAdapter(before), 8, before.normalize)))["average"]
    whole = averages(CMTEBEvaluator(tasks).run(EncoderAdapter(before)))["average"]
    assert callback.first_average == pytest.approx(prefix, abs=1e-6)
    assert abs(prefix - whole) > 1e-3, "the prefix scores differently from the whole embedding"


def test_a_truncate_dim_above_the_embedding_size_is_refused_before_the_first_step(tmp_path: Path, make_trainer) -> None:
    encoder = make_tiny_encoder()
    too_big = encoder.dim + 1
    callback = CMTEBEvalCallback(tasks_dir=str(make_tiny_tasks(tmp_path / "tasks")), eval=EvalConfig(truncate_dim=too_big))
    trainer = make_trainer(max_steps=1, callbacks=[callback])
    with pytest.raises(SettingError, match=rf"^callbacks.cmteb_eval.eval.truncate_dim={too_big}: exceeds the model's embedding size {encoder.dim}$"):
        trainer.fit(TinyModule(encoder))
    assert trainer.global_step == 0 and callback.last_results == []
