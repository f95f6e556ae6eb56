"""LoRA (``model.lora.*``): only the adapters train, the exported folder holds merged weights
that transformers, sentence-transformers and ctem load unchanged, and a run resumed from a
mid-epoch checkpoint reproduces the uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ctem.api import train
from ctem.encoder import TextEncoder
from tests.helpers.tiny import sentences, tiny_encoder, write_vocab

pytest.importorskip("peft")

STEPS = 6  # 12 rows in batches of 4: 3 batches per epoch


def write_pairs(path: Path, n: int) -> Path:
    texts = sentences(2 * n, seed=3, min_len=6, max_len=16)
    rows = [{"query": texts[2 * i], "pos": [texts[2 * i + 1]]} for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def lora_run(vocab: Path, data: Path, run_dir: Path, *more: str) -> list[str]:
    return [
        "model=tiny", f"model.tokenizer={vocab}", "model.lora.enabled=true", "model.lora.r=4",
        "model.lora.target_modules=[query,value,dense]", "data=pairs", f"data.train_files=[{data}]",
        "data.train_group_size=1", "data.batch_size=4", "logger=none", "callbacks=default", "~callbacks.progress_bar",
        "trainer.enable_progress_bar=false", "stage.optimizer.lr=1e-2", "stage.optimizer.warmup_steps=0",
        f"trainer.max_steps={STEPS}", f"paths.data_cache_dir={run_dir.parent / 'cache'}", f"hydra.run.dir={run_dir}", *more,
    ]


def test_only_adapters_train_and_saving_merges_them(tmp_path) -> None:
    torch.manual_seed(0)
    encoder = tiny_encoder(write_vocab(tmp_path), lora={"enabled": True, "r": 4})
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # a non-zero update (B starts at zero)
        for name, parameter in encoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    tokens = encoder.tokenize(["你好世界", "一个句子"], 16)
    encoder.eval()
    with torch.no_grad():
        expected = encoder(**tokens)
    folder = encoder.save_pretrained(tmp_path / "merged")
    saved = json.loads((folder / "config.json").read_text())
    assert "lora" not in json.dumps(saved).lower() and not (folder / "adapter_config.json").exists()
    loaded = TextEncoder.from_pretrained(folder).eval()
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**tokens), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lora")
    vocab, data = write_vocab(root), write_pairs(root / "pairs.jsonl", 12)
    every_step = ["callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.save_top_k=-1"]
    out = train(lora_run(vocab, data, root / "full", *every_step))
    return {"root": root, "vocab": vocab, "data": data, "out": out, "full": root / "full"}


@pytest.mark.slow
def test_exported_lora_model_loads_unchanged_everywhere(uninterrupted) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    out = uninterrupted["out"]
    folder = Path(out["module"].final_model_dir)
    texts = ["什么是苹果", "一个句子"]
    trained = out["module"].encoder.encode(texts)
    assert np.allclose(TextEncoder.from_pretrained(folder).encode(texts), trained, atol=1e-5)
    assert np.allclose(SentenceTransformer(str(folder), device="cpu").encode(texts), trained, atol=1e-5)
    plain = AutoModel.from_pretrained(folder)
    assert type(plain).__name__ == "BertModel"
    assert not any("lora_" in k or k.startswith("base_model") for k in plain.state_dict())


@pytest.mark.slow
def test_lora_run_resumed_mid_epoch_reproduces_the_uninterrupted_run(uninterrupted) -> None:
    u = uninterrupted
    (checkpoint,) = (u["full"] / "checkpoints").glob("*-step=4.ckpt")  # the second epoch's first batch
    resumed = train(lora_run(u["vocab"], u["data"], u["root"] / "resumed", f"ckpt_path='{checkpoint}'"))
    assert resumed["trainer"].global_step == STEPS
    a, b = resumed["module"].encoder.state_dict(), u["out"]["module"].encoder.state_dict()
    assert any("lora_" in k for k in a)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, f"resumed weights differ by up to {worst:.3g}"


def test_lora_builds_for_fine_tuning_and_is_refused_for_retromae(compose_train, tmp_path) -> None:
    from hydra.utils import instantiate

    from ctem.modules import MultiTaskModule, RetroMAEModule
    from ctem.settings import SettingError

    vocab = write_vocab(tmp_path)
    cfg = compose_train("model=tiny", f"model.tokenizer={vocab}", "model.lora.enabled=true", "stage=multitask")
    encoder = instantiate(cfg.model)
    module = instantiate(cfg.stage, encoder=encoder)
    assert isinstance(module, MultiTaskModule)
    assert all("lora_" in n for n, p in module.named_parameters() if p.requires_grad)
    with pytest.raises(SettingError, match="model.lora.enabled=True: LoRA is for the contrastive and fine-tuning stages"):
        RetroMAEModule(encoder)
