"""Curating curated output changes nothing; the Hydra command writes the documented files."""

from __future__ import annotations

import json
import random

import numpy as np
from hydra import compose, initialize_config_dir

from ctem.cli.curate import run
from ctem.config import config_dir, register_resolvers
from ctem.curation import Decontaminator, DedupSettings, PairScorer, curate
from tests.curation_helpers import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.curation_helpers import random_text, write_jsonl
from tests.helpers.tiny import TEST_CHARS, tiny_encoder, write_vocab


def _vocab_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(TEST_CHARS) for _ in range(length))


def _training_files(root, rng):
    """Two files with duplicates within and across files, a planted eval text and a bad row."""
    rows_a = [{"query": _vocab_text(rng, 6), "pos": [_vocab_text(rng, rng.randint(10, 40))], "neg": [], "i": i} for i in range(40)]
    rows_a.append(dict(rows_a[3], i=40))  # exact duplicate
    rows_a.append({"query": rows_a[5]["query"], "pos": [rows_a[5]["pos"][0], _vocab_text(rng, 30)], "neg": ["负例"], "i": 41})
    rows_b = [{"query": _vocab_text(rng, 6), "pos": _vocab_text(rng, 25), "type": "retrieval", "i": 100 + i} for i in range(20)]
    rows_b.append(dict(rows_a[7], i=120))  # duplicate across files
    rows_b.append({"query": "评测里的句子出现在训练数据", "pos": [_vocab_text(rng, 20)], "i": 121})
    rows_b.append('{"query": "坏行"}')
    write_jsonl(root / "in" / "a.jsonl", rows_a)
    write_jsonl(root / "in" / "b.jsonl", rows_b)
    write_jsonl(root / "eval" / "T" / "test.jsonl", [{"sentence1": "评测里的句子出现在训练数据", "sentence2": "别的", "score": 1}])


def test_curating_twice_changes_nothing(tmp_path):
    rng = random.Random(0)
    _training_files(tmp_path, rng)
    scorer = PairScorer(tiny_encoder(write_vocab(tmp_path), initializer_range=0.5), batch_size=4, device="cpu")
    probe = [r for r in map(json.loads, (tmp_path / "in" / "a.jsonl").read_text(encoding="utf-8").splitlines())]
    median = float(np.median(scorer.score([r["query"] for r in probe], [r["pos"][0] for r in probe])))

    def run_once(src, out):
        return curate(
            [str(src / "a.jsonl"), str(src / "b.jsonl")], out, scorer=scorer, threshold=round(median, 4),
            dedup=DedupSettings(min_chars=5), decontaminator=Decontaminator.from_task_dirs(str(tmp_path / "eval")),
            on_bad_row="skip", rows_per_batch=7, show_progress=False,
        )

    first = run_once(tmp_path / "in", tmp_path / "once")
    t = first.total
    assert t.rows_removed["low_score"] > 5 and t.rows_removed["exact_duplicate"] == 2
    assert t.rows_removed["contaminated"] == 1 and t.rows_removed["bad_row"] == 1
    second = run_once(tmp_path / "once", tmp_path / "twice")
    assert second.total.rows_in == second.total.rows_out == t.rows_out
    for name in ("a.jsonl", "b.jsonl"):
        assert (tmp_path / "once" / name).read_bytes() == (tmp_path / "twice" / name).read_bytes()
    kept = [json.loads(line) for line in (tmp_path / "once" / "b.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(r["pos"], str) and r["type"] == "retrieval" for r in kept if r["i"] < 120)


def test_ctem_curate_command_writes_files_and_report(tmp_path):
    rng = random.Random(1)
    rows = [{"query": random_text(rng, 6), "pos": [random_text(rng, 30)], "neg": []} for _ in range(12)]
    rows.append(rows[0])
    write_jsonl(tmp_path / "in" / "pairs.jsonl", rows)
    encoder = tiny_encoder(write_vocab(tmp_path))
    encoder.save_pretrained(tmp_path / "model")
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            config_name="curate",
            overrides=[
                f"input_files=[{tmp_path / 'in'}]",
                f"output_dir={tmp_path / 'out'}",
                f"scorer.model_path={tmp_path / 'model'}",
                "scorer.device=cpu",
                "threshold=-1.0",
                "progress=false",
            ],
        )
    report = run(cfg)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["pairs.jsonl", "report.json", "report.md", "score_hist.png"]
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved["total"]["rows_in"] == 13 and saved["total"]["rows_out"] == 12
    assert saved["total"]["rows_removed"]["exact_duplicate"] == 1
    assert sum(saved["scores"]["histogram"]["counts"]) == 12 == report.scores.total
    assert saved["settings"]["threshold"] == -1.0
    assert "| pairs.jsonl | 13 |" in (out / "report.md").read_text(encoding="utf-8")
    assert (out / "score_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
