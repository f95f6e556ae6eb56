"""Every exported ``final_model/`` gets a model card (``README.md``): Hugging Face /
sentence-transformers front matter, the stage and its hyper-parameters, the recorded query
instruction, the latest evaluation results and usage snippets; the folder still loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from ctem.cli.train import run
from ctem.files import current_umask
from ctem.instructions import BGE_EN, BGE_ZH
from ctem.model_card import TAGS, is_hub_id, languages_hint, read_front_matter, render_model_card, write_model_card
from tests.evaluation.eval_helpers import make_tiny_tasks
from tests.helpers.labeled_data import write_mixture
from tests.helpers.tiny import sentences, write_vocab


def split_card(folder: Path) -> tuple[dict, str]:
    """The parsed YAML front matter and the Markdown body of ``folder/README.md``."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("card")
    texts = sentences(48, seed=5, min_len=6, max_len=24)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": a, "pos": [b]}, ensure_ascii=False) + "\n" for a, b in zip(texts, texts[1:])), encoding="utf-8")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(sentences(64, seed=1, max_len=30)) + "\n", encoding="utf-8")
    return {
        "vocab": write_vocab(root),
        "pairs": pairs,
        "corpus": corpus,
        "labeled": write_mixture(root / "labeled", {"qa": (24, "retrieval"), "sim": (24, "sts")}),
        "tasks": make_tiny_tasks(root / "tasks"),
    }


def train(compose_train, *overrides: str) -> Path:
    cfg = compose_train(*overrides, "logger=none", "trainer.max_steps=2", "data.batch_size=4")
    run(cfg)
    return Path(cfg.stage.final_model_dir)


def eval_callback(files: dict) -> list[str]:
    return ["callbacks=cmteb_eval", f"callbacks.cmteb_eval.tasks_dir={files['tasks']}", "callbacks.cmteb_eval.eval.tasks=null",
            "callbacks.cmteb_eval.on_epoch_end=false", "callbacks.cmteb_eval.on_train_end=true"]


def test_contrastive_from_scratch_card(compose_train, files) -> None:
    from sentence_transformers import SentenceTransformer

    folder = train(compose_train, "model=tiny", f"model.tokenizer={files['vocab']}", "data=pairs",
                   f"data.train_files=[{files['pairs']}]", "data.train_group_size=1", *eval_callback(files))
    meta, body = split_card(folder)
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert meta["tags"] == TAGS and "base_model" not in meta  # trained from scratch
    assert meta["language"] == ["zh"]  # the data's (lang=zh, checked against the rows)
    assert "**Stage**: `contrastive`" in body and "Started from**: scratch" in body and "`bert`" in body
    assert "| steps | 2 |" in body and "| batch size per device | 4 |" in body
    assert "| temperature | 0.02 |" in body and "| learning rate | 0.0001 |" in body
    assert "| pooling | mean |" in body and "mean pooling" in body
    assert "Query instruction: none" in body and 'prompt_name="query"' not in body
    assert str(files["pairs"]) in body and "**Parameters**: 124,032" in body
    assert "Latest evaluation during training at step 2" in body
    assert "| TinySTS | STS | cosine_spearman |" in body and "| TinyRetrieval | Retrieval | ndcg_at_10 |" in body
    assert not list(folder.glob(".README.*")), "no temporary file left behind"
    assert (folder / "README.md").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    model = SentenceTransformer(str(folder), device="cpu")
    assert model.encode(["什么是苹果"]).shape == (1, 64)


def test_multitask_card_records_instruction_and_origin(compose_train, files, tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    start = train(compose_train, "model=tiny", f"model.tokenizer={files['vocab']}", "data=pairs",
                  f"data.train_files=[{files['pairs']}]", "data.train_group_size=1", "callbacks=none")
    moved = tmp_path / "start"
    start.rename(moved)  # the next run writes its own final_model/ in the same test folder
    folder = train(compose_train, "model=hf", f"model.name_or_path={moved}", "stage=multitask", "data=labeled",
                   f"data.datasets={files['labeled']}", "data.train_group_size=2", "callbacks=none")
    meta, body = split_card(folder)
    assert "base_model" not in meta  # a local folder is not a hub id
    assert meta["language"] == ["zh"]  # from the instruction
    assert "**Stage**: `multitask`" in body and f"the local folder `{moved}`" in body
    assert f"Query instruction: `{BGE_ZH}`" in body and 'prompt_name="query"' in body
    assert "| qa | retrieval | 24 |" in body and "| sim | sts | 24 |" in body
    assert "| steps | 2 |" in body and "| dataset sampling | proportional |" in body
    assert "## Evaluation" not in body  # no evaluation callback
    st = SentenceTransformer(str(folder), device="cpu")
    assert st.prompts["query"] == BGE_ZH


def test_retromae_card(compose_train, files) -> None:
    folder = train(compose_train, "model=tiny", f"model.tokenizer={files['vocab']}", "stage=retromae", "data=corpus",
                   f"data.train_files=[{files['corpus']}]", "data.max_seq_length=32", "callbacks=none")
    meta, body = split_card(folder)
    assert meta["tags"] == TAGS
    assert "**Stage**: `retromae`" in body and "RetroMAE pre-trained encoder" in body
    assert "| encoder / decoder mask ratio | 0.3 / 0.5 |" in body and "| steps | 2 |" in body
    assert "temperature" not in body


def test_render_pure_hub_base_cls_pooling(tmp_path) -> None:
    facts = {
        "stage": "contrastive",
        "base_model": "BAAI/bge-small-zh-v1.5",
        "started_from": "BAAI/bge-small-zh-v1.5",
        "languages": ["zh"],
        "pooling": "cls",
        "normalize": True,
        "query_max_length": 64,
        "passage_max_length": 256,
        "embedding_dim": 512,
        "query_instruction": "问：",
        "hyperparameters": {"batch size per device": 64, "steps": 10, "temperature": 0.02},
        "results": [{"task": "T2Retrieval", "type": "Retrieval", "main_metric": "ndcg_at_10", "main_score": 0.5}],
    }
    text = render_model_card(facts)
    assert text == render_model_card(dict(facts))  # pure
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == "BAAI/bge-small-zh-v1.5" and meta["language"] == ["zh"]
    assert "the hub model `BAAI/bge-small-zh-v1.5`" in text and "last_hidden_state[:, 0]" in text
    assert "['问：' + q for q in queries]" in text and "| T2Retrieval | Retrieval | ndcg_at_10 | 0.5000 |" in text
    path = write_model_card(tmp_path, facts)
    assert path.read_text(encoding="utf-8") == text and os.listdir(tmp_path) == ["README.md"]
    # the next stage, started from this folder, carries the hub base model and language on
    assert read_front_matter(tmp_path) == meta
    assert not is_hub_id(str(tmp_path)) and is_hub_id("bert-base-chinese")
    assert languages_hint("", "bert-base-chinese") == ["zh"] and languages_hint(BGE_EN, None) == ["en"]
    assert languages_hint("", None, None, "en") == ["en"] and languages_hint(BGE_EN, None, ["en"], "en") == ["en"]
