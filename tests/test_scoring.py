"""``ctem-score``: teacher scores written into training rows, from a bi-encoder or a
cross-encoder folder; batched, atomic, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ctem.encoder import TextEncoder
from ctem.scoring import CrossEncoderTeacher, load_teacher, score_jsonl, teacher_kind
from tests.helpers.tiny import TINY_BERT, sentences

ROWS = [
    {"query": q, "pos": [p], "neg": [a, b], "id": i}
    for i, (q, p, a, b) in enumerate(zip(sentences(7, seed=1), sentences(7, seed=2), sentences(7, seed=3), sentences(7, seed=4)))
]
ROWS[2]["prompt"] = "问："


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory, tiny_vocab) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("reranker")
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(tiny_vocab))
    config = BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"}, vocab_size=len(tokenizer), num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bi_encoder_scores_are_dot_products(tiny_model, tmp_path) -> None:
    out = tmp_path / "scored.jsonl"
    teacher = load_teacher(str(tiny_model), batch_size=3)
    result = score_jsonl(teacher, str(write_rows(tmp_path / "in.jsonl", ROWS)), out, query_instruction="查：", rows_per_call=3)
    assert (result.rows, result.pairs) == (7, 21)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    encoder = TextEncoder.from_pretrained(tiny_model)
    for row, original in zip(written, ROWS):
        assert {k: v for k, v in row.items() if not k.endswith("_scores")} == original  # the rest unchanged
        query = (original.get("prompt") or "查：") + original["query"]
        q = encoder.encode([query], is_query=True)[0]
        p = encoder.encode([*original["pos"], *original["neg"]])
        np.testing.assert_allclose(row["pos_scores"] + row["neg_scores"], p @ q, rtol=1e-4, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "scored.jsonl"]  # no temporary left


def test_a_bi_encoder_embeds_each_text_once_across_calls(tiny_model) -> None:
    """Mined negatives are other rows' positives: over the calls of one scoring run each
    distinct passage is encoded once, and the scores are those of encoding afresh."""
    teacher = load_teacher(str(tiny_model), batch_size=3)
    encoded: list[str] = []
    encode = teacher.encoder.encode

    def counting(texts, **kwargs):
        encoded.extend(texts)
        return encode(texts, **kwargs)

    teacher.encoder.encode = counting
    queries, passages = sentences(4, seed=5), sentences(6, seed=6)
    first = teacher.score([queries[0]] * 6, passages)
    second = teacher.score(queries[1:] + [queries[0]], passages[3:] + passages[:1])
    assert sorted(encoded) == sorted(set(queries) | set(passages))  # each text once
    fresh = load_teacher(str(tiny_model), batch_size=3)
    np.testing.assert_allclose(second, fresh.score(queries[1:] + [queries[0]], passages[3:] + passages[:1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first, fresh.score([queries[0]] * 6, passages), rtol=1e-5, atol=1e-6)


def test_the_command_scores_with_the_teachers_recorded_instruction(tiny_model, tmp_path) -> None:
    """``ctem-score`` as its config runs it (in this process): a bi-encoder teacher scores
    queries with the instruction its folder records unless ``query_instruction`` is set."""
    from ctem.cli.score import run
    from tests.reliability.conftest import compose_command

    rows = write_rows(tmp_path / "in.jsonl", ROWS)
    cfg = compose_command("score", f"teacher={tiny_model}", f"input={rows}", f"output={tmp_path / 'scored.jsonl'}", "batch_size=4")
    result = run(cfg)
    assert (result.rows, result.pairs) == (7, 21)
    reference = score_jsonl(load_teacher(str(tiny_model)), str(rows), tmp_path / "reference.jsonl",
                            query_instruction=TextEncoder.from_pretrained(tiny_model).query_instruction)
    got, want = ([json.loads(line) for line in (tmp_path / name).read_text(encoding="utf-8").splitlines()] for name in ("scored.jsonl", "reference.jsonl"))
    for row, ref in zip(got, want, strict=True):  # equal up to the batches' float rounding
        assert {k: v for k, v in row.items() if not k.endswith("_scores")} == {k: v for k, v in ref.items() if not k.endswith("_scores")}
        np.testing.assert_allclose(row["pos_scores"] + row["neg_scores"], ref["pos_scores"] + ref["neg_scores"], atol=1e-5)


def test_cross_encoder_scores_are_its_logits(cross_encoder, tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert teacher_kind(cross_encoder) == "cross_encoder"
    teacher = load_teacher(str(cross_encoder), batch_size=4)
    assert isinstance(teacher, CrossEncoderTeacher)
    out = tmp_path / "scored.jsonl"
    score_jsonl(teacher, str(write_rows(tmp_path / "in.jsonl", ROWS)), out)
    model = AutoModelForSequenceClassification.from_pretrained(cross_encoder).eval()
    tokenizer = AutoTokenizer.from_pretrained(cross_encoder)
    row = json.loads(out.read_text(encoding="utf-8").splitlines()[2])
    passages = ROWS[2]["pos"] + ROWS[2]["neg"]
    with torch.no_grad():
        logits = model(**tokenizer(["问：" + ROWS[2]["query"]] * 3, passages, padding=True, return_tensors="pt")).logits[:, 0]
    np.testing.assert_allclose(row["pos_scores"] + row["neg_scores"], logits.numpy(), rtol=1e-4, atol=1e-5)


def test_scored_rows_train_with_distillation(tiny_model, tmp_path) -> None:
    """What ctem-score writes is what the pair data reads as teacher scores."""
    from ctem.data_modules import PairDataModule

    out = tmp_path / "scored.jsonl"
    score_jsonl(load_teacher(str(tiny_model)), str(write_rows(tmp_path / "in.jsonl", ROWS)), out)
    encoder = TextEncoder.from_pretrained(tiny_model)
    dm = PairDataModule(encoder.tokenizer, train_files=str(out), batch_size=2, train_group_size=3, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["teacher_scores"].shape == (2, 3)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ctem.cli.score", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _last(proc: subprocess.CompletedProcess) -> str:
    """The last line of stderr (model loading may print progress bars before it)."""
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_cli_errors_are_one_line(tiny_model, tmp_path) -> None:
    good = write_rows(tmp_path / "in.jsonl", ROWS)
    bad = write_rows(tmp_path / "bad.jsonl", [ROWS[0], {"query": "q", "pos": 3}])
    proc = _cli(f"teacher={tiny_model}", f"input={bad}", f"output={tmp_path / 'o.jsonl'}", cwd=tmp_path)
    assert proc.returncode == 1 and _last(proc) == f"ctem-score: error: {bad}:2: field 'pos': expected a string or a list of strings, got int"
    proc = _cli(f"teacher={tiny_model}", f"input={good}", f"output={good}", cwd=tmp_path)
    assert proc.returncode == 1 and _last(proc).startswith("ctem-score: error:") and "Traceback" not in proc.stderr
    proc = _cli(f"teacher={tiny_model}", f"input={good}", f"output={tmp_path / 'o.jsonl'}", "teacher_kind=reranker", cwd=tmp_path)
    assert proc.returncode == 1 and _last(proc) == "ctem-score: error: teacher_kind=reranker: must be auto, bi_encoder or cross_encoder"
    proc = _cli(f"teacher={tiny_model}", f"input={good}", f"output={tmp_path / 'o.jsonl'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "7 rows, 21 (query, passage) pairs scored" in proc.stdout


def test_mining_drops_the_scores_of_replaced_negatives(tiny_model, tmp_path) -> None:
    from ctem.mining import MiningConfig, mine_jsonl

    scored = tmp_path / "scored.jsonl"
    score_jsonl(load_teacher(str(tiny_model)), str(write_rows(tmp_path / "in.jsonl", ROWS)), scored)
    mined = tmp_path / "mined.jsonl"
    mine_jsonl(TextEncoder.from_pretrained(tiny_model), str(scored), mined, MiningConfig(range=(0, 10), negative_number=2, use_gpu=False))
    rows = [json.loads(line) for line in mined.read_text(encoding="utf-8").splitlines()]
    assert all("pos_scores" not in r and "neg_scores" not in r for r in rows)
