"""Curation on datatrove stages: the sorted keep-first decisions equal the streaming
``PairDeduplicator``'s, and any number of tasks and workers gives the one-task output."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from datasketch import MinHash

from ctem.curation import DedupSettings, PairDeduplicator, curate
from ctem.curation.engine import EXACT, KEPT, NEAR, CurationPlan, duplicate_reasons, plan_segments, segment_rows, sign_task
from ctem.curation.minhash import MinHasher
from ctem.curation.pipeline import validate_curation_row
from tests.curation_helpers import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.curation_helpers import random_text, write_jsonl

WORDS = [f"w{i}" for i in range(300)]
STREAM_CODES = {None: KEPT, "exact_duplicate": EXACT, "near_duplicate": NEAR}


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _edit(rng: random.Random, text: str) -> str:
    """``text`` with one word replaced (word 3-gram Jaccard about 0.9: a near duplicate)."""
    words = text.split()
    words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def _messy_rows(seed: int, n: int = 400) -> list[dict]:
    """Rows full of collisions: exact and near repeats of earlier queries and positives,
    alone and together, short texts (exact matching only), several positives per row, and
    Chinese rows (character n-grams)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for i in range(n):
        kind = rng.random()
        if rows and kind < 0.5:
            old = rng.choice(rows)
            query = old["query"] if rng.random() < 0.5 else _edit(rng, old["query"]) if len(old["query"]) > 30 else old["query"]
            pos = old["pos"][0] if rng.random() < 0.4 else _edit(rng, old["pos"][0]) if rng.random() < 0.7 else _text(rng, 40)
            positives = [pos] + ([_text(rng, 30)] if rng.random() < 0.2 else [])
        elif kind < 0.6:
            query, positives = rng.choice(["hi", "ok", "yes"]), [rng.choice(["a b", "c d", _text(rng, 25)])]
        elif kind < 0.7:
            query, positives = random_text(rng, 12), [random_text(rng, 40)]
        else:
            query, positives = _text(rng, 12), [_text(rng, 40) for _ in range(rng.choice([1, 1, 2, 3]))]
        rows.append({"query": query, "pos": positives, "id": i})
    return rows


def _streaming_codes(rows: list[dict], dedup: DedupSettings) -> list[int]:
    stream = PairDeduplicator(exact=dedup.exact, near=dedup.near, threshold=dedup.threshold, ngram=dedup.ngram,
                              num_perm=dedup.num_perm, min_chars=dedup.min_chars, seed=dedup.seed)  # fmt: skip
    return [STREAM_CODES[stream.check(r["query"], p)] for r in rows for p in r["pos"]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dedup", [DedupSettings(), DedupSettings(exact=False), DedupSettings(near=False), DedupSettings(threshold=0.5, ngram=2)])
def test_sorted_decisions_equal_the_streaming_deduplicator(tmp_path, seed, dedup):
    rows = _messy_rows(seed)
    path = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    plan = CurationPlan(files=[path], segments=plan_segments([path], 1), work_dir=str(tmp_path), validate=validate_curation_row, dedup=dedup)
    reasons = duplicate_reasons(sign_task(plan, 0), dedup).tolist()
    expected = _streaming_codes(rows, dedup)
    assert reasons == expected
    assert expected.count(NEAR) > 10 or not dedup.near  # the data does exercise near matching
    assert expected.count(EXACT) > 10 or not dedup.exact


def test_segments_cover_every_line_once_in_order(tmp_path):
    rows = [{"query": f"q{i}" + "x" * (i % 17), "pos": [f"p{i}"]} for i in range(100)]
    files = [str(write_jsonl(tmp_path / "a.jsonl", rows[:37])), str(write_jsonl(tmp_path / "b.jsonl", rows[37:]))]
    (tmp_path / "a.jsonl").write_text((tmp_path / "a.jsonl").read_text() + "\n\n", encoding="utf-8")  # blank lines
    for tasks in (1, 2, 3, 7, 150):
        plan = plan_segments(files, tasks)
        assert len(plan) == tasks
        read = [(r["source"], r["line"], r["query"]) for segments in plan for s in segments
                for r in segment_rows(files[s.file], s, validate_curation_row)]  # fmt: skip
        assert [q for *_, q in read] == [r["query"] for r in rows]
        assert [line for src, line, _ in read if src == files[0]] == list(range(1, 38))
        assert [line for src, line, _ in read if src == files[1]] == list(range(1, 64))


def test_batched_signatures_equal_datasketch():
    rng = random.Random(3)
    hasher = MinHasher(128, 1)
    sets = [{_text(rng, 1) + _text(rng, 1) for _ in range(rng.randint(0, 60))} for _ in range(50)]
    signatures = hasher.signatures(sets)
    for grams, values in zip(sets, signatures):
        reference = MinHash(num_perm=128, seed=1)
        reference.update_batch([g.encode("utf-8") for g in grams])
        np.testing.assert_array_equal(values, reference.hashvalues)
        assert np.array_equal(hasher.signature(grams).hashvalues, reference.hashvalues)


def _curated(tmp_path, name: str, files: list[str], **kwargs) -> tuple[dict[str, bytes], dict]:
    out = tmp_path / name
    report = curate(files, out, dedup=DedupSettings(), on_bad_row="skip", show_progress=False, **kwargs)
    outputs = {f.name: f.read_bytes() for f in out.iterdir() if f.suffix == ".jsonl"}
    summary = report.to_dict()
    summary.pop("seconds")
    for stats in summary["files"]:
        stats.pop("output")  # the output folder's name
    return outputs, summary


def _two_files(tmp_path) -> list[str]:
    rows = _messy_rows(5, 300)
    first = write_jsonl(tmp_path / "in" / "a.jsonl", rows[:120])
    with open(first, "a", encoding="utf-8") as handle:
        handle.write('{"query": "", "pos": ["x"]}\n')  # a bad row, skipped and counted
    return [str(first), str(write_jsonl(tmp_path / "in" / "b.jsonl", rows[120:]))]


def test_any_number_of_tasks_gives_the_one_task_output(tmp_path):
    files = _two_files(tmp_path)
    one = _curated(tmp_path, "one", files)
    assert one[1]["total"]["pairs_removed"]["near_duplicate"] > 0 and one[1]["total"]["rows_removed"]["bad_row"] == 1
    for tasks in (2, 5):
        assert _curated(tmp_path, f"tasks{tasks}", files, tasks=tasks) == one


@pytest.mark.slow
def test_worker_processes_give_the_one_process_output(tmp_path):
    files = _two_files(tmp_path)
    one = _curated(tmp_path, "one", files)
    assert _curated(tmp_path, "workers", files, tasks=3, workers=2) == one
    kept = [json.loads(line) for line in one[0]["b.jsonl"].decode("utf-8").splitlines()]
    assert kept and all("id" in row for row in kept)


@pytest.mark.slow
def test_slurm_job_arrays_give_the_one_process_output(tmp_path, monkeypatch):
    """engine.executor=slurm: each stage a job array submitted with sbatch --wait (a local
    stand-in for sbatch runs the array's tasks), the same output as one process."""
    from ctem.curation.engine import SlurmSettings
    from tests.helpers import fake_slurm

    files = _two_files(tmp_path)
    one = _curated(tmp_path, "one", files)
    for key, value in fake_slurm.environment(fake_slurm.install(tmp_path / "slurm")).items():
        monkeypatch.setenv(key, value)
    assert _curated(tmp_path, "slurm", files, tasks=3, workers=3, slurm=SlurmSettings(partition="cpu")) == one
    script = next((tmp_path / "slurm").glob("jobs")).read_text()
    assert int(script) >= 3  # one array per stage (and datatrove's stats jobs)


@pytest.mark.slow
def test_a_failed_slurm_task_is_one_line(tmp_path, monkeypatch):
    from ctem.curation.engine import SlurmSettings, StageFailed
    from tests.helpers import fake_slurm

    files = _two_files(tmp_path)
    for key, value in fake_slurm.environment(fake_slurm.install(tmp_path / "slurm")).items():
        monkeypatch.setenv(key, value)
    broken = SlurmSettings(partition="cpu", env_command="exit 3")  # every job fails before it starts
    with pytest.raises(StageFailed, match=r"stage sign: sbatch exited with status 3; logs in .*logs/sign"):
        curate(files, tmp_path / "out", dedup=DedupSettings(), on_bad_row="skip", show_progress=False, tasks=2, slurm=broken)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("override, message", [
    ("engine.executor=ray", "engine.executor=ray: must be one of local, slurm"),
    ("engine.workers=0", "engine.workers=0: must be a whole number of at least 1"),
    ("engine.tasks=2.5", "engine.tasks=2.5: must be a whole number of at least 1"),
])  # fmt: skip
def test_engine_settings_are_refused_before_any_work(tmp_path, override, message):
    from hydra import compose, initialize_config_dir

    from ctem.cli.curate import run
    from ctem.config import config_dir, register_resolvers
    from ctem.settings import SettingError

    src = write_jsonl(tmp_path / "in" / "a.jsonl", [{"query": "q", "pos": ["p"]}])
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="curate", overrides=[f"input_files=[{src}]", f"output_dir={tmp_path / 'out'}", override])
    with pytest.raises(SettingError, match=message.replace(".", r"\.")):
        run(cfg)
    assert not (tmp_path / "out").exists()
