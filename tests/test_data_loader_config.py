"""The loader settings every DataModule shares: one ``LoaderConfig`` (``data.loader.*``,
``conf/loader/default.yaml``) from the config to the DataLoader, and bad values as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ctem.cli import error_message
from ctem.config import config_dir
from ctem.data_modules import LabeledDataModule, LoaderConfig, PairDataModule, PretrainCorpusDataModule
from ctem.settings import SettingError
from ctem.tokenization import load_tokenizer
from tests.helpers.labeled_data import write_mixture, write_rows
from tests.helpers.tiny import write_vocab

KINDS = {"pairs": PairDataModule, "labeled": LabeledDataModule, "corpus": PretrainCorpusDataModule}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(str(write_vocab(tmp_path_factory.mktemp("vocab"))))


def _data_overrides(kind: str, root: Path) -> list[str]:
    """``data=<kind>`` with a small training file of its format."""
    if kind == "labeled":
        return ["data=labeled", f"data.datasets={write_mixture(root / 'mix', {'qa': (8, 'retrieval')})}", "data.batch_size=2"]
    rows = [{"query": f"问题{i}", "pos": [f"答案{i}"], "neg": [f"错{i}"], "text": f"第{i}段文字"} for i in range(8)]
    path = write_rows(root / f"{kind}.jsonl", rows)
    return [f"data={kind}", f"data.train_files=[{path}]", "data.batch_size=2"]


def _datamodule(cfg, tokenizer):
    return instantiate(cfg.data, tokenizer=tokenizer, query_max_length=16, passage_max_length=16)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_data_config_passes_its_loader_settings_to_the_dataloader(compose_train, tokenizer, tmp_path, kind) -> None:
    cfg = compose_train(*_data_overrides(kind, tmp_path), "data.loader.num_workers=1", "data.loader.pin_memory=true")
    assert cfg.data.loader._target_ == "ctem.data_modules.LoaderConfig"
    datamodule = _datamodule(cfg, tokenizer)
    assert isinstance(datamodule, KINDS[kind])
    assert datamodule.loader == LoaderConfig(num_workers=1, pin_memory=True, persistent_workers=False)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (1, True, False)


@pytest.mark.parametrize("kind", list(KINDS))
def test_loader_defaults_load_in_the_training_process(compose_train, tmp_path, kind) -> None:
    assert dict(compose_train(*_data_overrides(kind, tmp_path)).data.loader) == {
        "_target_": "ctem.data_modules.LoaderConfig", "num_workers": 0, "pin_memory": False, "persistent_workers": False,
    }


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("data.loader.num_workers=-1", "data.loader.num_workers=-1: must be a whole number >= 0"),
        ("data.loader.num_workers=two", "data.loader.num_workers=two: must be a whole number >= 0"),
        ("data.loader.persistent_workers=sometimes", "data.loader.persistent_workers=sometimes: must be true or false"),
    ],
)
def test_a_bad_loader_setting_is_one_line(compose_train, tokenizer, tmp_path, override, line) -> None:
    cfg = compose_train(*_data_overrides("pairs", tmp_path), override)
    with pytest.raises(InstantiationException) as raised:
        _datamodule(cfg, tokenizer)
    assert isinstance(raised.value.__cause__, SettingError)
    assert str(raised.value.__cause__) == line
    assert error_message("ctem-train", raised.value) == f"ctem-train: error: {line}"


def test_python_callers_pass_a_loader_config_or_its_fields(tokenizer, tmp_path) -> None:
    path = write_rows(tmp_path / "pairs.jsonl", [{"query": "问", "pos": ["答"]}])
    common = dict(tokenizer=tokenizer, train_files=str(path), train_group_size=1, cache_dir=str(tmp_path / "c"))
    assert PairDataModule(**common).loader == LoaderConfig()
    assert PairDataModule(**common, loader=LoaderConfig(num_workers=2)).loader.num_workers == 2
    assert PairDataModule(**common, loader={"num_workers": 3, "persistent_workers": True}).loader == LoaderConfig(3, False, True)
    with pytest.raises(SettingError, match=r"^data\.loader\.workers=2: unknown setting"):
        PairDataModule(**common, loader={"workers": 2})
    with pytest.raises(TypeError):
        PairDataModule(**common, num_workers=2)  # the old flat keyword is gone


def test_old_override_paths_name_the_new_ones() -> None:
    from ctem.cli import moved_override

    for key in ("num_workers", "pin_memory", "persistent_workers"):
        message = moved_override("ctem-train", f"data.{key}=1")
        assert message is not None and f"data.{key} is now data.loader.{key}" in message
    assert moved_override("ctem-train", "data.loader.num_workers=1") is None
    assert moved_override("ctem-train", "data.batch_size=256") is None


def test_every_loader_field_is_commented() -> None:
    lines = (Path(config_dir()) / "loader" / "default.yaml").read_text("utf-8").splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-", "defaults")):
            assert lines[i - 1].startswith("#"), f"conf/loader/default.yaml: field without a comment: {line}"
