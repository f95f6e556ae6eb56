"""A task folder that would be scored wrongly, or not at all, is refused with one line naming
the file and line before anything is encoded: a repeated query id (its copies scored as if
each were a query: 100.00), one (query, passage) pair graded twice with different grades, a
``main_score`` that is no score of the task's type (found only after encoding and scoring),
a selected task that does not exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctem.cli import error_message
from ctem.evaluation import CMTEBEvaluator, EvalSettings, TaskFormatError, load_local_tasks
from ctem.evaluation.runner import evaluate_task, score_names
from tests.reliability.conftest import hashed_encode, run_command
from tests.reliability.probes import command_error, sts_task


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def retrieval_task(root: Path, queries: list[str], qrels: list[tuple[str, str, int]]) -> Path:
    """A folder of tasks holding one retrieval task ``TinyRetrieval`` with passages p1..p3."""
    folder = root / "tasks" / "TinyRetrieval"
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps({"name": "TinyRetrieval", "type": "Retrieval"}), encoding="utf-8")
    write_jsonl(folder / "corpus.jsonl", [{"id": f"p{i}", "text": f"段落{i}"} for i in (1, 2, 3)])
    write_jsonl(folder / "queries.jsonl", [{"id": q, "text": f"问题{q}"} for q in queries])
    write_jsonl(folder / "qrels.jsonl", [{"qid": q, "pid": p, "score": s} for q, p, s in qrels])
    return folder.parent


def test_a_repeated_query_id_is_refused(tmp_path) -> None:
    root = retrieval_task(tmp_path, ["q1", "q2", "q1"], [("q1", "p1", 1), ("q2", "p2", 1)])
    with pytest.raises(TaskFormatError) as raised:
        load_local_tasks(root)
    assert str(raised.value) == f"{root / 'TinyRetrieval' / 'queries.jsonl'}:3: field 'id': duplicate id 'q1'"


def test_a_pair_graded_twice_differently_is_refused_and_twice_alike_is_not(tmp_path) -> None:
    root = retrieval_task(tmp_path / "a", ["q1"], [("q1", "p1", 1), ("q1", "p2", 0), ("q1", "p1", 2)])
    with pytest.raises(TaskFormatError) as raised:
        load_local_tasks(root)
    assert str(raised.value) == (f"{root / 'TinyRetrieval' / 'qrels.jsonl'}:3: field 'score': "
                                 "('q1', 'p1') is graded 1 on an earlier line and 2 here")
    same = retrieval_task(tmp_path / "b", ["q1"], [("q1", "p1", 1), ("q1", "p1", 1)])
    assert load_local_tasks(same)[0].data.qrels == {"q1": {"p1": 1}}


def test_an_unknown_main_score_is_refused_before_anything_is_encoded(tmp_path) -> None:
    root = sts_task(tmp_path)
    (root / "TinySTS" / "task.json").write_text(json.dumps({"name": "TinySTS", "type": "STS", "main_score": "cosine_spearmann"}))
    tasks = load_local_tasks(root)

    def encode(*args, **kwargs):
        raise AssertionError("encoded before the main score was checked")

    with pytest.raises(TaskFormatError, match=r"task TinySTS \(.*TinySTS\): main_score 'cosine_spearmann' is not a score of STS tasks; known: \["):
        CMTEBEvaluator(tasks).run(encode)


def test_a_main_score_the_cut_offs_leave_out_names_them(tmp_path) -> None:
    tasks = load_local_tasks(retrieval_task(tmp_path, ["q1"], [("q1", "p1", 1)]))  # main score ndcg_at_10
    with pytest.raises(TaskFormatError, match=r"main_score 'ndcg_at_10' is not a score of Retrieval tasks with k_values=\[1, 5\]; known: "):
        CMTEBEvaluator(tasks, EvalSettings(k_values=(1, 5)))


@pytest.mark.parametrize("k_values", [(1, 3), (10,)])
def test_the_known_scores_are_the_scores_the_evaluators_give(tmp_path, k_values) -> None:
    settings = EvalSettings(k_values=k_values)
    tasks = load_local_tasks(sts_task(tmp_path / "s")) + load_local_tasks(retrieval_task(tmp_path / "r", ["q1", "q2"], [("q1", "p1", 1), ("q2", "p3", 1)]))
    for task in tasks:
        assert set(evaluate_task(hashed_encode, task, settings)) == score_names(task.type, settings)


def test_a_task_selected_that_does_not_exist_is_one_line(tmp_path) -> None:
    root = sts_task(tmp_path)
    for names, types in ((["Nope"], None), (None, ["NoType"])):
        with pytest.raises(TaskFormatError) as raised:
            load_local_tasks(root, names, types)
        assert error_message("ctem-eval", raised.value).startswith("ctem-eval: error: ")


@pytest.mark.slow
def test_ctem_eval_refuses_a_bad_task_before_loading_the_model(tmp_path) -> None:
    root = retrieval_task(tmp_path, ["q1", "q1"], [("q1", "p1", 1)])
    proc = run_command("ctem.cli.eval", f"model_path={tmp_path / 'no_model'}", f"tasks_dir={root}", f"output_dir={tmp_path / 'out'}",
                       f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert command_error(proc, "ctem-eval") == f"ctem-eval: error: {root / 'TinyRetrieval' / 'queries.jsonl'}:2: field 'id': duplicate id 'q1'"
    assert not (tmp_path / "out").exists()
