"""Every stage starts ``fit`` with dropout on, whatever the model source (regression test:
models loaded with ``from_pretrained`` used to train with every dropout module in eval mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctem import TextEncoder
from ctem.cli.train import run
from tests.evaluation.eval_helpers import make_tiny_tasks
from tests.helpers.labeled_data import write_mixture
from tests.helpers.probes import DropoutModeProbe
from tests.helpers.tiny import TINY_BERT, sentences, write_vocab

STAGE_DATA = {
    "contrastive": ["stage=contrastive", "data=pairs", "data.train_group_size=1"],
    "multitask": ["stage=multitask", "data=labeled", "data.train_group_size=2"],
    "retromae": ["stage=retromae", "data=corpus", "data.max_seq_length=32"],
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """Data files of each stage and the three kinds of model source."""
    root = tmp_path_factory.mktemp("modes")
    vocab = write_vocab(root)
    texts = sentences(64, seed=3, min_len=6, max_len=30)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": a, "pos": [b]}, ensure_ascii=False) + "\n" for a, b in zip(texts, texts[1:])), encoding="utf-8")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    labeled = write_mixture(root / "labeled", {"sts_set": (32, "sts"), "retrieval_set": (32, "retrieval")})
    saved = root / "saved_model"
    TextEncoder(config=dict(TINY_BERT), tokenizer=str(vocab), pooling="cls").save_pretrained(saved)
    from bench._common import minilm_folder

    data = {
        "contrastive": [f"data.train_files=[{pairs}]"],
        "multitask": [f"data.datasets={labeled}"],
        "retromae": [f"data.train_files=[{corpus}]"],
    }
    models = {
        "scratch": ["model=tiny", f"model.tokenizer={vocab}"],
        "saved_folder": ["model=hf", f"model.name_or_path={saved}"],
        "packaged_st_model": ["model=hf", f"model.name_or_path={minilm_folder()}"],
    }
    return {"data": data, "models": models, "tasks": make_tiny_tasks(root / "tasks")}


def first_step_dropout(compose_train, *overrides: str) -> DropoutModeProbe:
    cfg = compose_train(*overrides, "logger=none", "trainer.max_steps=1", "data.batch_size=4", "stage.final_model_dir=null")
    probe = DropoutModeProbe()
    built = run(cfg, extra_callbacks=[probe])
    assert built["trainer"].global_step == 1
    return probe


@pytest.mark.slow
@pytest.mark.parametrize("source", ["scratch", "saved_folder", "packaged_st_model"])
@pytest.mark.parametrize("stage", sorted(STAGE_DATA))
@pytest.mark.parametrize("evaluation", [False, True], ids=["no_eval", "eval_at_start"])
def test_every_dropout_module_trains_at_the_first_step(compose_train, sources, stage, source, evaluation) -> None:
    callbacks = ["callbacks=none"]
    if evaluation:
        callbacks = ["callbacks=cmteb_eval", f"callbacks.cmteb_eval.tasks_dir={sources['tasks']}", "callbacks.cmteb_eval.eval.tasks=null",
                     "callbacks.cmteb_eval.on_train_start=true", "callbacks.cmteb_eval.on_epoch_end=false"]
    probe = first_step_dropout(compose_train, *STAGE_DATA[stage], *sources["data"][stage], *sources["models"][source], *callbacks)
    assert probe.total and probe.total > 0
    assert probe.in_train_mode == probe.total, f"{probe.total - probe.in_train_mode} of {probe.total} dropout modules in eval mode"
