"""What a stage's pieces read from each other, declared once.

The model card (``ctem.modules.export.model_card_facts``), ``ctem-train`` (the trained
query instruction, its closing summary) and the callbacks read a stage module, its data
module and an evaluation callback only through these:

- a stage module is a ``ctem.modules.stage.EncoderStage``: ``encoder``, ``stage_name``,
  ``stage_description``, ``card_hyperparameters()``;
- a data module is a :class:`StageData`: ``trained_query_instruction``, ``card_facts()``;
- a data module whose hard negatives can be mined again is a :class:`RefreshableData`;
- an evaluation callback whose results the card and the summary show is a
  :class:`TrainingEvaluation`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import lightning as L

if TYPE_CHECKING:
    from ctem.evaluation import TaskResult


@dataclass(frozen=True)
class DataFacts:
    """What the model card says of a stage's training data (``None``: not said).

    Args:
        sources: ``{"files": [...]}`` and / or ``{"hub_dataset": name}``; a mixture:
            ``{"datasets": {name: {"files": [...], "type": ..., "rows": ...}}}``.
        batch_size: rows per batch per device.
        seed: seed of shuffling and sampling.
        language: ISO 639-1 code of the data (``conf/lang``'s ``code``).
        train_group_size: passages per query.
        settings: the data's own hyper-parameters, ``{card label: value}`` in the order
            shown, after the stage's.
    """

    sources: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    seed: int | None = None
    language: str | None = None
    train_group_size: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class StageData(L.LightningDataModule, ABC):
    """A stage's data module as ``ctem-train`` and the model card read it (ctem's data
    modules derive from it through ``ctem.data_modules.base.ShardedDataModule``)."""

    @property
    def trained_query_instruction(self) -> str | None:
        """The instruction this data trains retrieval queries with, valid once the data is
        set up (``""``: none; ``None``: the data does not say, so ``model.query_instruction``
        or the loaded model's recorded one stays). ``ctem-train`` records it in the encoder."""
        return None

    @abstractmethod
    def card_facts(self) -> DataFacts:
        """What the model card says of this data (rows per dataset once set up)."""


@runtime_checkable
class RefreshableData(Protocol):
    """A data module whose hard negatives ``HardNegativeRefresh`` mines again."""

    def mining_rows(self) -> list[dict[str, Any]]:
        """Rows in order: ``query``, ``prompt``, ``pos``, ``neg`` and ``group`` (the mining pool)."""
        ...

    def set_negatives(self, negatives: Sequence[Sequence[str]]) -> None:
        """Replace each row's negatives (``mining_rows`` order)."""
        ...


@runtime_checkable
class TrainingEvaluation(Protocol):
    """An evaluation callback as the model card (``last_results``, ``last_step``) and
    ``ctem-train``'s summary (the averages, ``tasks``) read it."""

    tasks: Sequence[Any]
    last_results: list[TaskResult]
    first_average: float | None
    best_average: float
    best_step: int | None

    @property
    def last_step(self) -> int | None:
        """Global step of ``last_results`` (``None`` before the first evaluation)."""
        ...
