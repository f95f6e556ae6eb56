"""`LabeledDataModule`: a mixture of labeled datasets with task instructions (C-Pack stage 3).

Each dataset is a set of C-MTP-style JSON-lines files (rows as in ``ctem.data_modules.pairs``)
with a task type (retrieval, sts, nli, classification, ...). Per dataset:

- an **instruction** prepended to its queries only (never to passages): the dataset's own
  ``instruction``, else ``instructions_by_type[type]``; a row's ``prompt`` field wins over
  both, and ``""`` means no instruction;
- an **in-batch negatives** switch: off for classification-like data, where another
  query's positive (a label text) is often a correct answer too;
- a sampling **weight** and, optionally, its own ``train_group_size``.

Every batch comes from one dataset (instructions and negatives of different tasks are
never mixed in one softmax). Under DDP all ranks draw from the same dataset at each step:
``MixtureSchedule`` builds the global plan of (dataset, global batch) from ``seed`` and the
epoch identically on every rank and ``SameDatasetBatchSampler`` gives each rank its slice.

Batch layout: ``PairCollator``'s plus ``"task"`` (the dataset name) and
``"in_batch_negatives"`` (bool)::

    {"query": tokens [B, Lq], "passages": tokens [B * G, Lp], "group_size": G,
     "task": str, "in_batch_negatives": bool}
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from ctem.instructions import BGE_ZH, resolve_instruction
from ctem.data_modules.base import LoaderConfig, ShardedDataModule, file_list
from ctem.modules.contract import DataFacts
from ctem.rows import (
    BadRowReport,
    DataFormatError,
    DataSizeError,
    OnBadRow,
    check_on_bad_row,
    describe_source,
    expand_files,
    no_rows,
)
from ctem.data_modules.pairs import PairCollator, PairDataset, drop_bad_rows, load_pair_rows

log = logging.getLogger(__name__)

Sampling = Literal["proportional", "round_robin"]

# Task types whose queries are retrieval queries: their instruction is the one the model records.
RETRIEVAL_TYPES = ("retrieval", "reranking")


@dataclass
class LabeledDatasetSpec:
    """One dataset of the mixture (the fields of an entry of ``data.datasets``).

    Args:
        files: JSON-lines files, globs or folders.
        type: task type; ``None``: read from the rows' ``type`` field (must be one value).
        instruction: query instruction; ``None``: ``instructions_by_type[type]``; ``""``: none.
        in_batch_negatives: score queries against the whole batch; ``None``:
            ``in_batch_negatives_by_type.get(type, True)``.
        weight: share multiplier under proportional sampling (2: every row twice per epoch).
        train_group_size: passages per query for this dataset; ``None``: the module's.
    """

    files: str | list[str]
    type: str | None = None
    instruction: str | None = None
    in_batch_negatives: bool | None = None
    weight: float = 1.0
    train_group_size: int | None = None


@dataclass
class LabeledPart:
    """A loaded dataset of the mixture with its settings resolved."""

    name: str
    type: str
    instruction: str | None
    in_batch_negatives: bool
    weight: float
    dataset: PairDataset

    def __len__(self) -> int:
        return len(self.dataset)


def parse_dataset_specs(datasets: Mapping[str, Any] | str | Sequence[str]) -> dict[str, LabeledDatasetSpec]:
    """``name -> spec`` from the ``datasets`` argument.

    A mapping gives each dataset by name (value: a spec mapping, or just its files); a path,
    glob or folder (or a list of them) makes each file a dataset named by its file stem.
    """
    if isinstance(datasets, Mapping):
        allowed = {f.name for f in fields(LabeledDatasetSpec)}
        specs = {}
        for name, value in datasets.items():
            if isinstance(value, (str, list, tuple)):
                value = {"files": value}
            if not isinstance(value, Mapping):
                raise ValueError(f"data.datasets.{name}: expected a mapping or files, got {type(value).__name__}")
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise ValueError(f"data.datasets.{name}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
            if "files" not in value:
                raise ValueError(f"data.datasets.{name}: 'files' is required")
            specs[str(name)] = LabeledDatasetSpec(**value)
        if not specs:
            raise ValueError("data.datasets is empty")
        return specs
    files = expand_files(datasets)
    specs = {}
    for path in files:
        name = Path(path).stem
        if name in specs:
            raise ValueError(
                f"two files are both named {name!r} ({specs[name].files} and {path}): "
                "give data.datasets as a mapping with distinct names"
            )
        specs[name] = LabeledDatasetSpec(files=path)
    return specs


class MixtureSchedule:
    """The global plan of one epoch: a list of ``(dataset_id, indices)`` batches of
    ``global_batch_size`` rows (``per-rank batch size * world size``), the same on every rank.

    Indices are positions in the concatenation of the datasets (dataset ``d`` occupies
    ``offsets[d] : offsets[d] + sizes[d]``). Incomplete batches are dropped.

    ``proportional``: dataset ``d`` gives ``floor(weight_d * size_d / global_batch_size)``
    batches per epoch (rows drawn from successive shuffles, so weight 2 shows every row
    twice) and all batches are shuffled together: datasets come up in proportion to
    ``weight * size``. ``round_robin``: datasets take turns, one batch each, until the one
    with the fewest batches runs out (every dataset equally often; weights unused).

    Lightning calls ``set_epoch`` on it (it is the batch sampler's ``sampler``).
    """

    def __init__(
        self,
        names: Sequence[str],
        sizes: Sequence[int],
        weights: Sequence[float],
        global_batch_size: int,
        sampling: Sampling = "proportional",
        seed: int = 42,
    ) -> None:
        if sampling not in ("proportional", "round_robin"):
            raise ValueError(f"sampling must be 'proportional' or 'round_robin', got {sampling!r}")
        if global_batch_size < 1:
            raise ValueError(f"global batch size must be >= 1, got {global_batch_size}")
        if any(w < 0 for w in weights):
            raise ValueError(f"dataset weights must be >= 0, got {list(weights)}")
        self.names = list(names)
        self.sizes = list(sizes)
        self.weights = list(weights)
        self.offsets = [0]
        for size in self.sizes[:-1]:
            self.offsets.append(self.offsets[-1] + size)
        self.global_batch_size = global_batch_size
        self.sampling = sampling
        self.seed = seed
        self.epoch = 0
        self.batches_per_dataset = self._batches_per_dataset()
        if sum(self.batches_per_dataset) == 0:
            raise DataSizeError(
                f"no dataset has a full batch of {global_batch_size} rows (batch_size * world size): "
                f"sizes {dict(zip(self.names, self.sizes))}: lower data.batch_size or add data"
            )

    def _batches_per_dataset(self) -> list[int]:
        full = [size // self.global_batch_size for size in self.sizes]
        if self.sampling == "round_robin":
            used = [n for n in full if n > 0]
            rounds = min(used) if used else 0
            return [rounds if n > 0 else 0 for n in full]
        return [math.floor(w * size / self.global_batch_size) for w, size in zip(self.weights, self.sizes)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.batches_per_dataset)

    def _dataset_batches(self, d: int) -> list[list[int]]:
        """``batches_per_dataset[d]`` batches of global indices from successive shuffles."""
        need = self.batches_per_dataset[d] * self.global_batch_size
        stream: list[int] = []
        shuffle = 0
        while len(stream) < need:
            order = list(range(self.offsets[d], self.offsets[d] + self.sizes[d]))
            random.Random(f"{self.seed}:{self.epoch}:{self.names[d]}:{shuffle}").shuffle(order)
            stream.extend(order)
            shuffle += 1
        size = self.global_batch_size
        return [stream[i : i + size] for i in range(0, need, size)]

    def plan(self) -> list[tuple[int, list[int]]]:
        """This epoch's ``(dataset_id, global indices)`` batches, in training order."""
        per_dataset = [self._dataset_batches(d) for d in range(len(self.names))]
        if self.sampling == "round_robin":
            rounds = max(self.batches_per_dataset)
            return [(d, per_dataset[d][r]) for r in range(rounds) for d in range(len(self.names)) if per_dataset[d]]
        batches = [(d, batch) for d, chunks in enumerate(per_dataset) for batch in chunks]
        random.Random(f"{self.seed}:{self.epoch}:order").shuffle(batches)
        return batches


class SameDatasetBatchSampler:
    """This rank's share of each global batch of a ``MixtureSchedule``.

    Yields lists of ``batch_size`` keys ``(global_index, epoch)``: rank ``r`` takes rows
    ``r * batch_size : (r + 1) * batch_size`` of every global batch, so at every step all
    ranks hold rows of the same dataset. ``sampler`` is the schedule (Lightning's
    ``set_epoch`` reaches it there). Use with ``Trainer(use_distributed_sampler=False)``.
    """

    def __init__(self, schedule: MixtureSchedule, batch_size: int, rank: int, world_size: int) -> None:
        if schedule.global_batch_size != batch_size * world_size:
            raise ValueError(
                f"schedule batches of {schedule.global_batch_size} rows do not split into "
                f"{world_size} rank(s) x {batch_size}"
            )
        self.sampler = schedule
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        start = self.rank * self.batch_size
        for _, indices in self.sampler.plan():
            yield [(i, epoch) for i in indices[start : start + self.batch_size]]


class LabeledDataset(Dataset):
    """The datasets of a mixture, concatenated: key ``(global_index, epoch)`` gives the
    sample of row ``global_index`` with ``"task"`` set to its dataset's name."""

    def __init__(self, parts: Sequence[LabeledPart]) -> None:
        self.parts = list(parts)
        self.offsets = [0]
        for part in self.parts:
            self.offsets.append(self.offsets[-1] + len(part))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset_id, row within it)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        d = bisect.bisect_right(self.offsets, index) - 1
        return d, index - self.offsets[d]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        d, row = self.locate(int(index))
        part = self.parts[d]
        return {**part.dataset[(row, epoch)], "task": part.name}


class LabeledCollator(PairCollator):
    """``PairCollator`` for one-dataset batches: adds ``task`` and its ``in_batch_negatives``."""

    def __init__(self, in_batch_negatives: Mapping[str, bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_batch_negatives = dict(in_batch_negatives)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = {s["task"] for s in samples}
        if len(tasks) != 1:
            raise ValueError(f"a batch mixes datasets {sorted(tasks)}; batches must come from one dataset")
        batch = super().__call__(samples)
        batch["in_batch_negatives"] = self.in_batch_negatives[batch["task"]]
        return batch


def _merge_reports(reports: Sequence[BadRowReport]) -> BadRowReport:
    merged = BadRowReport()
    for report in reports:
        merged.count += report.count
        merged.examples.extend(report.examples[: max(merged.keep - len(merged.examples), 0)])
    return merged


class LabeledDataModule(ShardedDataModule):
    """A mixture of labeled datasets with per-task query instructions (see the module docstring).

    Args:
        tokenizer: the encoder's tokenizer (``train.py`` passes it).
        datasets: ``name -> spec`` (``LabeledDatasetSpec`` fields, or just files), or files /
            globs / folders where each file becomes a dataset named by its stem, with its type
            read from the rows' ``type`` field.
        instructions_by_type: query instruction per task type, for datasets without their own
            (type missing or ``None``: no instruction). ``None``: BGE's Chinese retrieval
            instruction for ``retrieval`` and ``reranking``.
        in_batch_negatives_by_type: in-batch negatives per task type, for datasets without
            their own setting (type missing: on). ``None``: off for ``classification`` and
            ``clustering``.
        sampling: ``proportional`` (to ``weight * size``) or ``round_robin`` (see ``MixtureSchedule``).
        batch_size: queries per batch per device.
        train_group_size: passages per query: 1 positive + ``train_group_size - 1`` negatives
            (a dataset's own ``train_group_size`` wins).
        query_max_length / passage_max_length: token limits.
        on_bad_row: ``error`` (stop with file:line:field) or ``skip`` (drop and report).
        seed: seed of the schedule and of per-row positive / negative sampling.
        language: ISO 639-1 code of the data (``conf/lang``), written into the model card.
        loader: worker processes, pinned memory, persistent workers (``LoaderConfig``;
            ``None``: its defaults).
        pad_to_multiple_of: pad token lengths to a multiple of this (``None``: longest row).
        cache_dir: ``datasets`` cache folder (``None``: its default).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        datasets: Mapping[str, Any] | str | Sequence[str],
        instructions_by_type: Mapping[str, str | None] | None = None,
        in_batch_negatives_by_type: Mapping[str, bool] | None = None,
        sampling: Sampling = "proportional",
        batch_size: int = 32,
        train_group_size: int = 2,
        query_max_length: int = 64,
        passage_max_length: int = 256,
        on_bad_row: OnBadRow = "error",
        seed: int = 42,
        loader: LoaderConfig | None = None,
        pad_to_multiple_of: int | None = None,
        cache_dir: str | None = None,
        language: str | None = None,
    ) -> None:
        super().__init__(loader, language)
        if train_group_size < 1:
            raise ValueError(f"train_group_size must be >= 1, got {train_group_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_on_bad_row(on_bad_row)
        if sampling not in ("proportional", "round_robin"):
            raise ValueError(f"sampling must be 'proportional' or 'round_robin', got {sampling!r}")
        self.tokenizer = tokenizer
        self.specs = parse_dataset_specs(datasets)
        self.instructions_by_type = (
            {"retrieval": BGE_ZH, "reranking": BGE_ZH}
            if instructions_by_type is None
            else {k: resolve_instruction(v) for k, v in instructions_by_type.items()}
        )
        self.in_batch_negatives_by_type = (
            {"classification": False, "clustering": False}
            if in_batch_negatives_by_type is None
            else dict(in_batch_negatives_by_type)
        )
        self.sampling = sampling
        self.batch_size = batch_size
        self.train_group_size = train_group_size
        self.on_bad_row = on_bad_row
        self.seed = seed
        self.cache_dir = cache_dir
        self.collator_kwargs = dict(
            tokenizer=tokenizer,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            pad_to_multiple_of=pad_to_multiple_of,
        )
        self.train_dataset: LabeledDataset | None = None
        self.bad_rows = BadRowReport()

    # ------------------------------------------------------------------ loading
    def _load_part(self, index: int, name: str, spec: LabeledDatasetSpec) -> tuple[LabeledPart, BadRowReport]:
        """Dataset number ``index`` of the mixture, loaded, with its bad-row report."""
        group_size = self.train_group_size if spec.train_group_size is None else spec.train_group_size
        if group_size < 1:
            raise ValueError(f"data.datasets.{name}.train_group_size must be >= 1, got {group_size}")
        rows = load_pair_rows(
            spec.files, None, "train", min_negatives=1 if group_size > 1 else 0, streaming=False, cache_dir=self.cache_dir
        )
        rows, bad = drop_bad_rows(rows, self.on_bad_row)
        if len(rows) == 0:
            raise no_rows(f"{describe_source(spec.files)} (dataset {name!r})", bad)
        task_type = spec.type or self._row_type(name, spec, rows.unique("type"))
        own = resolve_instruction(spec.instruction)
        instruction = own if own is not None else self.instructions_by_type.get(task_type)
        in_batch = (
            spec.in_batch_negatives
            if spec.in_batch_negatives is not None
            else self.in_batch_negatives_by_type.get(task_type, True)
        )
        if not in_batch and group_size < 2:
            raise ValueError(
                f"dataset {name!r} has in-batch negatives off, so it needs hard negatives: set its "
                f"train_group_size >= 2 (now {group_size}) or turn in_batch_negatives on"
            )
        # Per-dataset sampling seed, so equal row numbers of two datasets draw differently.
        dataset = PairDataset(rows, group_size, self.seed + index, instruction or None)
        part = LabeledPart(name, task_type, instruction or None, bool(in_batch), float(spec.weight), dataset)
        return part, bad

    @staticmethod
    def _row_type(name: str, spec: LabeledDatasetSpec, values: list[str | None]) -> str:
        types = sorted(v for v in values if v)
        if len(types) == 1:
            return types[0]
        where = f"{describe_source(spec.files)} (dataset {name!r})"
        if not types:
            raise DataFormatError(where, "type", f"no task type in any row: set data.datasets.{name}.type or give the rows a \"type\" field")
        raise DataFormatError(
            where, "type", f"mixes task types {types}: split it into one dataset per type or set data.datasets.{name}.type"
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        loaded = [self._load_part(i, name, spec) for i, (name, spec) in enumerate(self.specs.items())]
        parts = [part for part, _ in loaded]
        self.bad_rows = _merge_reports([report for _, report in loaded])
        if self.bad_rows.count:
            log.warning(self.bad_rows.summary())
        if self.sampling == "round_robin" and any(p.weight != 1.0 for p in parts):
            log.warning("dataset weights are used by proportional sampling only; sampling is round_robin")
        for part in parts:
            self.check_language(part.dataset.rows, "query")
        self.train_dataset = LabeledDataset(parts)
        for part in parts:
            log.info(
                "dataset %s: %d rows, type %s, instruction %r, in-batch negatives %s, group size %d",
                part.name, len(part), part.type, part.instruction, part.in_batch_negatives, part.dataset.group_size,
            )

    @property
    def trained_query_instruction(self) -> str | None:
        """The instruction retrieval / reranking queries are trained with (``""``: none), the
        one the model records; with several, the one of the most rows (a warning says so).
        ``None`` when no dataset is of those types."""
        rows: Counter[str] = Counter()
        for part in self.parts:
            if part.type in RETRIEVAL_TYPES:
                rows[part.instruction or ""] += len(part)
        if not rows:
            return None
        if len(rows) > 1:
            log.warning("retrieval datasets train with %d different instructions %s; the model records the most used one", len(rows), dict(rows))
        return rows.most_common(1)[0][0]

    def card_facts(self) -> DataFacts:
        """Each dataset's files, type and rows (rows and types read from the rows once set
        up), batch size, passages per query, seed, language and sampling."""
        loaded = {part.name: part for part in self.train_dataset.parts} if self.train_dataset is not None else {}
        datasets = {
            name: {
                "files": file_list(spec.files),
                "type": (loaded[name].type if name in loaded else None) or spec.type,
                "rows": len(loaded[name]) if name in loaded else None,
            }
            for name, spec in self.specs.items()
        }
        sampling = {"dataset sampling": self.sampling}
        return DataFacts({"datasets": datasets}, self.batch_size, self.seed, self.language, self.train_group_size, sampling)

    @property
    def parts(self) -> list[LabeledPart]:
        """The loaded datasets, in ``datasets`` order (after ``setup``)."""
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        return self.train_dataset.parts

    # ------------------------------------------------------------ negatives refresh
    def mining_rows(self) -> list[dict[str, Any]]:
        """Rows of all datasets concatenated in ``datasets`` order, for hard-negative mining
        (see ``PairDataset.mining_rows``): ``prompt`` is the instruction the query trains
        with, and ``group`` the dataset name, so each dataset is mined in its own pool."""
        return [row for part in self.parts for row in part.dataset.mining_rows(group=part.name)]

    def set_negatives(self, negatives: Sequence[Sequence[str]]) -> None:
        """Replace every row's ``neg`` list (in ``mining_rows`` order) without restarting.
        All lists are checked before any is replaced."""
        total = sum(len(part) for part in self.parts)
        if len(negatives) != total:
            raise ValueError(f"got negatives for {len(negatives)} rows, the data has {total}")
        start, shares = 0, []
        for part in self.parts:
            share = negatives[start : start + len(part)]
            try:
                part.dataset.check_negatives(share)
            except ValueError as err:
                raise ValueError(f"dataset {part.name!r} (rows {start}..{start + len(part) - 1}): {err}") from None
            shares.append(share)
            start += len(part)
        for part, share in zip(self.parts, shares):
            part.dataset.set_negatives(share)

    # ------------------------------------------------------------------ loader
    def schedule(self, world_size: int) -> MixtureSchedule:
        """The epoch plan for ``world_size`` ranks of ``batch_size`` queries each."""
        parts = self.parts
        schedule = MixtureSchedule(
            [p.name for p in parts],
            [len(p) for p in parts],
            [p.weight for p in parts],
            self.batch_size * world_size,
            self.sampling,
            self.seed,
        )
        for part, batches in zip(parts, schedule.batches_per_dataset):
            if batches == 0:
                log.warning(
                    "dataset %s contributes no batch per epoch (%d rows, weight %s, global batch %d)",
                    part.name, len(part), part.weight, schedule.global_batch_size,
                )
        return schedule

    def train_dataloader(self) -> DataLoader:
        rank, world = self.rank_world()
        sampler = SameDatasetBatchSampler(self.schedule(world), self.batch_size, rank, world)
        collator = LabeledCollator({p.name: p.in_batch_negatives for p in self.parts}, **self.collator_kwargs)
        return self.batch_sampler_loader(self.train_dataset, sampler, collator)
