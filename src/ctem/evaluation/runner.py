"""Run a list of tasks with one ``encode`` function; average the main scores.

Averages follow the C-Pack paper's Table 2: the mean main score per task type, and the
overall average over all tasks (not over types).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from ctem.encoding import EncodeFn
from ctem.evaluation.evaluators.retrieval import DEFAULT_K_VALUES
from ctem.evaluation.task_type import find_task_type
from ctem.evaluation.tasks import TASK_TYPES, Task, TaskFormatError
from ctem.instructions import evaluation_instruction, resolve_instruction
from ctem.settings import SettingError


@dataclass
class EvalSettings:
    """Evaluator knobs shared by all tasks (a task's ``params`` override the last five).

    Attributes:
        instructions: prepend query instructions at all (False: no instruction anywhere).
        query_instruction: instruction for queries of ``instruction_task_types``: its text
            or a name of ``ctem.instructions.NAMED_INSTRUCTIONS``. ``None``: the model's own
            recorded instruction, filled in by :meth:`for_model` (none when unresolved).
        instruction_task_types: task types whose queries get ``query_instruction``.
        task_instructions: per task name, an instruction replacing the default
            (``None`` or ``""`` means none). On retrieval / reranking tasks it applies to
            queries only; on the other types to every text.
        k_values: retrieval cut-offs; the search keeps ``max(k_values)`` documents.
        retrieval_chunk_size: queries per similarity matrix product.
        mrr_k: reranking MRR cut-off.
        n_experiments / samples_per_label / max_iter: classification protocol.
        clustering_batch_size: mini-batch k-means batch size.
        seed: seed of classification undersampling, logistic regression and k-means.
    """

    instructions: bool = True
    query_instruction: str | None = None
    instruction_task_types: tuple[str, ...] = ("Retrieval", "Reranking")
    task_instructions: dict[str, str | None] = field(default_factory=dict)
    k_values: tuple[int, ...] = DEFAULT_K_VALUES
    retrieval_chunk_size: int = 1024
    mrr_k: int = 10
    n_experiments: int = 10
    samples_per_label: int = 32
    max_iter: int = 100
    clustering_batch_size: int = 500
    seed: int = 42

    def for_model(self, recorded: str | None) -> "EvalSettings":
        """These settings with ``query_instruction`` resolved for a model that ``recorded``
        this instruction (``TextEncoder.query_instruction``): an explicit setting wins."""
        return replace(self, query_instruction=evaluation_instruction(self.query_instruction, recorded))

    def instruction_for(self, task: Task) -> str | None:
        """The query instruction a task uses, or ``None``."""
        if not self.instructions:
            return None
        if task.name in self.task_instructions:
            return resolve_instruction(self.task_instructions[task.name]) or None
        if task.type not in self.instruction_task_types:
            return None
        return resolve_instruction(self.query_instruction) or None


@dataclass
class TaskResult:
    """Scores of one task; ``main_score`` is the value of ``scores[main_metric]``."""

    task: str
    type: str
    main_metric: str
    main_score: float
    scores: dict[str, float]
    seconds: float
    instruction: str | None


def evaluate_task(encode: EncodeFn, task: Task, settings: EvalSettings) -> dict[str, float]:
    """All scores of one task (its type's ``evaluate``)."""
    record = find_task_type(task.type)
    if record is None:
        raise ValueError(f"task {task.name}: unknown type {task.type!r}")
    return record.evaluate(encode, task, settings, settings.instruction_for(task))


def score_names(task_type: str, settings: EvalSettings) -> frozenset[str]:
    """The scores :func:`evaluate_task` gives a task of ``task_type`` with ``settings``: the
    names a ``main_score`` may take."""
    record = find_task_type(task_type)
    if record is None:
        raise TaskFormatError(f"unknown task type {task_type!r}; expected one of {TASK_TYPES}")
    return record.score_names(settings)


def check_main_scores(tasks: Sequence[Task], settings: EvalSettings) -> None:
    """Before anything is encoded: ``TaskFormatError`` naming the first task whose
    ``main_score`` is not one of the scores its type gives (a typo in ``task.json``)."""
    for task in tasks:
        known = score_names(task.type, settings)
        if task.main_score not in known:
            depends = find_task_type(task.type).score_settings(settings)
            raise TaskFormatError(
                f"task {task.name} ({task.source}): main_score {task.main_score!r} is not a score of {task.type} tasks"
                f"{depends}; known: {sorted(known)}"
            )


class CMTEBEvaluator:
    """Evaluates an ``encode`` function on a fixed list of tasks."""

    def __init__(self, tasks: Sequence[Task], settings: EvalSettings | None = None) -> None:
        if not tasks:
            raise ValueError("CMTEBEvaluator needs at least one task")
        self.tasks = list(tasks)
        self.settings = settings or EvalSettings()
        check_main_scores(self.tasks, self.settings)

    def run(
        self,
        encode: EncodeFn,
        on_task_start: Callable[[Task], None] | None = None,
        on_task_end: Callable[[TaskResult], None] | None = None,
    ) -> list[TaskResult]:
        """Evaluate every task in order; the hooks see each task before and after."""
        results = []
        for task in self.tasks:
            if on_task_start:
                on_task_start(task)
            start = time.perf_counter()
            scores = evaluate_task(encode, task, self.settings)
            if task.main_score not in scores:
                raise KeyError(f"task {task.name}: main score {task.main_score!r} not among {sorted(scores)}")
            result = TaskResult(
                task.name,
                task.type,
                task.main_score,
                scores[task.main_score],
                scores,
                time.perf_counter() - start,
                self.settings.instruction_for(task),
            )
            results.append(result)
            if on_task_end:
                on_task_end(result)
        return results


def truncated(encode: EncodeFn, dim: int, normalize: bool) -> EncodeFn:
    """``encode`` keeping the first ``dim`` values of each embedding (a Matryoshka prefix),
    re-normalised to unit length when ``normalize``."""

    def encode_prefix(texts: Sequence[str], instruction: str | None = None, is_query: bool = False) -> np.ndarray:
        out = encode(texts, instruction, is_query=is_query)
        if dim > out.shape[1]:
            raise SettingError("eval.truncate_dim", dim, f"exceeds the model's embedding size {out.shape[1]}")
        out = np.ascontiguousarray(out[:, :dim])
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    return encode_prefix


def averages(results: Sequence[TaskResult]) -> dict[str, float]:
    """Mean main score per task type present (in Table 2 order) and ``average`` over tasks."""
    out: dict[str, float] = {}
    for task_type in TASK_TYPES:
        values = [r.main_score for r in results if r.type == task_type]
        if values:
            out[task_type] = sum(values) / len(values)
    if results:
        out["average"] = sum(r.main_score for r in results) / len(results)
    return out
