"""``ctem.api.train``: a training from a list of overrides, as ``python train.py`` runs it."""

from __future__ import annotations

import json

import pytest

from ctem import TextEncoder
from ctem.api import train
from tests.helpers.tiny import sentences, write_vocab


@pytest.mark.slow
def test_train_from_overrides_writes_a_run_folder(tmp_path) -> None:
    vocab = write_vocab(tmp_path)
    texts = sentences(24, seed=1, min_len=5)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": a, "pos": [b]}, ensure_ascii=False) + "\n" for a, b in zip(texts, texts[1:])), encoding="utf-8")
    out = train([
        "model=tiny", f"model.tokenizer={vocab}", "data=pairs", f"data.train_files=[{data}]", "data.train_group_size=1",
        "data.batch_size=4", "trainer.max_steps=3", "trainer.log_every_n_steps=1", "callbacks=none", "logger=csv", f"hydra.run.dir={tmp_path}/run",
    ])
    assert out["trainer"].global_step == 3
    assert out["run_dir"] == (tmp_path / "run").resolve()
    assert "max_steps: 3" in (out["run_dir"] / "config.yaml").read_text()
    assert TextEncoder.from_pretrained(out["run_dir"] / "final_model").dim == 64
    assert list(out["run_dir"].glob("csv/version_*/metrics.csv"))
