"""One instruction rule: training records the retrieval-query instruction it used, export
writes it (ctem_config.json and the sentence-transformers ``query`` prompt), and evaluation
(ctem-eval and the callback) uses it unless the user overrides it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from ctem import TextEncoder
from ctem.cli import eval as eval_cli
from ctem.cli.train import run
from ctem.config import config_dir
from ctem.instructions import BGE_ZH, NAMED_INSTRUCTIONS, resolve_instruction
from tests.evaluation.eval_helpers import make_tiny_tasks
from tests.helpers.labeled_data import write_mixture
from tests.helpers.tiny import sentences, write_vocab


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("instr")
    texts = sentences(48, seed=5, min_len=6, max_len=24)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": a, "pos": [b]}, ensure_ascii=False) + "\n" for a, b in zip(texts, texts[1:])), encoding="utf-8")
    return {
        "vocab": write_vocab(root),
        "pairs": pairs,
        "labeled": write_mixture(root / "labeled", {"qa": (24, "retrieval"), "sim": (24, "sts")}),
        "tasks": make_tiny_tasks(root / "tasks"),
    }


def train(compose_train, files, *data: str) -> tuple[Path, list]:
    cfg = compose_train(
        "model=tiny", f"model.tokenizer={files['vocab']}", *data, "logger=none", "trainer.max_steps=2", "data.batch_size=4",
        "callbacks=cmteb_eval", f"callbacks.cmteb_eval.tasks_dir={files['tasks']}", "callbacks.cmteb_eval.eval.tasks=null",
        "callbacks.cmteb_eval.on_epoch_end=false", "callbacks.cmteb_eval.on_train_end=true",
    )
    built = run(cfg)
    callback = next(c for c in built["trainer"].callbacks if hasattr(c, "last_results"))
    return Path(cfg.stage.final_model_dir), callback.last_results


def evaluate(model: Path, tasks: Path, out: Path, *overrides: str) -> dict[str, str | None]:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("eval", overrides=[f"model_path={model}", f"tasks_dir={tasks}", f"output_dir={out}", "progress=false", *overrides])
    return {r.task: r.instruction for r in eval_cli.run(cfg)}


def test_multitask_records_its_retrieval_instruction_everywhere(compose_train, files, tmp_path) -> None:
    model, during_training = train(compose_train, files, "stage=multitask", "data=labeled", f"data.datasets={files['labeled']}",
                                   "data.train_group_size=2")
    assert {r.task: r.instruction for r in during_training}["TinyRetrieval"] == BGE_ZH
    assert json.loads((model / "ctem_config.json").read_text("utf-8"))["query_instruction"] == BGE_ZH
    assert json.loads((model / "config_sentence_transformers.json").read_text("utf-8"))["prompts"]["query"] == BGE_ZH
    assert TextEncoder.from_pretrained(model).query_instruction == BGE_ZH
    assert evaluate(model, files["tasks"], tmp_path / "e1")["TinyRetrieval"] == BGE_ZH
    assert evaluate(model, files["tasks"], tmp_path / "e2", "eval.query_instruction=none")["TinyRetrieval"] is None

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model), device="cpu").encode(["什么是苹果"], prompt_name="query")
    ours = TextEncoder.from_pretrained(model).encode(["什么是苹果"], instruction=BGE_ZH, is_query=True)
    np.testing.assert_allclose(st, ours, atol=1e-5)


def test_contrastive_without_instruction_is_evaluated_without_one(compose_train, files, tmp_path) -> None:
    model, during_training = train(compose_train, files, "data=pairs", f"data.train_files=[{files['pairs']}]", "data.train_group_size=1")
    assert {r.task: r.instruction for r in during_training}["TinyRetrieval"] is None
    assert json.loads((model / "ctem_config.json").read_text("utf-8"))["query_instruction"] == ""
    assert evaluate(model, files["tasks"], tmp_path / "e1")["TinyRetrieval"] is None
    assert evaluate(model, files["tasks"], tmp_path / "e2", "eval.query_instruction=bge_zh")["TinyRetrieval"] == BGE_ZH


def test_named_instructions_in_any_setting(compose_train, files) -> None:
    assert resolve_instruction("bge_zh") == BGE_ZH and resolve_instruction("none") == "" and resolve_instruction(None) is None
    assert resolve_instruction("问：") == "问："
    cfg = compose_train("model=tiny", f"model.tokenizer={files['vocab']}", "data=pairs", f"data.train_files=[{files['pairs']}]",
                        "data.query_instruction=bge_en", "logger=none", "callbacks=none", "train=false")
    assert run(cfg)["datamodule"].trained_query_instruction == NAMED_INSTRUCTIONS["bge_en"]


def test_an_unknown_instruction_name_is_one_line(tmp_path) -> None:
    """A name that does not exist is refused wherever an instruction is set (not used as the
    text "bge_fr"); texts, names and none pass."""
    from ctem.instructions import BGE_EN, InstructionNameError, resolve_instruction
    from ctem.mining import MiningConfig

    assert resolve_instruction("bge_en") == BGE_EN and resolve_instruction("none") == ""
    assert resolve_instruction("query: ") == "query: " and resolve_instruction("Represent this") == "Represent this"
    with pytest.raises(InstructionNameError, match="unknown instruction name 'bge_fr': use one of bge_zh, bge_en, none"):
        resolve_instruction("bge_fr")
    with pytest.raises(InstructionNameError):
        MiningConfig(query_instruction="bge_english")


def test_pairs_data_keeps_the_models_instruction(compose_train, files, tmp_path) -> None:
    """With pairs data that sets no instruction, ``model.query_instruction`` is what the
    trained model records (the data says nothing, so nothing overrides it)."""
    model, during_training = train(compose_train, files, "data=pairs", f"data.train_files=[{files['pairs']}]", "data.train_group_size=1",
                                   "model.query_instruction=bge_en")
    assert {r.task: r.instruction for r in during_training}["TinyRetrieval"] == NAMED_INSTRUCTIONS["bge_en"]
    assert json.loads((model / "ctem_config.json").read_text("utf-8"))["query_instruction"] == NAMED_INSTRUCTIONS["bge_en"]


def built(compose_train, files, *overrides: str) -> dict:
    """Encoder and data module of a run that does not train, the data set up."""
    cfg = compose_train("model=tiny", f"model.tokenizer={files['vocab']}", *overrides, "logger=none", "callbacks=none", "train=false")
    objects = run(cfg)
    objects["datamodule"].setup("fit")
    return {**objects, "configured": cfg.model.get("query_instruction")}


def test_the_data_decides_the_recorded_instruction_in_one_place(compose_train, files) -> None:
    """``record_trained_instruction``: labeled retrieval data records its datasets'
    instruction; pairs data its ``data.query_instruction``, the same as ``model.query_instruction``
    or instead of the model's; without one, the model's stays."""
    from ctem.cli.train import record_trained_instruction

    labeled = built(compose_train, files, "stage=multitask", "data=labeled", f"data.datasets={files['labeled']}")
    record_trained_instruction(labeled["encoder"], labeled["datamodule"], labeled["configured"])
    assert labeled["encoder"].query_instruction == BGE_ZH
    pairs = built(compose_train, files, "data=pairs", f"data.train_files=[{files['pairs']}]", "data.train_group_size=1", "data.query_instruction=none",
                  "model.query_instruction=none")
    record_trained_instruction(pairs["encoder"], pairs["datamodule"], pairs["configured"])
    assert pairs["encoder"].query_instruction == ""
    unsaid = built(compose_train, files, "data=pairs", f"data.train_files=[{files['pairs']}]", "data.train_group_size=1", "model.query_instruction=bge_en")
    assert unsaid["datamodule"].trained_query_instruction is None
    record_trained_instruction(unsaid["encoder"], unsaid["datamodule"], unsaid["configured"])
    assert unsaid["encoder"].query_instruction == NAMED_INSTRUCTIONS["bge_en"]


def test_two_different_instructions_are_one_line(compose_train, files) -> None:
    """``model.query_instruction`` and the data's instruction both set and different: a
    ``SettingError`` in one line naming the model setting, not a silent override."""
    from ctem.cli.train import record_trained_instruction
    from ctem.settings import SettingError

    labeled = built(compose_train, files, "stage=multitask", "data=labeled", f"data.datasets={files['labeled']}",
                    "model.query_instruction=bge_en")
    with pytest.raises(SettingError) as caught:
        record_trained_instruction(labeled["encoder"], labeled["datamodule"], labeled["configured"])
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model.query_instruction=bge_en: the data trains retrieval queries with")
    pairs = built(compose_train, files, "data=pairs", f"data.train_files=[{files['pairs']}]", "data.train_group_size=1", "data.query_instruction=bge_zh",
                  "model.query_instruction=bge_en")
    with pytest.raises(SettingError, match="model.query_instruction=bge_en"):
        record_trained_instruction(pairs["encoder"], pairs["datamodule"], pairs["configured"])
