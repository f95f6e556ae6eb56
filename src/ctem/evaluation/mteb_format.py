"""Results in the layout and format of the ``mteb`` package, so that mteb's own readers
(``mteb.TaskResult.from_disk``, ``mteb.ResultCache(...).load_results()``) load them.

Layout (mteb's results cache, rooted at ``<out_dir>/mteb``)::

    <out_dir>/mteb/results/<model name, "/" -> "__">/no_revision_available/
        model_meta.json
        <TaskName>.json

Task names are mteb's (``CMedQAv1`` -> ``CMedQAv1-reranking``; every other C-MTEB name is
the same). Official tasks loaded from the hub record the evaluated split and subset of
``HUB_TASKS`` and ``dataset_revision`` ``"main"`` (ctem reads the hub's default branch,
not mteb's pinned revision). Local task folders record split ``"test"`` and
``dataset_revision`` ``"local-stand-in"``: a local task named like an official one is a
smaller stand-in, and its scores are not the official (leaderboard) numbers.
``main_score`` is ctem's main score of the task (see ``DEFAULT_MAIN_SCORES``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ctem.evaluation.registry import HUB_TASKS
from ctem.languages import mteb_language_tag
from ctem.evaluation.runner import TaskResult
from ctem.evaluation.tasks import Task
from ctem.files import atomic_writer, check_file_name, confined_path

MTEB_DIR = "mteb"
# The mteb version whose result format these files follow (checked with its reader).
MTEB_FORMAT_VERSION = "2.26.24"
# mteb's placeholder for a model without a revision.
MODEL_REVISION = "no_revision_available"
MODEL_META_FILE = "model_meta.json"
HUB_REVISION = "main"
LOCAL_REVISION = "local-stand-in"
LOCAL_SPLIT = "test"
# ctem task name -> mteb task name, where they differ.
MTEB_TASK_NAMES: dict[str, str] = {"CMedQAv1": "CMedQAv1-reranking", "CMedQAv2": "CMedQAv2-reranking"}
# Fields mteb's ModelMeta requires that ctem does not know (written as null).
UNKNOWN_MODEL_FIELDS = (
    "release_date",
    "languages",
    "n_parameters",
    "memory_usage_mb",
    "max_tokens",
    "license",
    "open_weights",
    "public_training_code",
    "public_training_data",
    "use_instructions",
    "training_datasets",
    "loader",
)


def mteb_task_name(task_name: str) -> str:
    """The mteb name of a ctem task."""
    return MTEB_TASK_NAMES.get(task_name, task_name)


def mteb_model_name(model_name: str) -> str:
    """``model_name`` as an mteb model name (``organization/name``: ``local/`` is added
    to a name without an organization)."""
    return model_name if "/" in model_name else f"local/{model_name}"


def mteb_results_dir(out_dir: str | Path, model_name: str) -> Path:
    """The folder of one model's task files: ``<out_dir>/mteb/results/<model>/<revision>``."""
    folder = mteb_model_name(model_name).replace("/", "__").replace(" ", "_")
    return confined_path(out_dir, MTEB_DIR, "results", folder, MODEL_REVISION)


def mteb_task_file(task_name: str) -> str:
    """``<TaskName>.json`` (mteb's task name); ``OutputPathError`` unless a plain file name."""
    return f"{check_file_name(mteb_task_name(task_name), 'task name')}.json"


def mteb_task_path(out_dir: str | Path, model_name: str, task_name: str) -> Path:
    """The task's :func:`mteb_task_file` in the model's mteb results folder."""
    return confined_path(mteb_results_dir(out_dir, model_name), mteb_task_file(task_name))


def mteb_task_record(result: TaskResult, task: Task) -> dict[str, Any]:
    """The mteb ``TaskResult`` JSON of one task: every ctem metric plus ``main_score``,
    under the evaluated split and subset."""
    spec = HUB_TASKS.get(task.name)
    if spec is not None and task.source == f"hf://{spec.hub_id}":
        split, subset, revision = spec.split, spec.subset or "default", HUB_REVISION
    else:
        split, subset, revision = LOCAL_SPLIT, "default", LOCAL_REVISION
    scores = {
        **result.scores,
        "main_score": result.main_score,
        "hf_subset": subset,
        "languages": [mteb_language_tag(task.language)] if task.language else [],
    }
    return {
        "dataset_revision": revision,
        "task_name": mteb_task_name(result.task),
        "mteb_version": MTEB_FORMAT_VERSION,
        "scores": {split: [scores]},
        "evaluation_time": result.seconds,
        "kg_co2_emissions": None,
    }


def mteb_model_meta(model_name: str, embed_dim: int | None) -> dict[str, Any]:
    """mteb's ``model_meta.json``: name, revision, dimension, cosine similarity; the
    fields ctem does not know are null."""
    return {
        "name": mteb_model_name(model_name),
        "revision": MODEL_REVISION,
        "embed_dim": embed_dim,
        "framework": ["PyTorch"],
        "similarity_fn_name": "cosine",
        "modalities": ["text"],
        "model_type": ["dense"],
        **dict.fromkeys(UNKNOWN_MODEL_FIELDS),
    }


def write_json_atomic(data: Any, path: Path) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (``ctem.files.atomic_writer``)."""
    with atomic_writer(path) as handle:
        handle.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def write_mteb_results(
    results: Sequence[TaskResult], tasks: Sequence[Task], folder: str | Path, model_name: str, embed_dim: int | None
) -> None:
    """Write ``model_meta.json`` and each result's ``<TaskName>.json`` (mteb's task name) into
    ``folder``: the model's results folder (:func:`mteb_results_dir`) or a staging folder
    moved there when complete; ``tasks`` holds the task of every result."""
    by_name = {task.name: task for task in tasks}
    write_json_atomic(mteb_model_meta(model_name, embed_dim), confined_path(folder, MODEL_META_FILE))
    for result in results:
        write_json_atomic(mteb_task_record(result, by_name[result.task]), confined_path(folder, mteb_task_file(result.task)))
