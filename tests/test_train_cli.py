"""`train.py` end to end: help, config printing, runs, multirun, loggers, real data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.tiny import sentences, write_vocab

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTEM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def train(*overrides: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "", "WANDB_API_KEY": "", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("WANDB_MODE")
    env.pop("WANDB_API_KEY")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("toy")
    vocab = write_vocab(tmp)
    qs, ps = sentences(64, seed=7), sentences(64, seed=8, max_len=20)
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": q, "pos": [p]}, ensure_ascii=False) + "\n" for q, p in zip(qs, ps)), encoding="utf-8")
    return {"dir": tmp, "vocab": vocab, "data": data}


def tiny_overrides(toy: dict) -> list[str]:
    return ["model=tiny", f"model.tokenizer={toy['vocab']}", "data=pairs", f"data.train_files=[{toy['data']}]",
            "data.train_group_size=1", "callbacks=none"]


@pytest.mark.slow
def test_help_lists_groups_and_cfg_prints(toy) -> None:
    out = train("--help", cwd=toy["dir"]).stdout
    for group in ("callbacks", "data", "debug", "experiment", "logger", "model", "paths", "stage", "trainer"):
        assert f"{group}:" in out
    cfg = train("--cfg", "job", *tiny_overrides(toy), cwd=toy["dir"]).stdout
    assert "_target_: ctem.modules.BiEncoderModule" in cfg and "temperature: 0.02" in cfg


@pytest.mark.slow
def test_run_writes_final_model_and_csv(toy, tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = train(*tiny_overrides(toy), "data.batch_size=8", "trainer.max_steps=6", "trainer.log_every_n_steps=1",
                 "logger=csv", f"hydra.run.dir={run_dir}", cwd=toy["dir"])
    assert (run_dir / "final_model" / "model.safetensors").is_file()
    assert (run_dir / "final_model" / "modules.json").is_file()
    assert "final model:" in proc.stdout
    rows = list(csv.DictReader(open(next(run_dir.glob("csv/version_*/metrics.csv")))))
    names = set(rows[0])
    for metric in ("train/loss", "train/accuracy", "train/lr", "train/samples_per_s", "train/tokens_per_s"):
        assert metric in names


@pytest.mark.slow
def test_multirun_makes_separate_folders(toy, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    train("-m", *tiny_overrides(toy), "data.batch_size=8,16", "trainer.max_steps=5", "logger=none",
          f"hydra.sweep.dir={sweep}", cwd=toy["dir"])
    finals = sorted(p.parent.name for p in sweep.glob("*/final_model"))
    assert finals == ["0", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["wandb", "tensorboard"])
def test_loggers_work_offline(toy, tmp_path, logger) -> None:
    run_dir = tmp_path / logger
    train(*tiny_overrides(toy), "data.batch_size=8", "trainer.max_steps=2", f"logger={logger}",
          f"hydra.run.dir={run_dir}", cwd=toy["dir"])
    if logger == "wandb":
        assert list(run_dir.glob("wandb/offline-run-*")), "wandb must run offline inside the run folder"
    else:
        assert list(run_dir.glob("tensorboard/version_0/events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "train/labeled/atec.jsonl").is_file(), reason=f"shared data not found at {SHARED}")
def test_real_data_loss_goes_down(tmp_path) -> None:
    run_dir = tmp_path / "atec"
    train("model=tiny", f"model.tokenizer={SHARED}/vocab/bert-base-chinese/vocab.txt", "data=pairs",
          f"data.train_files=[{SHARED}/train/labeled/atec.jsonl]", "data.train_group_size=1", "trainer.max_steps=50",
          "trainer.log_every_n_steps=1", "stage.optimizer.lr=5e-4", "logger=csv", "callbacks=none",
          f"hydra.run.dir={run_dir}", cwd=tmp_path)
    rows = [r for r in csv.DictReader(open(next(run_dir.glob("csv/version_*/metrics.csv")))) if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert len(losses) == 50
    assert last < 0.8 * first, (first, last)


@pytest.mark.slow
def test_ddp_cpu_run_writes_one_folder(toy, tmp_path) -> None:
    """Two gloo processes, cross-device negatives: one Hydra run folder, one final model."""
    train(*tiny_overrides(toy), "trainer=ddp_cpu", "data.batch_size=4", "trainer.max_steps=3",
          "stage.negatives_cross_device=true", "logger=csv", cwd=tmp_path)
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "final_model" / "model.safetensors").is_file()


def test_fsdp_and_multinode_configs_build(toy) -> None:
    """FSDP needs GPUs in Lightning (its FSDPStrategy refuses accelerator=cpu): without CUDA
    ``trainer=fsdp`` is one line naming the way out; the config's arguments build Lightning's
    strategy."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ctem.config import config_dir, register_resolvers
    from ctem.distributed import FSDP_NEEDS_CUDA
    from ctem.errors import CtemInputError

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=fsdp", "paths.output_dir=/tmp/x"])
        if not torch.cuda.is_available():
            with pytest.raises(Exception) as raised:  # Hydra wraps it; ctem-train prints the cause's line
                instantiate(cfg.trainer.strategy)
            assert isinstance(raised.value.__cause__ or raised.value, CtemInputError), raised.value
            assert "\n" not in FSDP_NEEDS_CUDA and "trainer=ddp_cpu" in FSDP_NEEDS_CUDA
        strategy = instantiate(cfg.trainer.strategy, _target_="lightning.pytorch.strategies.FSDPStrategy")
        assert type(strategy).__name__ == "FSDPStrategy"
        policy = cfg.trainer.strategy.auto_wrap_policy
        wrap = instantiate(policy)
        from transformers.models.bert.modeling_bert import BertLayer, BertConfig

        assert wrap(BertLayer(BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=8)), False, 0)
        multi = compose("train", overrides=["trainer=ddp_multinode", "paths.output_dir=/tmp/x"])
        assert multi.trainer.num_nodes == 2 and multi.trainer.strategy._target_.endswith("DDPStrategy")


@pytest.mark.slow
def test_quickstart_defaults_export_a_model_both_libraries_load(tmp_path) -> None:
    """`python train.py` as shipped (here cut to a few steps): its final_model gives the
    same embeddings in sentence-transformers, transformers and ctem."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from ctem import TextEncoder

    run_dir = tmp_path / "quickstart"
    proc = train("trainer.max_steps=4", "logger=csv", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert "C-MTEB average on 2 dev task(s)" in proc.stdout
    final = run_dir / "final_model"
    texts = ["花呗怎么还款", "为这个句子生成表示以用于检索相关文章：怎样给花呗还钱", "iPhone 15 电池"]
    ours = TextEncoder.from_pretrained(final).encode(texts)
    st = SentenceTransformer(str(final), device="cpu").encode(texts)
    tok, hf = AutoTokenizer.from_pretrained(final), AutoModel.from_pretrained(final).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)  # the quickstart model's pooling
    assert json.loads((final / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    np.testing.assert_allclose(st, ours, atol=1e-5)
    np.testing.assert_allclose(torch.nn.functional.normalize(mean, dim=-1).numpy(), ours, atol=1e-5)


@pytest.mark.slow
def test_input_errors_are_one_clear_line(toy, tmp_path) -> None:
    """A missing file or a bad row stops the run with the location, not a stack trace."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "", "pos": ["p"]}\n', encoding="utf-8")
    for data, message in [
        (tmp_path / "missing.jsonl", "ctem-train: error: training data not found"),
        (bad, f"ctem-train: error: {bad}:2: field 'query': empty"),
    ]:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *tiny_overrides(toy)[:2], "data=pairs",
             f"data.train_files=[{data}]", "data.train_group_size=1", "logger=none", "callbacks=none",
             f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 1
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
