"""Config presets and top-level keys compose as the docs show them."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from ctem.config import config_dir, register_resolvers


@pytest.mark.parametrize("preset", ["default", "fdr", "limit", "overfit"])
def test_debug_presets_compose_with_hydra_settings(preset) -> None:
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"debug={preset}"], return_hydra_config=True)
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu"
    assert list(cfg.hydra.verbose) == ["ctem"]


def test_ckpt_path_is_a_top_level_key(compose_train) -> None:
    assert compose_train().ckpt_path is None
    assert compose_train("ckpt_path=run/checkpoints/last.ckpt").ckpt_path == "run/checkpoints/last.ckpt"


def test_resumed_run_says_where_its_earlier_part_lives(tmp_path) -> None:
    from ctem.api import train
    from tests.helpers.tiny import sentences, write_vocab

    vocab = write_vocab(tmp_path)
    texts = sentences(24, seed=2, min_len=5)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(f'{{"query": "{a}", "pos": ["{b}"]}}\n' for a, b in zip(texts, texts[1:])), encoding="utf-8")
    common = ["model=tiny", f"model.tokenizer={vocab}", "data=pairs", f"data.train_files=[{data}]", "data.train_group_size=1",
              "data.batch_size=4", "callbacks=default", "logger=none"]
    first = train([*common, "trainer.max_steps=2", f"hydra.run.dir={tmp_path}/first"])
    ckpt = first["run_dir"] / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    second = train([*common, "trainer.max_steps=4", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/second"])
    assert second["trainer"].global_step == 4
    note = (second["run_dir"] / "resumed_from.txt").read_text()
    assert str(ckpt.resolve()) in note and str(first["run_dir"]) in note


ADAMW = {"weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "scheduler": "linear", "warmup_ratio": 0.1, "warmup_steps": None}


@pytest.mark.parametrize(("stage", "lr"), [("contrastive", 1e-4), ("multitask", 1e-5), ("retromae", 1e-4)])
def test_every_stage_takes_the_optimizer_group_with_its_own_lr(compose_train, stage, lr) -> None:
    from omegaconf import OmegaConf

    optimizer = OmegaConf.to_container(compose_train(f"stage={stage}").stage.optimizer)
    assert optimizer == {"lr": lr, **ADAMW}
    overridden = compose_train(f"stage={stage}", "stage.optimizer.lr=3e-3", "stage.optimizer.warmup_steps=5").stage.optimizer
    assert (overridden.lr, overridden.warmup_steps, overridden.weight_decay) == (3e-3, 5, 0.01)


def test_the_stage_module_receives_the_optimizer_settings(compose_train, tmp_path) -> None:
    from hydra.utils import instantiate

    from tests.helpers.tiny import tiny_encoder, write_vocab

    cfg = compose_train("stage=contrastive", "stage.optimizer.lr=5e-4", "stage.optimizer.scheduler=cosine")
    module = instantiate(cfg.stage, encoder=tiny_encoder(write_vocab(tmp_path)))
    assert (module.optimizer_config.lr, module.optimizer_config.scheduler, module.optimizer_config.betas) == (5e-4, "cosine", (0.9, 0.999))
    assert module.hparams["optimizer"]["lr"] == 5e-4  # plain data: checkpoints hold it
