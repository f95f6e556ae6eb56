"""bench/baselines/tfidf_lsa.py: a tiny end-to-end run, bad input, and its settings."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "baselines" / "tfidf_lsa.py"
WORDS = ["苹果", "香蕉", "天气", "下雨", "银行", "贷款", "电影", "音乐", "足球", "篮球", "手机", "电脑"]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tfidf_lsa", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_task(root: Path, name: str, task_type: str, files: dict[str, list[dict]]) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps({"name": name, "type": task_type}), encoding="utf-8")
    for file_name, rows in files.items():
        write_jsonl(folder / file_name, rows)


def make_tasks(root: Path) -> Path:
    """An STS, a retrieval and a pair-classification task on the WORDS vocabulary."""
    sts = []
    for i, w in enumerate(WORDS):
        sts.append({"sentence1": f"我喜欢{w}", "sentence2": f"我很喜欢{w}", "score": 5.0})
        sts.append({"sentence1": f"我喜欢{w}", "sentence2": f"今天{WORDS[(i + 5) % len(WORDS)]}很好", "score": float(i % 3)})
    make_task(root, "TinySTS", "STS", {"test.jsonl": sts})
    make_task(root, "TinyRetrieval", "Retrieval", {
        "corpus.jsonl": [{"id": f"d{i}", "text": f"关于{w}的一篇文章，{w}很常见。"} for i, w in enumerate(WORDS)],
        "queries.jsonl": [{"id": f"q{i}", "text": f"什么是{w}"} for i, w in enumerate(WORDS)],
        "qrels.jsonl": [{"qid": f"q{i}", "pid": f"d{i}", "score": 1} for i in range(len(WORDS))],
    })
    pairs = [{"sentence1": f"{w}怎么样", "sentence2": f"{w}好不好", "label": 1} for w in WORDS]
    pairs += [{"sentence1": f"{w}怎么样", "sentence2": f"{WORDS[(i + 3) % len(WORDS)]}在哪里", "label": 0} for i, w in enumerate(WORDS)]
    make_task(root, "TinyPairs", "PairClassification", {"test.jsonl": pairs})
    return root


def make_corpus(path: Path) -> Path:
    templates = ["我喜欢{}", "关于{}的一篇文章", "今天{}很好", "{}怎么样", "{}在哪里", "什么是{}", "{}好不好"]
    write_jsonl(path, [{"text": t.format(w)} for w in WORDS for t in templates])
    return path


def test_tiny_run_writes_finite_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load_script()
    corpus = make_corpus(tmp_path / "corpus.jsonl")
    tasks = make_tasks(tmp_path / "tasks")
    out = tmp_path / "out"
    status = module.main(["--corpus", str(corpus), "--tasks-dir", str(tasks), "--output-dir", str(out), "--dim", "8"])
    assert status == 0
    printed = capsys.readouterr().out

    for name in ("TinySTS", "TinyRetrieval", "TinyPairs"):
        record = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert record["model"] == "tfidf-lsa-8"
        assert record["instruction"] is None
        assert math.isfinite(record["main_score"]) and 0.0 <= record["main_score"] <= 1.0
        assert f"[tfidf_lsa] {name}" in printed
    for file_name in ("summary.md", "summary.csv", "tasks.csv"):
        assert (out / file_name).is_file()
    header, row = list(csv.reader((out / "summary.csv").open(encoding="utf-8")))
    assert row[:2] == ["tfidf-lsa-8", "8"]
    assert header[-1] == "Avg (3)"
    scores = {h: float(v) for h, v in zip(header[2:], row[2:]) if v != "-"}
    assert set(scores) == {"Retrieval (1)", "STS (1)", "Pair CLF (1)", "Avg (3)"}
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in scores.values())
    # Queries and their documents share their word: the LSA space must rank them well.
    assert scores["Retrieval (1)"] > 50.0
    assert "fit time" in printed and "eval time" in printed


@pytest.mark.parametrize("case", ["missing", "empty", "bad-row"])
def test_bad_corpus_is_one_line_and_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    module = load_script()
    corpus = tmp_path / "corpus.jsonl"
    if case == "empty":
        corpus.write_text("\n", encoding="utf-8")
    elif case == "bad-row":
        corpus.write_text('{"text": "好"}\n{"body": "坏"}\n', encoding="utf-8")
    tasks = make_tasks(tmp_path / "tasks")
    status = module.main(["--corpus", str(corpus), "--tasks-dir", str(tasks), "--output-dir", str(tmp_path / "out"), "--dim", "8"])
    assert status == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"tfidf_lsa: {corpus}")
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_missing_corpus_subprocess_exit_status(tmp_path: Path) -> None:
    import subprocess
    import sys

    tasks = make_tasks(tmp_path / "tasks")
    missing = tmp_path / "nope.jsonl"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--corpus", str(missing), "--tasks-dir", str(tasks), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"tfidf_lsa: {missing}: file not found"


def test_eval_settings_defaults_match_conf_eval_settings() -> None:
    """The script relies on EvalSettings' defaults being what ctem-eval runs with."""
    import dataclasses

    from omegaconf import OmegaConf

    from ctem.evaluation import EvalSettings

    conf = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "eval_settings" / "default.yaml"))
    defaults = EvalSettings(instructions=False)
    for key in (f.name for f in dataclasses.fields(EvalSettings) if f.name not in ("instructions", "query_instruction")):
        value = conf[key]
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(defaults, key) == expected, key
