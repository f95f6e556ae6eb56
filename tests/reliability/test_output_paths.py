"""Every file a command writes stays inside its output folder: names from data (a task's
``name``) are plain file names, and no two outputs of one evaluation share a file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ctem.cli import input_errors_as_messages
from ctem.cli.eval import run as eval_run
from ctem.config import ASSETS_DIR
from ctem.evaluation import TaskResult, write_task_json
from ctem.evaluation.mteb_format import mteb_results_dir, mteb_task_file
from tests.reliability.conftest import compose_command

STS = ASSETS_DIR / "quickstart" / "dev" / "QuickstartSTS"


def _tasks(root: Path, *names: str) -> Path:
    """A tasks folder with one copy of the quickstart STS task per name."""
    for i, name in enumerate(names):
        folder = root / "tasks" / f"t{i}"
        shutil.copytree(STS, folder)
        meta = json.loads((folder / "task.json").read_text("utf-8"))
        (folder / "task.json").write_text(json.dumps({**meta, "name": name}), encoding="utf-8")
    return root / "tasks"


def _evaluate(tmp_path: Path, model: Path, tasks: Path, *overrides: str) -> str | None:
    """ctem-eval's run (as the command runs it); the one-line error or None."""
    cfg = compose_command("eval", f"model_path={model}", f"tasks_dir={tasks}", f"output_dir={tmp_path / 'out'}", "progress=false", *overrides)
    try:
        with input_errors_as_messages("ctem-eval"):
            eval_run(cfg)
    except SystemExit as done:
        return str(done.code)
    return None


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ["../escaped", "../../escaped", "ABSOLUTE", "a/b", "..", ".", "", "  "])
def test_a_task_name_that_is_not_a_plain_file_name_is_refused(tmp_path, tiny_model, name) -> None:
    name = str(tmp_path / "absolute") if name == "ABSOLUTE" else name
    tasks = _tasks(tmp_path / "data", name)
    before = _files(tmp_path)
    message = _evaluate(tmp_path / "data", tiny_model, tasks)
    assert message is not None and message.startswith(f"ctem-eval: error: {tasks / 't0' / 'task.json'}:1: field 'name': task name")
    assert "\n" not in message
    assert _files(tmp_path) == before  # nothing written anywhere


def test_two_tasks_of_one_name_are_an_error_not_an_overwrite(tmp_path, tiny_model) -> None:
    tasks = _tasks(tmp_path, "Same", "Same")
    message = _evaluate(tmp_path, tiny_model, tasks)
    assert message == (
        f"ctem-eval: error: {tasks / 't1' / 'task.json'}: field 'name': task name 'Same' is also used by "
        f"{tasks / 't0' / 'task.json'}; task names must be unique"
    )
    assert not (tmp_path / "out").exists()


def test_names_differing_only_in_case_would_share_a_file_on_many_systems(tmp_path, tiny_model) -> None:
    message = _evaluate(tmp_path, tiny_model, _tasks(tmp_path, "Sts", "STS"))
    assert message is not None and "task names must be unique" in message


def test_a_task_selected_twice_is_an_error(tmp_path, tiny_model) -> None:
    message = _evaluate(tmp_path, tiny_model, _tasks(tmp_path, "One"), "eval.tasks=[One,One]")
    assert message == "ctem-eval: error: task 'One' is selected twice; list each task once"


def test_a_task_named_like_the_model_meta_file_is_refused(tmp_path, tiny_model) -> None:
    message = _evaluate(tmp_path, tiny_model, _tasks(tmp_path, "model_meta"))
    assert message is not None and message.startswith("ctem-eval: error: two outputs would be written to one file")
    assert not (tmp_path / "out").exists()


def test_the_writers_refuse_names_that_leave_the_folder(tmp_path) -> None:
    """Names that did not come through the task reader (hub tasks, callbacks, scripts)."""
    from ctem.files import OutputPathError

    result = TaskResult(task="../outside", type="STS", main_metric="cosine_spearman", main_score=0.5, scores={}, seconds=0.1, instruction=None)
    with pytest.raises(OutputPathError, match="path separator"):
        write_task_json(result, tmp_path / "out", "m", "0")
    with pytest.raises(OutputPathError):
        mteb_results_dir(tmp_path / "out", "..\\..\\x")
    with pytest.raises(OutputPathError, match="path separator"):
        mteb_task_file(result.task)
    assert _files(tmp_path) == set()


def test_confined_path_follows_symbolic_links(tmp_path) -> None:
    from ctem.files import OutputPathError, confined_path

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert confined_path(tmp_path / "out", "a.json") == tmp_path / "out" / "a.json"
    with pytest.raises(OutputPathError, match="leads outside"):
        confined_path(tmp_path / "out", "link", "a.json")
