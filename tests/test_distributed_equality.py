"""A 2-process gloo DDP step equals a 1-process step on the concatenated batch, padded,
padding-free (length-sorted micro-chunks) and with the gradient cache, the padding-free and
cached steps equal the padded one, and the cache all-reduces gradients once per optimizer
step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.tiny import write_vocab

HELPER = Path(__file__).parent / "helpers" / "contrastive_step.py"
CASES = [f"g{g}_{mode}" for g in (1, 2) for mode in ("padded", "plain", "cache")]


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    vocab = write_vocab(tmp)
    single, double = tmp / "single", tmp / "double"
    single.mkdir()
    double.mkdir()
    _run([sys.executable, str(HELPER), str(vocab), str(single)], tmp)
    _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(HELPER), str(vocab), str(double)],
        tmp,
    )
    return tmp


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([grads[k].flatten() for k in sorted(grads)])


def _assert_each_close(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tol: float = 1e-4) -> None:
    """Per-tensor relative error, skipping tensors whose true gradient is zero up to
    rounding (e.g. attention key biases, to which softmax is invariant)."""
    scale = _flat(ref).norm()
    for name, value in ref.items():
        if value.norm() > 1e-3 * scale:
            assert _rel_err(got[name], value) < tol, name


@pytest.mark.parametrize("case", CASES)
def test_ddp_matches_single_process(results: Path, case: str) -> None:
    ref = torch.load(results / "single" / f"{case}_rank0.pt")
    ranks = [torch.load(results / "double" / f"{case}_rank{r}.pt") for r in (0, 1)]
    # Each rank's loss is the mean over its own queries; their mean is the global loss.
    global_loss = sum(r["loss"] for r in ranks) / 2
    assert abs(global_loss - ref["loss"]) / abs(ref["loss"]) < 1e-5
    assert set(ranks[0]["grads"]) == set(ref["grads"])
    for r in ranks:  # after the all-reduce both ranks hold the global-batch gradient
        assert _rel_err(_flat(r["grads"]), _flat(ref["grads"])) < 1e-5
        _assert_each_close(r["grads"], ref["grads"])


def test_cache_matches_plain_in_one_process(results: Path) -> None:
    for g in (1, 2):
        plain = torch.load(results / "single" / f"g{g}_plain_rank0.pt")
        cache = torch.load(results / "single" / f"g{g}_cache_rank0.pt")
        assert abs(plain["loss"] - cache["loss"]) < 1e-5
        assert _rel_err(_flat(cache["grads"]), _flat(plain["grads"])) < 1e-5
        _assert_each_close(cache["grads"], plain["grads"])


@pytest.mark.parametrize("world", ["single", "double"])
def test_padding_free_matches_padded(results: Path, world: str) -> None:
    """The padding-free step (micro-chunks of 3 rows, embeddings back in batch order, then
    the cross-device gather) gives the padded step's loss and gradients on every rank."""
    for case in ("g1", "g2"):
        for r in (0, 1) if world == "double" else (0,):
            padded = torch.load(results / world / f"{case}_padded_rank{r}.pt")
            free = torch.load(results / world / f"{case}_plain_rank{r}.pt")
            assert abs(free["loss"] - padded["loss"]) <= 1e-5 * abs(padded["loss"])
            assert _rel_err(_flat(free["grads"]), _flat(padded["grads"])) < 1e-5
            _assert_each_close(free["grads"], padded["grads"])


def test_cache_all_reduces_gradients_once_per_step(results: Path) -> None:
    """DDP's reducer runs once per optimizer step with the cache as without it (one call
    of the communication hook per gradient bucket), also over accumulated micro-batches;
    so does the padding-free step, whose micro-chunks all join one graph."""
    for case in ("g1", "g2", "acc2"):
        for r in (0, 1):
            padded = torch.load(results / "double" / f"{case}_padded_rank{r}.pt")["allreduces"]
            plain = torch.load(results / "double" / f"{case}_plain_rank{r}.pt")["allreduces"]
            cache = torch.load(results / "double" / f"{case}_cache_rank{r}.pt")["allreduces"]
            assert cache == plain == padded >= 1, (case, cache, plain, padded)
    one_step = torch.load(results / "double" / "g1_plain_rank0.pt")["allreduces"]
    assert torch.load(results / "double" / "acc2_plain_rank0.pt")["allreduces"] == one_step  # the first micro-batch: no_sync


def test_accumulated_clipped_step_is_the_same_everywhere(results: Path) -> None:
    """Two accumulated micro-batches, clipped, stepped: the same weights in one process or
    two, padded, padding-free or cached (float rounding apart)."""
    ref = torch.load(results / "single" / "acc2_padded_rank0.pt")["weights"]
    runs = [results / "single" / f"acc2_{mode}_rank0.pt" for mode in ("plain", "cache")]
    runs += [results / "double" / f"acc2_{mode}_rank{r}.pt" for mode in ("padded", "plain", "cache") for r in (0, 1)]
    for run in runs:
        weights = torch.load(run)["weights"]
        for name, value in ref.items():
            torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-6, msg=f"{run.name} {name}")


OBJECTIVE_HELPER = Path(__file__).parent / "helpers" / "objective_step.py"
OBJECTIVE_CASES = [f"{name}_{mode}" for name in ("masked", "guided", "matryoshka", "distill") for mode in ("plain", "cache")]


@pytest.fixture(scope="module")
def objective_results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp_objectives")
    vocab = write_vocab(tmp)
    for world in ("single", "double"):
        (tmp / world).mkdir()
    _run([sys.executable, str(OBJECTIVE_HELPER), str(vocab), str(tmp / "single")], tmp)
    _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
         str(OBJECTIVE_HELPER), str(vocab), str(tmp / "double")],
        tmp,
    )
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("case", OBJECTIVE_CASES)
def test_objectives_ddp_match_single_process(objective_results: Path, case: str) -> None:
    """False-negative masking (duplicates placed across ranks; with a guide model too),
    Matryoshka and teacher distillation: a 2-process step with cross-device negatives equals the 1-process step
    on the whole batch, padding-free and with the gradient cache, and each rank masks the
    duplicates its own queries meet (3 in all)."""
    ref = torch.load(objective_results / "single" / f"{case}_rank0.pt")
    ranks = [torch.load(objective_results / "double" / f"{case}_rank{r}.pt") for r in (0, 1)]
    assert abs(sum(r["loss"] for r in ranks) / 2 - ref["loss"]) / abs(ref["loss"]) < 1e-5
    for r in ranks:
        assert _rel_err(_flat(r["grads"]), _flat(ref["grads"])) < 1e-5
        _assert_each_close(r["grads"], ref["grads"])
    if case.startswith("guided"):  # the guide masks more, the same in one process or two
        assert ref["masked"] > 3 and sum(r["masked"] for r in ranks) == ref["masked"]
    else:
        assert ref["masked"] == 3 and [r["masked"] for r in ranks] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["masked", "guided", "matryoshka", "distill"])
def test_objectives_cached_match_plain(objective_results: Path, objective: str) -> None:
    for world, ranks in (("single", (0,)), ("double", (0, 1))):
        for r in ranks:
            plain = torch.load(objective_results / world / f"{objective}_plain_rank{r}.pt")
            cache = torch.load(objective_results / world / f"{objective}_cache_rank{r}.pt")
            assert abs(plain["loss"] - cache["loss"]) <= 1e-5 * abs(plain["loss"])
            assert _rel_err(_flat(cache["grads"]), _flat(plain["grads"])) < 1e-5
            _assert_each_close(cache["grads"], plain["grads"])
