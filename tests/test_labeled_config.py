"""Hydra wiring of `stage=multitask data=labeled` and `experiment=finetune_labeled_dev`."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from ctem.cli.train import run
from ctem.config import config_dir
from ctem.modules import MultiTaskModule
from ctem.data_modules import LabeledDataModule
from ctem.instructions import BGE_ZH, NAMED_INSTRUCTIONS
from tests.helpers.labeled_data import write_mixture
from tests.helpers.tiny import write_vocab


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_multitask_stage_and_labeled_data_build_from_config(tmp_path: Path) -> None:
    vocab = write_vocab(tmp_path)
    data = write_mixture(tmp_path / "data", {"qa": (8, "retrieval"), "cls": (8, "classification")})
    cfg = _compose(
        "stage=multitask", "data=labeled", f"data.datasets={data}", "data.batch_size=2", "model=tiny",
        f"model.tokenizer={vocab}", "train=false", "logger=none", "callbacks=none", f"paths.output_dir={tmp_path}",
    )
    built = run(cfg)
    module, datamodule = built["module"], built["datamodule"]
    assert isinstance(module, MultiTaskModule) and isinstance(datamodule, LabeledDataModule)
    assert module.criterion.facts().temperature == 0.02 and module.optimizer_config.lr == 1e-5
    assert module.in_batch_negatives
    parts = {p.name: p for p in datamodule.parts}
    assert parts["qa"].instruction == BGE_ZH and parts["cls"].instruction is None
    assert not parts["cls"].in_batch_negatives
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["task"] in parts and batch["group_size"] == 2


def test_dev_experiment_points_at_the_shared_labeled_sets() -> None:
    cfg = _compose("experiment=finetune_labeled_dev", "paths.output_dir=/tmp/unused")
    assert cfg.stage._target_ == "ctem.modules.MultiTaskModule"
    assert cfg.data._target_ == "ctem.data_modules.LabeledDataModule"
    assert cfg.data.datasets == "../shared/data/train/labeled" and cfg.data.train_group_size == 1


def test_the_english_fine_tuning_preset_keeps_the_start_models_query_format(tmp_path: Path) -> None:
    """experiment=bge_en/finetune: English data and dev suite, and no instruction on any query
    (a pretrained start such as all-MiniLM-L6-v2 was trained without one); a BGE start
    switches the retrieval types to bge_en with two overrides."""
    vocab = write_vocab(tmp_path)
    data = write_mixture(tmp_path / "data", {"qa": (8, "retrieval"), "nli": (8, "nli")})
    common = ["experiment=bge_en/finetune", "model=tiny", "model.name_or_path=null", f"model.tokenizer={vocab}",
              f"data.datasets={data}", "data.batch_size=2", "data.train_group_size=1", "train=false", "logger=none",
              "callbacks=none", f"paths.output_dir={tmp_path}"]
    cfg = _compose(*common)
    assert cfg.lang.code == "en" and cfg.data.instructions_by_type.retrieval == "none"
    built = run(cfg)
    assert {p.name: p.instruction for p in built["datamodule"].parts} == {"qa": None, "nli": None}
    assert built["datamodule"].trained_query_instruction == ""  # recorded: none
    bge = run(_compose(*common, "data.instructions_by_type.retrieval=bge_en", "data.instructions_by_type.reranking=bge_en"))
    assert bge["datamodule"].trained_query_instruction == NAMED_INSTRUCTIONS["bge_en"]
