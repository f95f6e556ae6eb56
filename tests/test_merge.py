"""``ctem-merge``: the weighted average of model folders, written as a complete ctem folder
keeping pooling, normalisation and instruction; folders that disagree are refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctem.encoder import TextEncoder
from ctem.files import COMPLETE_MARKER
from ctem.merge import merge_models
from ctem.settings import SettingError
from tests.helpers.tiny import TINY_BERT, tiny_encoder, write_vocab


def saved(folder: Path, vocab: Path, seed: int, **overrides) -> str:
    torch.manual_seed(seed)
    bert = {**TINY_BERT, **overrides.pop("bert", {})}
    settings = {"pooling": "mean", "query_instruction": "查询：", **overrides}
    return str(tiny_encoder(vocab, bert=bert, **settings).save_pretrained(folder))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("merge")
    vocab = write_vocab(root)
    other = root / "other"
    other.mkdir()
    return {
        "root": root,
        "a": saved(root / "a", vocab, 1),
        "b": saved(root / "b", vocab, 2),
        "c": saved(root / "c", vocab, 3),
        "cls": saved(root / "cls", vocab, 4, pooling="cls"),
        "deep": saved(root / "deep", vocab, 5, bert={"num_hidden_layers": 3}),
        "vocab": saved(root / "vocab", write_vocab(other, chars="abcdefghij"), 6),
    }


def test_weighted_average_keeps_the_settings(models, tmp_path) -> None:
    result = merge_models([models["a"], models["b"], models["c"]], tmp_path / "m", weights=[1, 2, 1])
    assert result.weights == [0.25, 0.5, 0.25]
    merged = TextEncoder.from_pretrained(result.folder)
    inputs = [TextEncoder.from_pretrained(models[k]).backbone.state_dict() for k in "abc"]
    for key, value in merged.backbone.state_dict().items():
        if value.is_floating_point():
            expected = 0.25 * inputs[0][key] + 0.5 * inputs[1][key] + 0.25 * inputs[2][key]
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
    assert (merged.pooling, merged.normalize, merged.query_instruction) == ("mean", True, "查询：")
    assert (result.folder / COMPLETE_MARKER).is_file()
    pooling = json.loads((result.folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]


@pytest.mark.parametrize(
    ("other", "message"),
    [("cls", "disagree in pooling (mean vs cls)"), ("deep", "disagree in num_hidden_layers (2 vs 3)"),
     ("vocab", "disagree in")],
)
def test_disagreeing_models_are_refused(models, tmp_path, other, message) -> None:
    with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge_models([models["a"], models[other]], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_bad_weights_are_refused(models, tmp_path) -> None:
    with pytest.raises(SettingError, match="one weight per model"):
        merge_models([models["a"], models["b"]], tmp_path / "m", weights=[1.0])
    with pytest.raises(SettingError, match="positive sum"):
        merge_models([models["a"], models["b"]], tmp_path / "m", weights=[0, 0])


def test_the_command_merges_with_the_weights_of_its_config(models, tmp_path) -> None:
    """``ctem-merge`` as its config runs it (in this process): the same folder as the library call."""
    from ctem.cli.merge import run
    from tests.reliability.conftest import compose_command

    cfg = compose_command("merge", f"models=[{models['a']},{models['b']}]", "weights=[0.7,0.3]", f"output={tmp_path / 'cli'}")
    run(cfg)
    merge_models([models["a"], models["b"]], tmp_path / "lib", [0.7, 0.3])
    cli, lib = TextEncoder.from_pretrained(tmp_path / "cli"), TextEncoder.from_pretrained(tmp_path / "lib")
    for (name, value), other in zip(cli.backbone.state_dict().items(), lib.backbone.state_dict().values()):
        assert torch.equal(value, other), name
    assert (tmp_path / "cli" / COMPLETE_MARKER).is_file() and cli.query_instruction == lib.query_instruction == "查询："


@pytest.mark.slow
def test_cli_merges_and_refuses_in_one_line(models, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ctem.cli.merge", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    proc = cli(f"models=[{models['a']},{models['cls']}]", f"output={tmp_path / 'bad'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ctem-merge: error: models=[")
    proc = cli(f"models=[{models['a']},{models['b']}]", f"output={models['a']}")
    assert proc.returncode == 1 and "would overwrite its input" in proc.stderr.strip().splitlines()[-1]
    proc = cli(f"models=[{models['a']},{models['b']}]", "weights=[0.7,0.3]", f"output={tmp_path / 'm'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(["一个句子"]).shape == (1, 32)


def test_weights_chosen_from_examples(models, tmp_path) -> None:
    """LM-Cocktail: softmax(-loss / temperature) of each model's loss on the examples."""
    from ctem.merge import Examples, example_loss
    from ctem.mining import read_mining_rows
    from tests.helpers.tiny import sentences

    texts = sentences(30, seed=9, min_len=6, max_len=16)
    rows = [{"query": texts[i], "pos": [texts[i + 10]], "neg": [texts[i + 20]]} for i in range(10)]
    path = tmp_path / "examples.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = merge_models([models["a"], models["b"]], tmp_path / "m", examples=Examples(str(path), temperature=0.5))
    read, _ = read_mining_rows(str(path))
    losses = torch.tensor([example_loss(TextEncoder.from_pretrained(models[k]), read, 8) for k in "ab"])
    assert result.weights == pytest.approx(torch.softmax(-losses / 0.5, dim=0).tolist(), rel=1e-5)
    with pytest.raises(SettingError, match="not both"):
        merge_models([models["a"], models["b"]], tmp_path / "n", weights=[1, 1], examples=Examples(str(path)))


def test_bad_examples_are_refused_before_any_model_loads(models, tmp_path, monkeypatch) -> None:
    from ctem.merge import Examples
    from ctem.rows import DataFormatError

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the examples were checked")

    monkeypatch.setattr(TextEncoder, "from_pretrained", loaded)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"query": "问", "pos": ["答"]}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(SettingError, match=r"^example_temperature=0: must be > 0$"):
        merge_models([models["a"], models["b"]], tmp_path / "m", examples=Examples(str(good), temperature=0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "问"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=f"^{bad}:1"):
        merge_models([models["a"], models["b"]], tmp_path / "m", examples=Examples(str(bad)))
    assert not (tmp_path / "m").exists()
