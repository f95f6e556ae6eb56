"""LabeledDataModule: instructions, per-dataset settings, same-dataset schedule, negatives refresh."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
from lightning.fabric.utilities.data import _set_sampler_epoch
from transformers import BertTokenizerFast

from ctem.data_modules import DataFormatError, LabeledDataModule
from ctem.instructions import BGE_ZH
from ctem.data_modules.labeled import MixtureSchedule, SameDatasetBatchSampler
from tests.helpers.labeled_data import make_rows, write_mixture, write_rows

STS_INSTRUCTION = "判断相似："


@pytest.fixture(scope="module")
def tokenizer(tiny_vocab) -> BertTokenizerFast:
    return BertTokenizerFast(str(tiny_vocab))


def _module(tokenizer, datasets, **kwargs) -> LabeledDataModule:
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("train_group_size", 2)
    dm = LabeledDataModule(tokenizer, datasets, **kwargs)
    dm.setup("fit")
    return dm


def _all_samples(dm: LabeledDataModule, epoch: int = 0) -> list[dict]:
    return [dm.train_dataset[(i, epoch)] for i in range(len(dm.train_dataset))]


# ------------------------------------------------------------------ instructions
def test_queries_carry_their_dataset_instruction_and_passages_never(tmp_path, tokenizer):
    ret = make_rows(6, seed=1, task_type="retrieval")
    sts = make_rows(6, seed=2, task_type="sts")
    sts[3]["prompt"] = "行自己的提示："
    files = {"ret": write_rows(tmp_path / "ret.jsonl", ret), "sts": write_rows(tmp_path / "sts.jsonl", sts)}
    dm = _module(
        tokenizer,
        {"ret": {"files": str(files["ret"])}, "sts": {"files": str(files["sts"]), "instruction": STS_INSTRUCTION}},
    )
    by_query = {r["query"]: r for r in ret + sts}
    passages = {t for r in ret + sts for t in r["pos"] + r["neg"]}
    samples = _all_samples(dm)
    assert len(samples) == 12
    for sample in samples:
        if sample["task"] == "ret":
            prefix = BGE_ZH
        else:
            prefix = STS_INSTRUCTION
        raw = sample["query"]
        if raw.startswith("行自己的提示："):
            prefix = "行自己的提示："
        assert raw.startswith(prefix), raw
        row = by_query[raw[len(prefix) :]]
        assert sample["task"] == ("ret" if row in ret else "sts")
        for passage in sample["passages"]:
            assert passage in passages  # passages exactly as in the data: no instruction
            assert not passage.startswith((BGE_ZH, STS_INSTRUCTION))
    # the row with its own prompt got the prompt, not the dataset instruction
    assert "行自己的提示：" + sts[3]["query"] in {s["query"] for s in samples}
    assert STS_INSTRUCTION + sts[3]["query"] not in {s["query"] for s in samples}
    # mining rows: raw queries with the instruction they train with, one group per dataset
    mined = dm.mining_rows()
    assert [m["query"] for m in mined[:6]] == [r["query"] for r in ret]
    assert {m["prompt"] for m in mined[:6]} == {BGE_ZH}
    assert (mined[6 + 3]["query"], mined[6 + 3]["prompt"]) == (sts[3]["query"], "行自己的提示：")
    assert [m["group"] for m in mined] == ["ret"] * 6 + ["sts"] * 6
    assert [m["pos"] for m in mined] == [r["pos"] for r in ret + sts]


def test_instructions_by_type_and_empty_instruction(tmp_path, tokenizer):
    folder = write_mixture(tmp_path, {"a": (4, "retrieval"), "b": (4, "sts"), "c": (4, "nli")})
    dm = _module(
        tokenizer,
        {
            "a": {"files": str(folder / "a.jsonl"), "instruction": ""},  # "" switches the default off
            "b": str(folder / "b.jsonl"),
            "c": str(folder / "c.jsonl"),
        },
        instructions_by_type={"retrieval": "R:", "sts": "S:"},
    )
    parts = {p.name: p for p in dm.parts}
    assert parts["a"].instruction is None and parts["b"].instruction == "S:" and parts["c"].instruction is None
    queries = {s["task"]: s["query"] for s in _all_samples(dm)}
    assert queries["b"].startswith("S:") and not queries["a"].startswith(("R:", BGE_ZH))


def test_folder_makes_one_dataset_per_file_with_row_types(tmp_path, tokenizer):
    folder = write_mixture(tmp_path / "mix", {"qa": (5, "retrieval"), "sim": (7, "sts"), "cls": (6, "classification")})
    dm = _module(tokenizer, str(folder))
    parts = {p.name: p for p in dm.parts}
    assert [p.name for p in dm.parts] == ["cls", "qa", "sim"]  # sorted file order
    assert {n: p.type for n, p in parts.items()} == {"qa": "retrieval", "sim": "sts", "cls": "classification"}
    assert parts["qa"].instruction == BGE_ZH and parts["sim"].instruction is None
    assert not parts["cls"].in_batch_negatives and parts["qa"].in_batch_negatives and parts["sim"].in_batch_negatives


def test_type_errors_are_clear(tmp_path, tokenizer):
    mixed = make_rows(3, 0, "sts") + make_rows(3, 1, "nli")
    write_rows(tmp_path / "mixed.jsonl", mixed)
    with pytest.raises(ValueError, match=r"mixes task types \['nli', 'sts'\]"):
        _module(tokenizer, str(tmp_path / "mixed.jsonl"))
    write_rows(tmp_path / "untyped" / "u.jsonl", make_rows(3, 0, None))
    with pytest.raises(ValueError, match=r"no task type.*data.datasets.u.type"):
        _module(tokenizer, str(tmp_path / "untyped"))
    # a configured type wins over (or stands in for) the rows' field
    dm = _module(tokenizer, {"u": {"files": str(tmp_path / "untyped"), "type": "retrieval"}})
    assert dm.parts[0].instruction == BGE_ZH
    with pytest.raises(ValueError, match=r"in-batch negatives off, so it needs hard negatives"):
        _module(tokenizer, {"u": {"files": str(tmp_path / "untyped"), "type": "classification"}}, train_group_size=1)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['instrucion'\]"):
        LabeledDataModule(tokenizer, {"u": {"files": "x", "instrucion": "typo"}})


def test_bad_rows_name_file_and_line(tmp_path, tokenizer):
    rows = make_rows(4, 0, "sts")
    rows[2]["neg"] = []
    path = write_rows(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataFormatError, match=rf"{path}:3: field 'neg'.*ctem-mine") as err:
        _module(tokenizer, str(path))
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 3, "neg")
    dm = _module(tokenizer, str(path), on_bad_row="skip")
    assert dm.bad_rows.count == 1 and len(dm.train_dataset) == 3
    # a dataset whose rows have no negatives trains with its own group size of 1
    dm = _module(tokenizer, {"d": {"files": str(path), "train_group_size": 1}})
    assert len(dm.train_dataset) == 4 and all(len(s["passages"]) == 1 for s in _all_samples(dm))


# ------------------------------------------------------------------ batches
def test_batches_come_from_one_dataset_with_its_flag(tmp_path, tokenizer):
    folder = write_mixture(tmp_path, {"qa": (10, "retrieval"), "cls": (8, "classification"), "sim": (6, "sts")})
    dm = _module(tokenizer, str(folder), batch_size=2, train_group_size=2)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 5 + 4 + 3
    assert collections.Counter(b["task"] for b in batches) == {"qa": 5, "cls": 4, "sim": 3}
    for batch in batches:
        assert batch["in_batch_negatives"] == (batch["task"] != "cls")
        assert batch["query"]["input_ids"].shape[0] == 2 and batch["passages"]["input_ids"].shape[0] == 4
        assert batch["group_size"] == 2


def test_schedule_is_shared_by_ranks_and_seeded_by_epoch():
    sizes = [40, 24, 9]
    schedule = MixtureSchedule(["a", "b", "c"], sizes, [1.0, 2.0, 1.0], global_batch_size=8, seed=7)
    assert schedule.batches_per_dataset == [5, 6, 1]  # floor(w * n / 8)
    plan0 = schedule.plan()
    assert plan0 == schedule.plan()  # deterministic
    offsets = [0, 40, 64]
    for d, indices in plan0:
        assert len(indices) == 8 and all(offsets[d] <= i < offsets[d] + sizes[d] for i in indices)
        assert len(set(indices)) == 8
    # weight 1: every row at most once per epoch; weight 2 on b: every row of b twice
    b_rows = collections.Counter(i for d, idx in plan0 if d == 1 for i in idx)
    assert set(b_rows.values()) == {2} and len(b_rows) == 24
    samplers = [SameDatasetBatchSampler(schedule, 4, rank, 2) for rank in range(2)]
    per_rank = [list(s) for s in samplers]
    for step, (d, indices) in enumerate(plan0):
        halves = [[i for i, _ in per_rank[r][step]] for r in range(2)]
        assert halves[0] + halves[1] == indices  # ranks split the same global batch
    schedule.set_epoch(1)
    plan1 = schedule.plan()
    assert plan1 != plan0
    assert all(epoch == 1 for batch in samplers[0] for _, epoch in batch)


def test_round_robin_takes_turns_until_the_smallest_runs_out():
    schedule = MixtureSchedule(["a", "b", "c"], [30, 12, 3], [1, 1, 1], global_batch_size=4, sampling="round_robin")
    assert schedule.batches_per_dataset == [3, 3, 0]  # c has no full batch and is left out
    assert [d for d, _ in schedule.plan()] == [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="no dataset has a full batch"):
        MixtureSchedule(["a"], [3], [1], global_batch_size=4)


def test_lightning_set_epoch_reaches_the_schedule(tmp_path, tokenizer):
    folder = write_mixture(tmp_path, {"qa": (8, "retrieval"), "sim": (8, "sts")})
    dm = _module(tokenizer, str(folder))
    loader = dm.train_dataloader()
    _set_sampler_epoch(loader, 3)
    assert loader.batch_sampler.sampler.epoch == 3
    assert all(epoch == 3 for batch in loader.batch_sampler for _, epoch in batch)


# ------------------------------------------------------------------ negatives refresh
def test_set_negatives_replaces_in_mining_order_and_checks_everything_first(tmp_path, tokenizer):
    folder = write_mixture(tmp_path, {"a": (3, "retrieval"), "b": (2, "sts")})
    dm = _module(tokenizer, str(folder))
    rows = dm.mining_rows()
    assert len(rows) == 5
    new = [[f"新{i}"] for i in range(5)]
    dm.set_negatives(new)
    assert [r["neg"] for r in dm.mining_rows()] == new
    samples = _all_samples(dm)
    assert [s["passages"][1] for s in samples] == [n[0] for n in new]
    with pytest.raises(ValueError, match="got negatives for 4 rows, the data has 5"):
        dm.set_negatives(new[:4])
    with pytest.raises(ValueError, match=r"dataset 'b' \(rows 3..4\).*no negatives"):
        dm.set_negatives([["x"], ["y"], ["z"], ["w"], []])
    assert [r["neg"] for r in dm.mining_rows()] == new  # nothing half-applied


# ------------------------------------------------------------------ real data
SHARED = Path(os.environ.get("CTEM_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "train" / "labeled").is_dir(), reason="../shared/data/train/labeled is absent")
def test_shared_labeled_folder_loads_one_dataset_per_file(tokenizer, tmp_path):
    dm = _module(tokenizer, str(SHARED / "train" / "labeled"), train_group_size=1, batch_size=8, cache_dir=str(tmp_path))
    types = {p.name: p.type for p in dm.parts}
    assert types["kgclue"] == "retrieval" and types["atec"] == "sts" and types["ocnli"] == "nli"
    for part in dm.parts:
        expected = BGE_ZH if part.type == "retrieval" else None
        assert part.instruction == expected and part.in_batch_negatives
    batch = next(iter(dm.train_dataloader()))
    assert batch["query"]["input_ids"].shape[0] == 8 and batch["task"] in types
