"""A setting the run cannot use is one line naming it, before the model is built or a step
trained, and nothing is written: also when the value is refused by an object Hydra builds
(its "Error in call to target" wrapper spans several lines), by Lightning's trainer, or
would silently have meant something else (``model.query_max_length=0`` became the default)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

from ctem.cli import error_message, run_folder_error
from ctem.cli.train import run
from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import run_command, write_pairs
from tests.reliability.probes import command_error, tiny_run

CASES = {
    "data.on_bad_row=ignore": "data.on_bad_row=ignore: must be 'error' or 'skip'",
    "stage.loss.temperature=0": "stage.loss: temperature must be > 0",
    "data.train_group_size=0": "data: train_group_size must be >= 1, got 0",
    "trainer.max_steps=-5": "trainer: `max_steps` must be a non-negative integer or -1",
    "data.batch_size=0": "data.batch_size=0: must be a whole number >= 1",
    "data.batch_size=-1": "data.batch_size=-1: must be a whole number >= 1",
    "model.query_max_length=0": "model.query_max_length=0: must be an integer of at least 3",
}


def train_error(compose_train, tmp_path: Path, *overrides: str, model: Sequence[str] = ()) -> str:
    """The line ``ctem-train`` prints for a tiny run with ``overrides`` (and the ``model``
    overrides instead of the tiny model's); checks nothing was written."""
    vocab, data = write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 8)
    args = [a for a in tiny_run(vocab, data, tmp_path / "run", "trainer.max_steps=2") if not a.startswith("hydra.")]
    if model:
        args = [a for a in args if not a.startswith("model")] + list(model)
    cfg = compose_train(*args, *overrides)
    with pytest.raises(Exception) as raised:
        run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "final_model").exists()
    message = error_message("ctem-train", raised.value)
    assert message is not None and "\n" not in message, raised.value
    return message


@pytest.mark.parametrize("override", list(CASES))
def test_a_bad_setting_is_one_line_naming_it(compose_train, tmp_path, override) -> None:
    assert train_error(compose_train, tmp_path, override).startswith(f"ctem-train: error: {CASES[override]}")


@pytest.mark.parametrize("override", ["data.batch_size=0", "data.on_bad_row=ignore", "data.train_group_size=0", "stage.loss.temperature=0"])
def test_with_a_pretrained_model_data_and_stage_settings_are_refused_before_its_weights_load(
    compose_train, tmp_path, tiny_model, monkeypatch, override
) -> None:
    """model=hf: a hub model's weights can take minutes to download; a typo is found first."""

    def weights_loaded(*args, **kwargs):
        raise AssertionError("the model's weights were loaded before the settings were checked")

    monkeypatch.setattr("ctem.encoder._load_backbone", weights_loaded)
    message = train_error(compose_train, tmp_path, override, model=["model=hf", f"model.name_or_path={tiny_model}"])
    assert message.startswith(f"ctem-train: error: {CASES[override]}")


@pytest.mark.parametrize("setting", ["logger.wandb.save_dir", "logger.csv.save_dir", "data.cache_dir"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_training(compose_train, tmp_path, setting) -> None:
    (tmp_path / "a_file").write_text("")
    logger = [f"logger={setting.split('.')[1]}"] if setting.startswith("logger") else []
    message = train_error(compose_train, tmp_path, *logger, f"{setting}={tmp_path / 'a_file' / 'sub'}")
    assert message.startswith(f"ctem-train: error: {setting}={tmp_path / 'a_file' / 'sub'}: cannot write there (Not a directory")


def test_a_run_folder_that_cannot_be_created_is_one_line_and_leaves_nothing(tmp_path) -> None:
    (tmp_path / "a_file").write_text("")
    message = run_folder_error("ctem-eval", [f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"])
    assert message == (f"ctem-eval: error: hydra.run.dir={tmp_path / 'a_file' / 'run'}: cannot create or write this run's folder "
                       f"(Not a directory: {tmp_path / 'a_file' / 'run'})")
    assert run_folder_error("ctem-eval", [f"hydra.run.dir={tmp_path / 'new' / 'run'}"]) is None
    assert not (tmp_path / "new").exists(), "the probe removes what it created"


@pytest.mark.slow
@pytest.mark.parametrize("override", ["data.on_bad_row=ignore", "trainer.max_steps=-5", "hydra.run.dir=/proc/ctem/run"])
def test_the_command_prints_the_one_line(tmp_path, override) -> None:
    vocab, data = write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 8)
    proc = run_command("ctem.cli.train", *tiny_run(vocab, data, tmp_path / "run"), override, cwd=tmp_path)
    line = command_error(proc)
    assert override.split("=")[0] in line or override.startswith("trainer") and line.startswith("ctem-train: error: trainer:"), line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_streamed_data_without_a_step_budget_is_one_line_naming_max_steps(compose_train, tmp_path) -> None:
    message = train_error(compose_train, tmp_path, "data.streaming=true", "trainer.max_steps=-1", "trainer.max_epochs=1")
    assert message.startswith("ctem-train: error: trainer.max_steps=-1: streamed data (data.streaming=true) has no known length")


@pytest.mark.parametrize(
    ("node", "setting", "path"),
    [
        ("model", "query_max_length", "model.query_max_length"),
        ("data", "data.loader.num_workers", "data.loader.num_workers"),
        ("callbacks.cmteb_eval.eval", "eval.batch_size", "callbacks.cmteb_eval.eval.batch_size"),
        ("callbacks.hard_negative_refresh.mining", "mining.range", "callbacks.hard_negative_refresh.mining.range"),
        ("eval", "eval.batch_size", "eval.batch_size"),
    ],
)
def test_a_setting_refused_inside_an_object_hydra_builds_is_named_by_its_override_path(node, setting, path) -> None:
    from hydra.errors import InstantiationException

    from ctem.settings import SettingError

    err = InstantiationException(f"Error in call to target 'x.Y':\nSettingError('...')\nfull_key: {node}")
    err.__cause__ = SettingError(setting, 0, "must be at least 1")
    assert error_message("ctem-train", err) == f"ctem-train: error: {path}=0: must be at least 1"
