"""The objectives through the real config and trainer: a Matryoshka run records its dims in
the exported folder, ``ctem-eval eval.truncate_dim=`` evaluates a prefix, and
sentence-transformers loads the folder with ``truncate_dim``; distillation and
false-negative masking train from the config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctem.cli.train import run
from tests.evaluation.eval_helpers import make_tiny_tasks
from tests.helpers.tiny import sentences, write_vocab


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("objectives")
    texts = sentences(48, seed=5, min_len=6, max_len=24)
    pairs = root / "pairs.jsonl"
    rows = [{"query": a, "pos": [b], "neg": [c], "pos_scores": [0.9], "neg_scores": [0.1]} for a, b, c in zip(texts, texts[1:], texts[2:])]
    rows[3]["pos"] = rows[0]["pos"]  # a duplicate positive in the first batch
    pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"vocab": write_vocab(root), "pairs": pairs, "tasks": make_tiny_tasks(root / "tasks")}


def train(compose_train, files: dict, *overrides: str) -> Path:
    cfg = compose_train(
        "model=tiny", f"model.tokenizer={files['vocab']}", "data=pairs", f"data.train_files=[{files['pairs']}]",
        "data.train_group_size=2", "logger=none", "trainer.max_steps=2", "data.batch_size=4", *overrides,
    )
    run(cfg)
    return Path(cfg.stage.final_model_dir)


@pytest.mark.slow
def test_matryoshka_folder_records_dims_and_truncates(compose_train, files, tmp_path) -> None:
    from hydra import compose, initialize_config_dir
    from sentence_transformers import SentenceTransformer

    from ctem.cli.eval import run as run_eval
    from ctem.config import config_dir
    from ctem.encoder import TextEncoder

    folder = train(compose_train, files, "stage.matryoshka.dims=[64,32,16]", "stage.grad_cache.enabled=true",
                   "stage.grad_cache.chunk_size=2")
    assert json.loads((folder / "ctem_config.json").read_text())["matryoshka_dims"] == [64, 32, 16]
    assert TextEncoder.from_pretrained(folder).matryoshka_dims == [64, 32, 16]
    assert "| matryoshka dims | 64, 32, 16 |" in (folder / "README.md").read_text()

    full = SentenceTransformer(str(folder), device="cpu").encode(["什么是苹果"])
    short = SentenceTransformer(str(folder), device="cpu", truncate_dim=16).encode(["什么是苹果"])
    assert short.shape == (1, 16) and np.allclose(short, full[:, :16], atol=1e-6)

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"model_path={folder}", f"tasks_dir={files['tasks']}", f"output_dir={tmp_path / 'out'}",
            "eval.tasks=[TinySTS]", "eval.truncate_dim=16", "progress=false",
        ])
    results = run_eval(cfg)
    assert [r.task for r in results] == ["TinySTS"]
    assert "| 16 |" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.slow
def test_distillation_and_masking_train_from_the_config(compose_train, files) -> None:
    folder = train(compose_train, files, "stage/loss=distill", "stage.mask_false_negatives=true",
                   "stage.loss.teacher_temperature=0.5")
    card = (folder / "README.md").read_text()
    assert "| objective | InfoNCE + teacher KL |" in card and "| false-negative masking | yes |" in card
