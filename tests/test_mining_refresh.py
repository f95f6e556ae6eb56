"""HardNegativeRefresh in a real Lightning fit, its state, its Hydra config, and the DDP
encode/gather path."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ctem.callbacks import HardNegativeRefresh
from ctem.callbacks.hard_negative_refresh import changed_fraction
from ctem import InfoNCELoss, TextEncoder
from ctem.errors import CtemInputError
from ctem.losses import DistillationLoss
from ctem.distributed import RankShards
from ctem.evaluation import EncoderAdapter
from ctem.mining import HardNegativeMiner, MiningConfig, candidate_pool
from ctem.modules import BiEncoderModule
from ctem.data_modules import PairDataModule
from tests.helpers.tiny import TEST_CHARS, tiny_encoder, write_vocab
from tests.helpers.trainer import cpu_trainer


def _encoder(vocab: Path) -> TextEncoder:
    torch.manual_seed(0)
    return tiny_encoder(vocab, query_max_length=16, passage_max_length=24)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(TEST_CHARS) for _ in range(rng.randint(4, 12)))


def _train_file(directory: Path, n: int = 40) -> Path:
    """Rows with a random positive and one placeholder negative each."""
    rng = random.Random(0)
    rows = [{"query": _text(rng), "pos": [_text(rng)], "neg": [f"占位{i}"]} for i in range(n)]
    path = directory / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


class NegativesRecorder(L.Callback):
    """The negatives in the datamodule before every training batch."""

    def __init__(self) -> None:
        self.seen: list[list[list[str]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append([r["neg"] for r in trainer.datamodule.mining_rows()])


def _fit(tmp_path: Path, refresh: HardNegativeRefresh, max_steps: int = 8):
    encoder = _encoder(write_vocab(tmp_path))
    data = PairDataModule(
        encoder.tokenizer,
        train_files=str(_train_file(tmp_path)),
        batch_size=4,
        train_group_size=2,
        query_max_length=16,
        passage_max_length=24,
        cache_dir=str(tmp_path / "hf"),
    )
    module = BiEncoderModule(encoder, InfoNCELoss(temperature=0.05), optimizer={"lr": 1e-3, "warmup_ratio": 0.0})
    recorder = NegativesRecorder()
    trainer = cpu_trainer(tmp_path, max_steps=max_steps, callbacks=[refresh, recorder])
    trainer.fit(module, datamodule=data)
    return trainer, data, recorder


@pytest.mark.slow
def test_refresh_changes_negatives_mid_run_and_training_continues(tmp_path: Path):
    refresh = HardNegativeRefresh(every_n_steps=3, every_n_epochs=None, mining=MiningConfig(range=(0, 12), negative_number=3, batch_size=16))
    trainer, data, recorder = _fit(tmp_path, refresh)
    assert trainer.global_step == 8, "training ran to the end"
    assert [h["step"] for h in refresh.history] == [3, 6]
    placeholders = [[f"占位{i}"] for i in range(40)]
    assert recorder.seen[0] == placeholders
    assert recorder.seen[2] == placeholders, "before the first refresh the file's negatives are used"
    assert recorder.seen[3] != placeholders, "negatives swapped in after step 3"
    assert recorder.seen[-1] != placeholders
    rows = data.mining_rows()
    pool = set(candidate_pool(rows)) | {f"占位{i}" for i in range(40)}
    for row in rows:
        assert 1 <= len(row["neg"]) <= 3
        assert not set(row["neg"]) & set(row["pos"]) and row["query"] not in row["neg"]
        assert set(row["neg"]) <= pool
    # the dataset the dataloader reads now serves mined negatives
    sample = data.train_dataset[(0, 5)]
    assert sample["passages"][1] in rows[0]["neg"]
    assert refresh.history[0]["changed_fraction"] == 1.0
    metrics = trainer.callback_metrics
    assert float(metrics["negatives/changed_fraction"]) == pytest.approx(refresh.history[-1]["changed_fraction"])
    assert float(metrics["negatives/mining_seconds"]) > 0


@pytest.mark.slow
def test_epoch_refresh_skips_the_last_epoch_and_state_round_trips(tmp_path: Path, make_trainer):
    refresh = HardNegativeRefresh(every_n_steps=None, every_n_epochs=1, mining=MiningConfig(range=(0, 10), negative_number=2, batch_size=16))
    encoder = _encoder(write_vocab(tmp_path))
    data = PairDataModule(encoder.tokenizer, train_files=str(_train_file(tmp_path)), batch_size=8, train_group_size=2, cache_dir=str(tmp_path / "hf"))
    module = BiEncoderModule(encoder, InfoNCELoss(temperature=0.05), optimizer={"lr": 1e-3, "warmup_ratio": 0.0})
    trainer = make_trainer(max_epochs=2, callbacks=[refresh])
    trainer.fit(module, datamodule=data)
    assert [h["step"] for h in refresh.history] == [5], "after epoch 1 only (40 rows / 8 = 5 steps)"
    state = refresh.state_dict()
    restored = HardNegativeRefresh(every_n_epochs=1)
    restored.load_state_dict(state)
    assert restored.refreshes == 1 and restored.last_refresh_step == 5
    assert restored._resume_pending, "a resumed run re-mines at train start"


def test_refresh_rejects_a_datamodule_without_mining_hooks(tmp_path: Path, make_trainer):
    encoder = _encoder(write_vocab(tmp_path))
    module = BiEncoderModule(encoder, InfoNCELoss())

    class Plain(L.LightningDataModule):
        def train_dataloader(self):
            return []

    trainer = make_trainer(max_steps=1, callbacks=[HardNegativeRefresh()])
    with pytest.raises(TypeError, match="mining_rows"):
        trainer.fit(module, datamodule=Plain())


@pytest.mark.parametrize("matryoshka", [None, {"dims": [16]}], ids=["distill", "matryoshka_distill"])
def test_a_loss_that_needs_teacher_scores_is_refused_before_the_first_step(tmp_path: Path, make_trainer, matryoshka):
    """Refreshed negatives have no teacher scores, so distillation could not train on them."""
    encoder = _encoder(write_vocab(tmp_path))
    rows = [{"query": f"问{i}", "pos": [f"答{i}"], "neg": [f"错{i}"], "pos_scores": [0.9], "neg_scores": [0.1]} for i in range(8)]
    train = tmp_path / "scored.jsonl"
    train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    data = PairDataModule(encoder.tokenizer, train_files=str(train), batch_size=4, cache_dir=str(tmp_path / "hf"))
    module = BiEncoderModule(encoder, DistillationLoss(), matryoshka=matryoshka)
    trainer = make_trainer(max_steps=4, callbacks=[HardNegativeRefresh(every_n_steps=1, every_n_epochs=None)])
    with pytest.raises(CtemInputError) as raised:
        trainer.fit(module, datamodule=data)
    name = module.criterion.facts().name
    assert str(raised.value) == (
        f"callbacks.hard_negative_refresh: the loss ({name}) trains towards the rows' teacher scores (pos_scores / neg_scores), "
        "which refreshed negatives would not have: refresh offline instead (ctem-mine, then ctem-score on its output, "
        "then train on that) or leave the callback out"
    )
    assert trainer.global_step == 0


def test_the_config_gives_the_mining_settings_and_refuses_bad_ones():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ctem.config import config_dir, register_resolvers
    from ctem.settings import SettingError

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "callbacks=hard_negative_refresh", "callbacks.hard_negative_refresh.mining.nprobe=64",
            "callbacks.hard_negative_refresh.mining.range=[1,50]",
        ])
        mine = compose(config_name="mine", overrides=["model_path=m", "input=i", "output=o"])
    refresh = instantiate(cfg.callbacks.hard_negative_refresh)
    assert refresh.mining == MiningConfig(range=(1, 50), nprobe=64, batch_size=64, show_progress=False)
    ours, theirs = (OmegaConf.to_container(c.mining) for c in (cfg.callbacks.hard_negative_refresh, mine))
    assert ours == {**theirs, "range": [1, 50], "nprobe": 64, "batch_size": 64, "show_progress": False}, "ctem-mine's settings"
    cfg.callbacks.hard_negative_refresh.mining.index = "hnsw"
    with pytest.raises(Exception) as raised:
        instantiate(cfg.callbacks.hard_negative_refresh)
    assert isinstance(raised.value.__cause__, SettingError)
    assert str(raised.value.__cause__) == "mining.index=hnsw: must be flat or ivf"


def test_changed_fraction():
    assert changed_fraction([["a", "b"], ["c"]], [["a", "x"], ["c"]]) == pytest.approx(1 / 3)
    assert changed_fraction([[]], [[]]) == 0.0


# ----------------------------------------------------------------------------- DDP (gloo, 2 ranks)
def _ddp_worker(rank: int, world: int, port: int, vocab: str, rows: list[dict], out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        encoder = _encoder(Path(vocab))
        encode = EncoderAdapter(encoder, 8, cache_tokenization=False, rank=rank, world_size=world)
        config = MiningConfig(range=(1, 15), negative_number=4, seed=5, show_progress=False)
        shards = RankShards.split(len(rows), rank, world)
        negatives = shards.gather_objects(HardNegativeMiner(encode, config).mine(rows, indices=shards.mine).negatives)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(negatives, ensure_ascii=False), encoding="utf-8")
        np.save(Path(out_dir, f"rank{rank}_passages.npy"), encode(candidate_pool(rows)))
        np.save(Path(out_dir, f"rank{rank}_queries.npy"), encode([r["query"] for r in rows], is_query=True))
        np.save(Path(out_dir, f"rank{rank}_encoded.npy"), [encode.texts_encoded])
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ddp_ranks_split_encoding_and_agree_with_one_process(tmp_path: Path):
    vocab = write_vocab(tmp_path)
    rng = random.Random(1)
    rows = [{"query": _text(rng), "pos": [_text(rng)], "neg": [_text(rng)]} for _ in range(21)]
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(vocab), rows, str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "rank0.json").read_text("utf-8"))
    rank1 = json.loads((tmp_path / "rank1.json").read_text("utf-8"))
    assert rank0 == rank1, "every rank sets identical negatives"
    # the gathered embeddings are one process's embeddings (up to batch-padding round-off) ...
    encoder = _encoder(vocab)
    pool = candidate_pool(rows)
    gathered = {True: np.load(tmp_path / "rank0_queries.npy"), False: np.load(tmp_path / "rank0_passages.npy")}
    np.testing.assert_allclose(gathered[True], encoder.encode([r["query"] for r in rows], is_query=True), atol=1e-4)
    np.testing.assert_allclose(gathered[False], encoder.encode(pool), atol=1e-4)
    np.testing.assert_array_equal(gathered[False], np.load(tmp_path / "rank1_passages.npy"))
    encoded = [int(np.load(tmp_path / f"rank{r}_encoded.npy")[0]) for r in (0, 1)]
    assert sum(encoded) == 2 * (len(rows) + len(pool)) and abs(encoded[0] - encoded[1]) <= 4, "each rank encodes half"
    # ... and per-rank search + gather equals searching all rows in one process
    config = MiningConfig(range=(1, 15), negative_number=4, seed=5, show_progress=False)
    single = HardNegativeMiner(lambda texts, instruction=None, is_query=False: gathered[is_query], config).mine(rows).negatives
    assert rank0 == single
