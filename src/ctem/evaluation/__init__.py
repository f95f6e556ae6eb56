"""C-MTEB evaluation: tasks, one evaluator per task type, a runner and reports.

Evaluators see only an ``encode(texts, instruction=None) -> float32 [N, D]`` callable;
:class:`~ctem.encoding.EncoderAdapter` (re-exported here) builds one from a ``TextEncoder``.
:class:`~ctem.evaluation.config.EvalConfig` holds what ``ctem-eval`` and the training callback
evaluate and how (the ``eval`` settings node).
"""

from ctem.evaluation.config import EvalConfig
from ctem.encoding import EncoderAdapter
from ctem.evaluation.registry import CMTEB_TASKS, HUB_TASKS, MTEB_EN_TASKS, HubTaskSpec, load_hub_task, load_hub_tasks
from ctem.evaluation.report import write_summary, write_task_json
from ctem.evaluation.runner import (
    CMTEBEvaluator,
    EvalSettings,
    TaskResult,
    averages,
    check_main_scores,
)
from ctem.evaluation.tasks import (
    TASK_TYPES,
    Task,
    TaskFormatError,
    load_local_task,
    load_local_tasks,
    select_local_tasks,
)

__all__ = [
    "CMTEBEvaluator",
    "CMTEB_TASKS",
    "HUB_TASKS",
    "MTEB_EN_TASKS",
    "EncoderAdapter",
    "EvalConfig",
    "EvalSettings",
    "HubTaskSpec",
    "TASK_TYPES",
    "Task",
    "TaskFormatError",
    "TaskResult",
    "averages",
    "check_main_scores",
    "load_hub_task",
    "load_hub_tasks",
    "load_local_task",
    "load_local_tasks",
    "select_local_tasks",
    "write_summary",
    "write_task_json",
]
