"""Same-dataset batching under 2-process CPU DDP (gloo): at every step both ranks train on
the same dataset, on different rows, and every row of an epoch is used once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.labeled_data import write_mixture
from tests.helpers.tiny import write_vocab

# Two Python processes start and import torch + lightning: ~25 s on 2 idle cores.
pytestmark = pytest.mark.slow

HELPER = Path(__file__).parent / "helpers" / "ddp_labeled_check.py"
# rows per dataset; global batch = 2 ranks x 2 queries = 4 -> 6 + 4 + 3 = 13 steps per epoch
SIZES = {"qa": (24, "retrieval"), "cls": (16, "classification"), "sim": (14, "sts")}
STEPS_PER_EPOCH = 6 + 4 + 3


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("labeled_ddp")
    vocab = write_vocab(tmp)
    data = write_mixture(tmp / "data", SIZES)
    out = tmp / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MASTER_PORT": "29531"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(HELPER), str(vocab), str(data), str(out), "2"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_every_step_uses_the_same_dataset_on_both_ranks(ranks):
    steps0, steps1 = ranks[0]["steps"], ranks[1]["steps"]
    assert len(steps0) == len(steps1) == 2 * STEPS_PER_EPOCH
    for a, b in zip(steps0, steps1):
        assert (a["epoch"], a["task"]) == (b["epoch"], b["task"])
        assert a["in_batch_negatives"] == b["in_batch_negatives"] == (a["task"] != "cls")
        assert not {tuple(q) for q in a["queries"]} & {tuple(q) for q in b["queries"]}


def test_each_epoch_uses_every_row_once_and_reshuffles(ranks):
    by_epoch: dict[int, list] = {0: [], 1: []}
    orders: dict[int, list[str]] = {0: [], 1: []}
    for rank in ranks:
        for step in rank["steps"]:
            by_epoch[step["epoch"]] += [tuple(q) for q in step["queries"]]
    for step in ranks[0]["steps"]:
        orders[step["epoch"]].append(step["task"])
    rows = sum(n for n, _ in SIZES.values()) - 2  # sim: 14 rows -> 3 full batches of 4
    for epoch in (0, 1):
        assert len(by_epoch[epoch]) == len(set(by_epoch[epoch])) == rows
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
