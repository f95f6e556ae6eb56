"""RetroMAE end to end: losses fall on the real corpus; pre-training chains into the contrastive stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from itertools import islice

import lightning as L
import numpy as np
import pytest
import torch

from ctem import TextEncoder
from ctem.modules import RetroMAEModule
from ctem.tokenization import train_wordpiece_vocab
from ctem.data_modules import PretrainCorpusDataModule
from tests.helpers.tiny import write_vocab
from tests.retromae_helpers import CORPUS, ROOT, random_texts, tiny_encoder


@pytest.fixture
def one_thread():
    """One intra-op thread: on a loaded 2-core machine two spinning threads run ~40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LossRecorder(L.Callback):
    """Keeps the logged encoder / decoder losses of every step."""

    def __init__(self) -> None:
        self.encoder: list[float] = []
        self.decoder: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.encoder.append(float(trainer.callback_metrics["train/encoder_mlm_loss"]))
        self.decoder.append(float(trainer.callback_metrics["train/decoder_loss"]))


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not CORPUS.is_file(), reason=f"needs the shared pre-training corpus {CORPUS}")
def test_tiny_model_from_scratch_lowers_both_losses_on_the_corpus(tmp_path, one_thread, make_trainer) -> None:
    lines = [json.loads(line)["text"] for line in islice(open(CORPUS, encoding="utf-8"), 3000)]
    vocab = train_wordpiece_vocab(lines, tmp_path / "vocab", vocab_size=3000)
    L.seed_everything(0, workers=True)
    encoder = tiny_encoder(vocab, dropout=0.1)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines), encoding="utf-8")
    data = PretrainCorpusDataModule(encoder.tokenizer, train_files=[str(corpus)], max_seq_length=32, batch_size=16, cache_dir=str(tmp_path / "cache"))
    module = RetroMAEModule(encoder, optimizer={"lr": 2e-3, "warmup_steps": 20}, final_model_dir=str(tmp_path / "final_model"))
    recorder = LossRecorder()
    trainer = make_trainer(max_steps=200, callbacks=[recorder])
    trainer.fit(module, datamodule=data)
    for name, curve in (("encoder", recorder.encoder), ("decoder", recorder.decoder)):
        start, end = np.mean(curve[:10]), np.mean(curve[-20:])
        assert end < start - 1.0, f"{name} loss {start:.2f} -> {end:.2f}"
    assert (tmp_path / "final_model" / "retromae_decoder" / "retromae_decoder.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_pipeline_script_chains_pretraining_into_contrastive(tmp_path) -> None:
    vocab = write_vocab(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(random_texts(64, seed=1, max_len=30)) + "\n", encoding="utf-8")
    pairs = tmp_path / "pairs.jsonl"
    queries, passages = random_texts(32, seed=2), random_texts(32, seed=3)
    pairs.write_text("".join(json.dumps({"query": q, "pos": [p]}, ensure_ascii=False) + "\n" for q, p in zip(queries, passages)), encoding="utf-8")
    env = {
        **os.environ,
        "STAGES": "pretrain contrastive",
        "PRETRAIN_ARGS": f"model=tiny model.tokenizer={vocab} data.train_files=[{corpus}] data.max_seq_length=32 data.batch_size=8",
        "CONTRASTIVE_ARGS": f"data.train_files=[{pairs}] data.batch_size=8 stage.grad_cache.chunk_size=4",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }
    run_dir = tmp_path / "chain"
    command = ["bash", str(ROOT / "scripts" / "cpack_pipeline.sh"), str(run_dir), "trainer.max_steps=4", "callbacks=none", "logger=csv"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    pretrained, contrastive = run_dir / "pretrain" / "final_model", run_dir / "contrastive" / "final_model"
    assert (pretrained / "retromae_decoder" / "retromae_config.json").is_file()
    assert f"model.name_or_path={pretrained}" in (run_dir / "contrastive" / ".hydra" / "overrides.yaml").read_text()
    texts = random_texts(4, seed=5)
    before, after = TextEncoder.from_pretrained(pretrained).encode(texts), TextEncoder.from_pretrained(contrastive).encode(texts)
    assert before.shape == after.shape and not np.allclose(before, after), "the contrastive stage did not train"
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0 and rerun.stdout.count("already done") == 2
