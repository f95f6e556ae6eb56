"""The mteb-format results folder of ``ctem-eval``, read back with mteb's own readers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

mteb = pytest.importorskip("mteb", reason="mteb is not installed (pip install 'ctem[parity]'); its result reader is what is tested")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_helpers import bag_of_chars, make_tiny_encoder, make_tiny_tasks  # noqa: E402

from ctem.evaluation import HUB_TASKS, CMTEBEvaluator, TaskResult, load_local_tasks, write_task_json  # noqa: E402
from ctem.evaluation.mteb_format import (  # noqa: E402
    LOCAL_REVISION,
    mteb_results_dir,
    mteb_task_name,
    mteb_task_record,
    write_mteb_results,
)
from ctem.evaluation.tasks import Task  # noqa: E402


def test_mteb_reader_loads_every_task_file(tmp_path: Path) -> None:
    tasks = load_local_tasks(make_tiny_tasks(tmp_path / "tasks"))
    results = CMTEBEvaluator(tasks).run(bag_of_chars)
    out = tmp_path / "out"
    folder = mteb_results_dir(out, "tiny")
    assert folder == out / "mteb" / "results" / "local__tiny" / "no_revision_available"
    write_mteb_results(results, tasks, folder, "tiny", 64)
    for result in results:
        write_task_json(result, out, "tiny", "0.1.0")

    assert not list(folder.glob(".*.tmp")), "temporary files renamed away"
    for result in results:
        assert json.loads((out / f"{result.task}.json").read_text())["task"] == result.task  # ctem's file stays
        loaded = mteb.TaskResult.from_disk(folder / f"{result.task}.json")
        assert loaded.task_name == result.task
        assert loaded.dataset_revision == LOCAL_REVISION
        assert loaded.kg_co2_emissions is None
        assert loaded.evaluation_time == pytest.approx(result.seconds)
        (subset,) = loaded.scores["test"]
        assert subset["hf_subset"] == "default" and subset["languages"] == ["cmn-Hans"]
        assert loaded.get_score() == result.main_score
        assert loaded.get_score(languages=["cmn"]) == result.main_score
        assert {k: subset[k] for k in result.scores} == result.scores  # every ctem metric
    ctem = {r.task: r.scores for r in results}
    mteb_scores = {r.task: mteb.TaskResult.from_disk(folder / f"{r.task}.json").scores["test"][0] for r in results}
    assert mteb_scores["TinySTS"]["cosine_pearson"] == ctem["TinySTS"]["cosine_pearson"]
    assert mteb_scores["TinyRetrieval"]["recall_at_5"] == ctem["TinyRetrieval"]["recall_at_5"]

    from mteb.models import ModelMeta

    meta = json.loads((folder / "model_meta.json").read_text())
    model_meta = ModelMeta.model_validate(meta)
    assert (model_meta.name, model_meta.revision, model_meta.embed_dim) == ("local/tiny", "no_revision_available", 64)
    loaded_all = mteb.ResultCache(out / "mteb").load_results(include_remote=False)
    (model,) = loaded_all.model_results
    assert (model.model_name, model.model_revision) == ("local/tiny", "no_revision_available")
    assert sorted(t.task_name for t in model.task_results) == ["TinyRetrieval", "TinySTS"]


@pytest.mark.filterwarnings("ignore:.*Missing (splits|subsets)")  # ctem evaluates one split / subset
def test_official_tasks_use_mteb_names_splits_and_subsets() -> None:
    """Every registered hub task, C-MTEB and English MTEB, is recorded under mteb's name,
    split, subset and language tag."""
    for spec in HUB_TASKS.values():
        task = Task(spec.name, spec.type, spec.main_score, None, f"hf://{spec.hub_id}", language=spec.language)  # type: ignore[arg-type]
        result = TaskResult(spec.name, spec.type, spec.main_score, 0.5, {spec.main_score: 0.5}, 1.0, None)
        record = mteb_task_record(result, task)
        mteb_task = mteb.get_task(mteb_task_name(spec.name))
        assert record["task_name"] == mteb_task.metadata.name and mteb_task.metadata.type == spec.type
        kept = mteb.TaskResult.from_dict(record).validate_and_filter_scores(task=mteb_task)
        (subset,) = [s for s in kept.scores.get(spec.split, []) if s["main_score"] == 0.5]  # mteb drops unknown ones
        assert subset["hf_subset"] == (spec.subset or "default")
        assert subset["languages"] == mteb_task.metadata.hf_subsets_to_langscripts[subset["hf_subset"]]


def test_ctem_eval_cli_writes_mteb_folder(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from ctem.cli.eval import run
    from ctem.config import config_dir, register_resolvers

    model_dir = make_tiny_encoder().save_pretrained(tmp_path / "model")
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"model_path={model_dir}",
                f"tasks_dir={make_tiny_tasks(tmp_path / 'tasks')}",
                f"output_dir={tmp_path / 'out'}",
                "model_name=org/tiny",
                "eval.tasks=[TinySTS]",
                "eval.batch_size=8",
                "progress=false",
            ],
        )
        (result,) = run(cfg)
    folder = tmp_path / "out" / "mteb" / "results" / "org__tiny" / "no_revision_available"
    assert sorted(p.name for p in folder.iterdir()) == ["TinySTS.json", "model_meta.json"]
    assert mteb.TaskResult.from_disk(folder / "TinySTS.json").get_score() == result.main_score
    assert (tmp_path / "out" / "TinySTS.json").is_file()


def test_the_language_tag_comes_from_the_task(tmp_path: Path) -> None:
    """An English task folder is tagged eng-Latn (mteb filters on it), a Chinese one
    cmn-Hans, one without a language none."""
    tasks = load_local_tasks(make_tiny_tasks(tmp_path / "tasks"))
    for task, language, tag in zip(tasks, ("en", None), (["eng-Latn"], [])):
        task.language = language
        result = TaskResult(task.name, task.type, task.main_score, 0.5, {task.main_score: 0.5}, 1.0, None)
        assert mteb_task_record(result, task)["scores"]["test"][0]["languages"] == tag
    english = mteb.TaskResult.from_dict(mteb_task_record(result, Task("T", "STS", "cosine_spearman", None, "x", language="en")))  # type: ignore[arg-type]
    assert english.get_score(languages=["eng"]) == 0.5
