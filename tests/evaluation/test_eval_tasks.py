"""Local task folders (format, errors naming file:line:field) and the official registry."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from ctem.evaluation import CMTEB_TASKS, MTEB_EN_TASKS, TaskFormatError, load_local_task, load_local_tasks, select_local_tasks
from ctem.evaluation import registry
from ctem.evaluation.data import RetrievalData
from ctem.evaluation.tasks import TaskDataError
from ctem.rows import DataFormatError

SHARED = Path(os.environ.get("CTEM_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
DEV = SHARED / "eval" / "cmteb-dev"
EN_DEV = SHARED / "en" / "eval" / "mteb-en-dev"


def write_task(root: Path, name: str, task_type: str, files: dict[str, list]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps({"name": name, "type": task_type}), encoding="utf-8")
    for file, rows in files.items():
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
        (folder / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_load_each_type(tmp_path: Path) -> None:
    pair = {"sentence1": "a", "sentence2": "b"}
    write_task(tmp_path, "S", "STS", {"test.jsonl": [{**pair, "score": 1.5}, {**pair, "score": 4}]})
    write_task(tmp_path, "P", "PairClassification", {"test.jsonl": [{**pair, "label": 1}, {**pair, "label": 0}]})
    labelled = [{"text": "x", "label": "pos"}, {"text": "z", "label": "neg"}]
    write_task(tmp_path, "C", "Classification", {"train.jsonl": labelled, "test.jsonl": [{"text": "y", "label": "neg"}]})
    write_task(tmp_path, "K", "Clustering", {"test.jsonl": [{"text": "x", "label": 0}, {"text": "y", "label": 1}]})
    write_task(tmp_path, "R", "Reranking", {"test.jsonl": [{"query": "q", "positive": ["p"], "negative": ["n1", "n2"]}]})
    write_task(
        tmp_path,
        "T",
        "Retrieval",
        {
            "corpus.jsonl": [{"id": "d1", "text": "doc", "title": "t"}, {"id": "d2", "text": "doc2"}],
            "queries.jsonl": [{"id": "q1", "text": "query"}, {"id": "q2", "text": "unjudged"}],
            "qrels.jsonl": [{"qid": "q1", "pid": "d2", "score": 1}],
        },
    )
    tasks = load_local_tasks(tmp_path)
    assert [t.type for t in tasks] == ["Retrieval", "STS", "PairClassification", "Classification", "Reranking", "Clustering"]
    retrieval = tasks[0].data
    assert isinstance(retrieval, RetrievalData)
    assert retrieval.qrels == {"q1": {"d2": 1}} and retrieval.corpus_titles == ["t", ""]
    assert [t.main_score for t in tasks] == ["ndcg_at_10", "cosine_spearman", "ap", "accuracy", "map", "v_measure"]
    assert [t.name for t in load_local_tasks(tmp_path, types=["STS", "Clustering"])] == ["S", "K"]
    assert [t.name for t in load_local_tasks(tmp_path, names=["C", "S"])] == ["S", "C"]


@pytest.mark.parametrize(
    ("task_type", "files", "message"),
    [
        ("STS", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "score": 1}, {"sentence1": "a", "score": 1}]}, r"test.jsonl:2: field 'sentence2': missing"),
        ("STS", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "score": "high"}]}, r"test.jsonl:1: field 'score': expected int or float, got str"),
        ("PairClassification", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "label": 2}]}, r"test.jsonl:1: field 'label': expected 0 or 1"),
        ("Clustering", {"test.jsonl": ["{not json"]}, r"test.jsonl:1: invalid JSON"),
        ("Reranking", {"test.jsonl": [{"query": "q", "positive": "p", "negative": []}]}, r"test.jsonl:1: field 'positive': expected list"),
        ("Classification", {"train.jsonl": [{"text": "x", "label": 1}]}, r"test.jsonl: file not found"),
        (
            "Retrieval",
            {
                "corpus.jsonl": [{"id": "d1", "text": "x"}],
                "queries.jsonl": [{"id": "q1", "text": "y"}],
                "qrels.jsonl": [{"qid": "q1", "pid": "d1", "score": 1}, {"qid": "q1", "pid": "d9", "score": 1}],
            },
            r"qrels.jsonl:2: field 'pid': unknown corpus id 'd9'",
        ),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path: Path, task_type: str, files: dict, message: str) -> None:
    folder = write_task(tmp_path, "Bad", task_type, files)
    with pytest.raises(TaskFormatError, match=message):
        load_local_task(folder)


@pytest.mark.parametrize(
    ("row", "line", "field", "problem"),
    [
        ("{not json", 2, None, "invalid JSON"),  # parsed by ctem.rows, reported as a task error
        ({"sentence1": "a", "score": 1}, 2, "sentence2", "missing"),
        ({"sentence1": "a", "sentence2": "b", "score": "x"}, 2, "score", "expected int or float, got str"),
    ],
)
def test_a_bad_row_is_a_data_format_record(tmp_path: Path, row, line: int, field, problem: str) -> None:
    folder = write_task(tmp_path, "Bad", "STS", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "score": 1}, row]})
    with pytest.raises(TaskDataError) as err:
        load_local_task(folder)
    error = err.value
    assert isinstance(error, TaskFormatError) and isinstance(error, DataFormatError)
    assert (error.file, error.line, error.field) == (str(folder / "test.jsonl"), line, field)
    assert error.message.startswith(problem)


def test_bad_task_json_and_selection(tmp_path: Path) -> None:
    folder = write_task(tmp_path, "X", "Regression", {})
    with pytest.raises(TaskFormatError, match=r"task.json:1: field 'type': unknown task type 'Regression'"):
        load_local_task(folder)
    write_task(tmp_path / "ok", "S", "STS", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "score": 1}]})
    with pytest.raises(ValueError, match=r"tasks \['Nope'\] not found"):
        select_local_tasks(tmp_path / "ok", names=["Nope"])
    with pytest.raises(ValueError, match="unknown task types"):
        select_local_tasks(tmp_path / "ok", types=["Sts"])


def test_registry_has_the_35_official_tasks() -> None:
    assert len(CMTEB_TASKS) == 35
    counts = Counter(spec.type for spec in CMTEB_TASKS.values())
    assert counts == {"Retrieval": 8, "STS": 8, "PairClassification": 2, "Classification": 9, "Reranking": 4, "Clustering": 4}
    assert CMTEB_TASKS["T2Retrieval"].hub_id == "C-MTEB/T2Retrieval" and CMTEB_TASKS["T2Retrieval"].split == "dev"
    assert CMTEB_TASKS["Ocnli"].main_score == "ap" and CMTEB_TASKS["IFlyTek"].params["n_experiments"] == 5
    assert all(s.hub_id.startswith(("C-MTEB/", "mteb/")) for s in CMTEB_TASKS.values())


def test_registry_names_the_english_mteb_tasks_users_ask_for() -> None:
    for name in ("STSBenchmark", "SICK-R", "SciFact", "NFCorpus", "Banking77Classification", "TwitterURLCorpus", "AskUbuntuDupQuestions", "TwentyNewsgroupsClustering"):
        assert MTEB_EN_TASKS[name].language == "eng-Latn" and MTEB_EN_TASKS[name].hub_id.startswith("mteb/")
    assert {s.type for s in MTEB_EN_TASKS.values()} == {"Retrieval", "STS", "PairClassification", "Classification", "Reranking", "Clustering"}
    assert {s.layout for s in MTEB_EN_TASKS.values() if s.type == "Retrieval"} == {"beir"}
    assert not set(MTEB_EN_TASKS) & set(CMTEB_TASKS)


class FakeHub:
    """``hub_split`` without a network: rows per (dataset, configuration, split), and the
    calls it answered."""

    def __init__(self, tables: dict[tuple[str, str | None, str], dict[str, list]]) -> None:
        self.tables, self.calls = tables, []

    def __call__(self, hub_id: str, subset: str | None, split: str, cache_dir: str | None):
        from datasets import Dataset

        self.calls.append((hub_id, subset, split))
        if (hub_id, subset, split) not in self.tables:
            raise TaskFormatError(f"hf://{hub_id} ({split}): could not be loaded from the Hugging Face hub (not found)")
        return Dataset.from_dict(self.tables[(hub_id, subset, split)])


def test_english_hub_tasks_load_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """SciFact in MTEB's BEIR layout and STSBenchmark, from a fake hub: the same containers
    as local folders, the language recorded, the default English suite chosen by language."""
    hub = FakeHub({
        ("mteb/scifact", "corpus", "corpus"): {"_id": ["d1", "d2"], "title": ["T1", ""], "text": ["cells divide", "stars shine"]},
        ("mteb/scifact", "queries", "queries"): {"_id": ["q1"], "text": ["how do cells divide"]},
        ("mteb/scifact", "default", "test"): {"query-id": ["q1"], "corpus-id": ["d1"], "score": [1]},
        ("mteb/stsbenchmark-sts", None, "test"): {"sentence1": ["a cat", "a dog"], "sentence2": ["a cat sits", "a car"], "score": [4.5, 0.5]},
    })  # fmt: skip
    monkeypatch.setattr(registry, "hub_split", hub)
    scifact, sts = registry.load_hub_tasks(["SciFact", "STSBenchmark"], language="zh")  # names reach every suite
    assert isinstance(scifact.data, RetrievalData) and scifact.language == "eng-Latn" and scifact.source == "hf://mteb/scifact"
    assert (scifact.data.corpus_ids, scifact.data.query_ids, scifact.data.qrels) == (["d1", "d2"], ["q1"], {"q1": {"d1": 1}})
    assert scifact.data.corpus_titles == ["T1", ""]
    assert (sts.data.sentences1, sts.data.scores) == (["a cat", "a dog"], [4.5, 0.5])
    hub.calls.clear()
    with pytest.raises(TaskFormatError, match="could not be loaded"):
        registry.load_hub_tasks(language="en")  # the English suite, not C-MTEB
    assert hub.calls[0][0] in {s.hub_id for s in MTEB_EN_TASKS.values()}
    with pytest.raises(TaskFormatError, match=r"unknown hub tasks \['Nope'\]"):
        registry.load_hub_tasks(["Nope"])
    with pytest.raises(TaskFormatError, match="no hub task suite for language 'fr'"):
        registry.load_hub_tasks(language="fr")


def test_a_wrong_language_tag_names_file_line_and_field(tmp_path: Path) -> None:
    folder = write_task(tmp_path, "S", "STS", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "score": 1}, {"sentence1": "a", "sentence2": "c", "score": 2}]})
    meta = {"name": "S", "type": "STS", "language": "english"}
    (folder / "task.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    with pytest.raises(TaskFormatError, match=r"task.json:4: field 'language': unknown language 'english': use an ISO 639-1 code"):
        load_local_task(folder)
    for language, kept in (("en", "en"), ("eng-Latn", "eng-Latn")):
        (folder / "task.json").write_text(json.dumps({**meta, "language": language}), encoding="utf-8")
        assert load_local_task(folder).language == kept


@pytest.mark.shared_data
@pytest.mark.skipif(not EN_DEV.is_dir(), reason=f"shared English dev tasks not found at {EN_DEV} (set CTEM_SHARED_DATA)")
def test_shared_english_dev_suite_loads() -> None:
    tasks = load_local_tasks(EN_DEV)
    assert len(tasks) == 15 and {t.language for t in tasks} == {"en"}
    assert Counter(t.type for t in tasks) == {"STS": 3, "PairClassification": 3, "Classification": 3, "Clustering": 2, "Retrieval": 2, "Reranking": 2}


@pytest.mark.shared_data
@pytest.mark.skipif(not DEV.is_dir(), reason=f"shared dev tasks not found at {DEV} (set CTEM_SHARED_DATA)")
def test_shared_dev_suite_loads() -> None:
    tasks = load_local_tasks(DEV)
    assert len(tasks) == 15
    assert Counter(t.type for t in tasks) == {"STS": 6, "PairClassification": 2, "Classification": 2, "Clustering": 1, "Retrieval": 2, "Reranking": 2}
