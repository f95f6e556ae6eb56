"""``EvalConfig``: what an evaluation runs and how, one settings node for ``ctem-eval``
(``eval.*``) and ``CMTEBEvalCallback`` (``callbacks.cmteb_eval.eval.*``), composed from
``conf/eval_settings/default.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

from ctem.evaluation.runner import EvalSettings
from ctem.evaluation.tasks import TASK_TYPES
from ctem.settings import SettingError


def _tuple(value: object) -> tuple | None:
    """A list setting (a list, a tuple or Hydra's ``ListConfig``) as a tuple; ``None`` kept."""
    return None if value is None else tuple(value)  # type: ignore[arg-type]


@dataclass
class EvalConfig(EvalSettings):
    """The evaluator settings (:class:`EvalSettings`) plus the task selection and encoding.

    A bad value raises ``SettingError`` naming it (``eval.batch_size=0: must be at least 1``).

    Attributes:
        tasks: task names to evaluate (``None`` or empty: all of the task source).
        task_types: task types to keep (``None`` or empty: all), of ``TASK_TYPES``.
        batch_size: texts per forward pass.
        max_length: token limit of every text (``None``: the model's ``query_max_length``
            for queries, ``passage_max_length`` for the rest).
        truncate_dim: evaluate the first ``truncate_dim`` values of each embedding
            (re-normalised for a normalising model; a Matryoshka model's prefixes);
            ``None``: the whole embedding.
    """

    tasks: tuple[str, ...] | None = None
    task_types: tuple[str, ...] | None = None
    batch_size: int = 64
    max_length: int | None = None
    truncate_dim: int | None = None

    def __post_init__(self) -> None:
        self.tasks = _tuple(self.tasks)
        self.task_types = _tuple(self.task_types)
        self.instruction_task_types = _tuple(self.instruction_task_types) or ()
        self.k_values = _tuple(self.k_values) or ()
        self.task_instructions = dict(self.task_instructions or {})
        for name in ("task_types", "instruction_task_types"):
            unknown = sorted(set(getattr(self, name) or ()) - set(TASK_TYPES))
            if unknown:
                raise SettingError(f"eval.{name}", list(getattr(self, name)), f"unknown task types {unknown}; known: {list(TASK_TYPES)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SettingError("eval.batch_size", self.batch_size, "must be at least 1")
        if self.truncate_dim is not None and (
            isinstance(self.truncate_dim, bool) or not isinstance(self.truncate_dim, int) or self.truncate_dim < 1
        ):
            raise SettingError("eval.truncate_dim", self.truncate_dim, "must be at least 1 (null: the whole embedding)")
