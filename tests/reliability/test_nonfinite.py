"""Non-finite numbers are never silent: a diverging run stops with the step, the learning
rate and the last finite loss and exports nothing; evaluation, mining and curation refuse a
model whose embeddings are NaN."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ctem import finite
from ctem.api import train
from ctem.callbacks import NonFiniteGuard
from ctem.encoder import TextEncoder
from ctem.evaluation import EncoderAdapter
from ctem.finite import NonFiniteError, check_finite_embeddings
from tests.helpers.tiny import write_vocab
from tests.reliability.conftest import run_command, write_pairs
from tests.reliability.probes import command_error, sts_task, tiny_run

DIVERGE = ["stage.optimizer.lr=1e3", "trainer.max_steps=40"]  # NaN within ~10 steps for the tiny model


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_exports_nothing(tmp_path) -> None:
    run = tmp_path / "run"
    proc = run_command("ctem.cli.train", *tiny_run(write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 32), run, *DIVERGE), cwd=tmp_path)
    line = command_error(proc)
    assert line.startswith("ctem-train: error: training stopped at step ")
    assert "non-finite" in line and "learning rate" in line and "last finite loss" in line
    assert not (run / "final_model").exists()


@pytest.mark.slow
def test_the_gradient_cache_path_stops_too(tmp_path) -> None:
    """Manual optimisation (two-pass gradient cache): the same guard, the same stop."""
    run = tmp_path / "run"
    overrides = tiny_run(write_vocab(tmp_path), write_pairs(tmp_path / "pairs.jsonl", 32), run, *DIVERGE,
                         "stage.grad_cache.enabled=true", "stage.grad_cache.chunk_size=2")
    with pytest.raises(NonFiniteError, match="training stopped at step .* learning rate .* last finite loss"):
        train(overrides)
    assert not (run / "final_model").exists()


def test_a_non_finite_loss_stops_even_when_gradients_are_finite() -> None:
    guard = NonFiniteGuard()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    trainer = SimpleNamespace(global_step=3, optimizers=[optimizer], strategy=strategy)
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.5)}, None, 0)
    trainer.global_step = 4
    with pytest.raises(NonFiniteError, match=r"at step 4: non-finite loss \(inf\) at learning rate 0.5; last finite loss 2.5 at step 3"):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("inf"))}, None, 1)


# --------------------------------------------------------------------------- NaN models
@pytest.fixture(scope="module")
def nan_model(tmp_path_factory) -> Path:
    """A tiny saved model whose weights are all NaN (what a diverged run used to export)."""
    from tests.helpers.tiny import tiny_encoder

    root = tmp_path_factory.mktemp("nan")
    encoder = tiny_encoder(write_vocab(root))
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.fill_(float("nan"))
    return encoder.save_pretrained(root / "model")


def test_the_shared_evaluation_encoder_refuses_nan_embeddings(nan_model) -> None:
    adapter = EncoderAdapter(TextEncoder.from_pretrained(nan_model))
    with pytest.raises(NonFiniteError, match="non-finite .* embeddings for 2 of 2 texts"):
        adapter(["一个句子", "另一个"])


@pytest.mark.slow
def test_eval_refuses_a_nan_model(tmp_path, nan_model) -> None:
    out = tmp_path / "results"
    proc = run_command("ctem.cli.eval", f"model_path={nan_model}", f"tasks_dir={sts_task(tmp_path)}", f"output_dir={out}",
                       f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert "non-finite (NaN or inf) embeddings" in command_error(proc, "ctem-eval")
    assert not list(out.rglob("TinySTS*.json"))


@pytest.mark.slow
def test_mine_refuses_a_nan_model(tmp_path, nan_model) -> None:
    output = tmp_path / "mined.jsonl"
    proc = run_command("ctem.cli.mine", f"model_path={nan_model}", f"input={write_pairs(tmp_path / 'train.jsonl', 6)}",
                       f"output={output}", "mining.use_gpu=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert "non-finite (NaN or inf) embeddings" in command_error(proc, "ctem-mine")
    assert not output.exists()


@pytest.mark.slow
def test_curate_refuses_a_nan_model(tmp_path, nan_model) -> None:
    out = tmp_path / "curated"
    proc = run_command("ctem.cli.curate", f"input_files=[{write_pairs(tmp_path / 'train.jsonl', 6)}]", f"scorer.model_path={nan_model}",
                       f"output_dir={out}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert "non-finite (NaN or inf) embeddings" in command_error(proc, "ctem-curate")
    assert not (out / "train.jsonl").exists()


def test_check_accepts_finite_embeddings() -> None:
    emb = np.ones((3, 4), dtype=np.float32)
    from ctem.finite import check_finite_embeddings

    assert check_finite_embeddings(emb) is emb


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "torch"])
def test_the_embedding_check_counts_bad_rows_across_its_blocks(monkeypatch, as_tensor) -> None:
    """The check runs ``CHECK_ROWS`` rows at a time (bounded temporaries); the count and the
    first bad row are those of the whole array."""
    monkeypatch.setattr(finite, "CHECK_ROWS", 4)
    values = np.zeros((11, 3), dtype=np.float32)
    values[[9, 2, 5], [0, 2, 1]] = [np.nan, np.inf, -np.inf]
    array = torch.from_numpy(values) if as_tensor else values
    with pytest.raises(NonFiniteError, match=r"for 3 of 11 texts \(first: text 2\)"):
        check_finite_embeddings(array, "the model")
    values[[9, 2, 5], [0, 2, 1]] = 1.0
    assert check_finite_embeddings(array) is array
    assert check_finite_embeddings(values[:0]).shape == (0, 3)
