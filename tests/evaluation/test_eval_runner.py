"""Runner, instruction routing, reports, the TextEncoder adapter and ``ctem-eval``."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_helpers import bag_of_chars, make_tiny_encoder, make_tiny_tasks  # noqa: E402

from ctem.evaluation import (  # noqa: E402
    CMTEBEvaluator,
    EncoderAdapter,
    EvalSettings,
    averages,
    load_local_tasks,
    write_summary,
    write_task_json,
)
from ctem.evaluation.data import RerankingData, SentencePairs  # noqa: E402
from ctem.evaluation.tasks import Task  # noqa: E402
from ctem.instructions import BGE_ZH  # noqa: E402



class Recorder:
    """An encode function that remembers which instruction each call used."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []

    def __call__(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        self.calls.append((len(texts), instruction))
        return bag_of_chars(texts, instruction)


def small_tasks() -> list[Task]:
    pairs = SentencePairs(["天气很好", "我爱音乐", "银行贷款"], ["天气不错", "我爱电影", "足球比赛"], [4.0, 3.0, 0.0])
    rerank = RerankingData(["天气"], [["今天天气很好"]], [["我喜欢足球", "银行"]])
    return [Task("P", "STS", "cosine_spearman", pairs, "mem"), Task("R", "Reranking", "map", rerank, "mem")]


def test_instructions_only_on_retrieval_and_reranking_queries() -> None:
    rec = Recorder()
    CMTEBEvaluator(small_tasks(), EvalSettings(query_instruction="bge_zh")).run(rec)
    assert [i for _, i in rec.calls] == [None, None, BGE_ZH]  # STS, passages, queries
    rec = Recorder()
    CMTEBEvaluator(small_tasks(), EvalSettings(instructions=False)).run(rec)
    assert all(i is None for _, i in rec.calls)
    rec = Recorder()
    CMTEBEvaluator(small_tasks(), EvalSettings(task_instructions={"R": "查询：", "P": "句子："})).run(rec)
    assert [i for _, i in rec.calls] == ["句子：", None, "查询："]


@pytest.mark.parametrize(
    ("override", "recorded", "expected"),
    [(None, "", None), (None, None, None), (None, "查询：", "查询："), ("bge_zh", "", BGE_ZH), ("none", "查询：", None), ("问：", "查询：", "问：")],
)
def test_model_recorded_instruction_unless_overridden(override, recorded, expected) -> None:
    rec = Recorder()
    CMTEBEvaluator(small_tasks(), EvalSettings(query_instruction=override).for_model(recorded)).run(rec)
    assert [i for _, i in rec.calls] == [None, None, expected]


def test_runner_averages_and_reports(tmp_path: Path) -> None:
    tasks = load_local_tasks(make_tiny_tasks(tmp_path / "tasks"))
    results = CMTEBEvaluator(tasks).run(bag_of_chars)
    by_name = {r.task: r for r in results}
    assert by_name["TinyRetrieval"].main_score > 0.5  # queries share characters with their documents
    avg = averages(results)
    assert avg["average"] == pytest.approx(np.mean([r.main_score for r in results]))
    assert set(avg) == {"Retrieval", "STS", "average"}
    out = tmp_path / "out"
    path = write_task_json(results[0], out, "bag", "0.1.0")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert {"task", "type", "main_score", "scores", "seconds", "model", "ctem_version"} <= set(record)
    markdown = write_summary(results, out, "bag", 64)
    assert "| Model | Dim | Retrieval (1) | STS (1) | Pair CLF (0) | CLF (0) | Re-rank (0) | Cluster (0) | Avg (2) |" in markdown
    rows = list(csv.reader((out / "summary.csv").open(encoding="utf-8")))
    assert rows[1][0] == "bag" and float(rows[1][-1]) == pytest.approx(100 * avg["average"], abs=0.006)


def test_encoder_adapter_matches_encode_caches_and_restores_mode() -> None:
    encoder = make_tiny_encoder()
    encoder.train()
    texts = ["短", "一个长一点的句子，有很多字。", "中等长度的句子", "短"]
    adapter = EncoderAdapter(encoder, batch_size=2)
    emb = adapter(texts, "指令：")
    expected = encoder.encode(texts, instruction="指令：", max_length=encoder.passage_max_length)
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    assert encoder.training  # mode restored
    calls = []
    original = encoder.tokenize
    encoder.tokenize = lambda t, m: calls.append(1) or original(t, m)  # type: ignore[method-assign]
    np.testing.assert_allclose(adapter(texts, "指令："), emb, atol=1e-6)
    assert not calls  # tokenisation came from the cache
    adapter(texts)
    assert calls  # a different instruction is a different text list
    np.testing.assert_allclose(adapter(texts, is_query=True), encoder.encode(texts, is_query=True), atol=1e-5)
    long = ["一个长一点的句子，有很多字。" * 20]
    assert not np.allclose(adapter(long, is_query=True), adapter(long), atol=1e-4)  # the query limit is shorter


def test_encoder_adapter_sharding_splits_the_work() -> None:
    encoder = make_tiny_encoder()
    texts = [f"第{i}个句子" + "字" * (i % 7) for i in range(11)]
    full = EncoderAdapter(encoder, batch_size=4)(texts)
    padded: dict[int, torch.Tensor] = {}  # each rank's share as it enters the all-gather

    def gather_of(rank: int):  # both ranks' shares, computed in this process
        def gather(tensor: torch.Tensor) -> torch.Tensor:
            padded[rank] = tensor
            other = padded.get(1 - rank, torch.zeros_like(tensor))
            return torch.stack([tensor, other] if rank == 0 else [other, tensor])

        return gather

    adapters = [EncoderAdapter(encoder, batch_size=4, rank=r, world_size=2, all_gather=gather_of(r)) for r in (0, 1)]
    adapters[1](texts)  # records rank 1's share (its own result lacks rank 0's)
    out = adapters[0](texts)
    np.testing.assert_allclose(out, full, atol=1e-5)
    assert [a.texts_encoded for a in adapters] == [6, 5]  # each rank encoded only its share


def test_ctem_eval_cli_writes_jsons_and_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hydra import compose, initialize_config_dir

    from ctem.cli.eval import run
    from ctem.config import config_dir, register_resolvers

    model_dir = make_tiny_encoder().save_pretrained(tmp_path / "model")
    tasks_dir = make_tiny_tasks(tmp_path / "tasks")
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"model_path={model_dir}",
                f"tasks_dir={tasks_dir}",
                f"output_dir={tmp_path / 'out'}",
                "eval.tasks=[TinySTS]",
                "eval.instructions=false",
                "eval.batch_size=8",
                "progress=false",
            ],
        )
        results = run(cfg)
    assert [r.task for r in results] == ["TinySTS"]
    assert (tmp_path / "out" / "TinySTS.json").is_file()
    assert (tmp_path / "out" / "summary.md").is_file() and (tmp_path / "out" / "summary.csv").is_file()
    assert "| Model | Dim |" in capsys.readouterr().out
