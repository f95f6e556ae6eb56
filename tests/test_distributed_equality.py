"""A 2-process gloo DDP step equals a 1-process step on the concatenated batch, padded,
padding-free (length-sorted micro-chunks) and with the gradient cache, the padding-free and
cached steps equal the padded one, and the cache all-reduces gradients once per optimizer
step. Two node ranks launched as docs/distributed.md launches them (``torchrun --nnodes 2``,
``trainer=ddp_multinode``) train the weights a 1-process run on the concatenated batches
trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.tiny import sentences, write_vocab

HELPER = Path(__file__).parent / "helpers" / "contrastive_step.py"
CASES = [f"g{g}_{mode}" for g in (1, 2) for mode in ("padded", "plain", "cache")]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cache_matches_plain_in_one_process(results: Path) -> None:
    for g in (1, 2):
        plain = torch.load(results / "single" / f"g{g}_plain_rank0.pt")
        cache = torch.load(results / "single" / f"g{g}_cache_rank0.pt")
        assert abs(plain["loss"] - cache["loss"]) < 1e-5
        assert _rel_err(_flat(cache["grads"]), _flat(plain["grads"])) < 1e-5
        _assert_each_close(cache["grads"], plain["grads"])


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


TRAIN = Path(__file__).resolve().parents[1] / "train.py"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def multinode_runs(tmp_path_factory) -> Path:
    """``train.py`` on 2 node ranks of one device each (docs/distributed.md's torchrun
    recipe on localhost, gloo) with 4 queries per rank, and in one process with 8: a tiny
    BERT without dropout, one mined negative per query, cross-device negatives and the
    gradient cache (chunks of 3 rows), 3 steps."""
    tmp = tmp_path_factory.mktemp("multinode")
    vocab = write_vocab(tmp)
    qs, ps, ns = sentences(32, seed=3), sentences(32, seed=4, max_len=20), sentences(64, seed=5, max_len=20)
    data = tmp / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"query": q, "pos": [p], "neg": ns[2 * i : 2 * i + 2]}, ensure_ascii=False) + "\n"
                for i, (q, p) in enumerate(zip(qs, ps))),
        encoding="utf-8",
    )
    common = [
        "model=tiny", f"model.tokenizer={vocab}", "+model.config.hidden_dropout_prob=0",
        "+model.config.attention_probs_dropout_prob=0", "data=pairs", f"data.train_files=[{data}]",
        "data.train_group_size=2", "stage.negatives_cross_device=true", "stage.grad_cache.enabled=true",
        "stage.grad_cache.chunk_size=3", "stage.optimizer.lr=1e-3", "trainer.max_steps=3",
        "callbacks=none", "logger=none", f"paths.data_cache_dir={tmp / 'cache'}",
    ]
    _run([sys.executable, str(TRAIN), *common, "trainer=cpu", "data.batch_size=8", f"hydra.run.dir={tmp / 'single'}"], tmp)
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
             "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
             str(TRAIN), *common, "trainer=ddp_multinode", "trainer.num_nodes=2", "trainer.devices=1",
             "trainer.accelerator=cpu", "trainer.precision=32-true", "data.batch_size=4",
             f"hydra.run.dir={tmp / 'nodes'}"],
            cwd=tmp, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for node in (0, 1)
    ]
    try:
        logs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, log in zip(nodes, logs):
        assert node.returncode == 0, log[-6000:]
    return tmp


@pytest.mark.slow
def test_two_node_ranks_train_the_one_process_weights(multinode_runs: Path) -> None:
    """Each rank scores its 4 queries against both ranks' 8 groups and back-propagates them
    in chunks; the node ranks' data shards together are the one-process batches, so after
    3 AdamW steps (lr 1e-3) the saved weights agree to float rounding. AdamW divides each
    gradient by its own running scale, so rounding in gradients that are zero in exact
    arithmetic (the attention key bias) moves a weight by up to about 1 % of one step (1e-5);
    a batch scored against the wrong negatives moves weights by whole steps (1e-3)."""
    ref = load_file(multinode_runs / "single" / "final_model" / "model.safetensors")
    got = load_file(multinode_runs / "nodes" / "final_model" / "model.safetensors")
    assert set(got) == set(ref)
    for name, value in ref.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=2e-5, msg=name)
