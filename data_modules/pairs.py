"""`PairDataModule`: C-MTP-style query / positive / negative training pairs.

Rows (JSON lines, or a hub dataset with the same columns)::

    {"query": str, "pos": [str, ...] | str, "neg": [str, ...]?, "prompt": str?, "type": str?,
     "pos_scores": [float, ...]?, "neg_scores": [float, ...]?}   (teacher scores: both or neither)

Per query and epoch the module draws one positive and ``train_group_size - 1`` negatives
(see ``sample_group``), prepends the query instruction (the row's ``prompt`` wins over
``query_instruction``), and the collator tokenises queries and passages with their own
max lengths and pads each batch only to its longest row.

Batch layout (``PairCollator``)::

    {"query": {input_ids, attention_mask, ...} [B, Lq],
     "passages": {...} [B * G, Lp]   # per query: positive, then G-1 negatives,
     "group_size": G}
"""

from __future__ import annotations

import logging
import os
import random
from functools import partial
from typing import Any, Iterator, Sequence

import datasets
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase

from ctem.instructions import resolve_instruction, with_instruction
from ctem.data_modules.base import LoaderConfig, ShardedDataModule, file_sources
from ctem.modules.contract import DataFacts
from ctem.rows import (
    BadRowReport,
    DataFormatError,
    OnBadRow,
    check_on_bad_row,
    describe_source,
    error_feature,
    expand_files,
    good_rows,
    hub_table_row,
    iter_rows,
    no_rows,
    raise_or_skip,
    require_rows,
    table_row,
    validate_pair_row,
)

log = logging.getLogger(__name__)

_FEATURES = datasets.Features(
    {
        "query": datasets.Value("string"),
        "pos": datasets.Sequence(datasets.Value("string")),
        "neg": datasets.Sequence(datasets.Value("string")),
        "pos_scores": datasets.Sequence(datasets.Value("float64")),
        "neg_scores": datasets.Sequence(datasets.Value("float64")),
        "prompt": datasets.Value("string"),
        "type": datasets.Value("string"),
        "source": datasets.Value("string"),
        "line": datasets.Value("int64"),
        "error": error_feature(),
    }
)
# The columns of a bad row (its ``error`` holds the record, see ``ctem.rows.table_row``).
_EMPTY_ROW = {"query": "", "pos": [], "neg": [], "pos_scores": [], "neg_scores": [], "prompt": None, "type": None, "source": None, "line": None}
# What a data module's error for a bad row adds after the message.
SKIP_NOTE = "data.on_bad_row=skip skips bad rows"


def _generate_file_rows(files: list[str], min_negatives: int, signature: Any = None) -> Iterator[dict]:
    """Rows of ``files`` for ``datasets``, bad ones with their error (``signature``, the
    files' sizes and mtimes, keys the Arrow cache so an edited file is read again)."""
    validate = partial(validate_pair_row, min_negatives=min_negatives)
    for row in iter_rows(files, validate):
        yield table_row(row, _EMPTY_ROW)


def _file_signature(files: list[str]) -> list[tuple[str, int, int]]:
    return [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]


def sample_group(row: dict[str, Any], group_size: int, rng: random.Random) -> dict[str, Any]:
    """One query's group: ``{"passages": [positive, negative_1, ..., negative_{G-1}]}``, with
    ``"teacher_scores"`` (the same passages' ``pos_scores`` / ``neg_scores``) when the row
    has them.

    The positive is drawn uniformly from ``pos``. Negatives are drawn from ``neg`` without
    replacement; only when ``neg`` has fewer than ``G-1`` entries are all of them used and
    the rest drawn again with replacement.
    """
    positive = rng.choice(range(len(row["pos"])))
    need = group_size - 1
    negatives = list(range(len(row["neg"])))
    if need <= 0:
        chosen = []
    elif len(negatives) >= need:
        chosen = rng.sample(negatives, need)
    else:
        rng.shuffle(negatives)
        chosen = negatives + rng.choices(range(len(row["neg"])), k=need - len(negatives))
    group: dict[str, Any] = {"passages": [row["pos"][positive], *(row["neg"][i] for i in chosen)]}
    if row.get("pos_scores") and (row.get("neg_scores") or not chosen):
        group["teacher_scores"] = [row["pos_scores"][positive], *(row["neg_scores"][i] for i in chosen)]
    return group


class PairDataset(Dataset):
    """Map-style view of validated rows; key ``(index, epoch)`` gives that epoch's group."""

    def __init__(self, rows: datasets.Dataset, group_size: int, seed: int, query_instruction: str | None) -> None:
        self.rows = rows
        self.group_size = group_size
        self.seed = seed
        self.query_instruction = query_instruction

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        row = self.rows[int(index)]
        rng = random.Random(f"{self.seed}:{epoch}:{index}")
        return {
            "query": with_instruction(row["query"], row["prompt"], self.query_instruction),
            **sample_group(row, self.group_size, rng),
        }

    def mining_rows(self, group: str | None = None) -> list[dict[str, Any]]:
        """Rows in order, for hard-negative mining: the raw ``query``, ``prompt`` (the
        instruction its query is trained with, ``None`` for none), ``pos``, ``neg`` and
        ``group`` (the mining pool it belongs to: ``group``, or else its source file)."""
        rows = self.rows
        return [
            {
                "query": q,
                "prompt": prompt if prompt is not None else self.query_instruction,
                "pos": list(pos),
                "neg": list(neg),
                "group": group or source,
            }
            for q, prompt, pos, neg, source in zip(rows["query"], rows["prompt"], rows["pos"], rows["neg"], rows["source"])
        ]

    def check_negatives(self, negatives: Sequence[Sequence[str]]) -> None:
        """Raise ``ValueError`` unless ``negatives`` has one list per row, each non-empty
        when the group size needs negatives."""
        if len(negatives) != len(self.rows):
            raise ValueError(f"got negatives for {len(negatives)} rows, the data has {len(self.rows)}")
        need = self.group_size - 1
        short = [i for i, negs in enumerate(negatives) if len(negs) < min(need, 1)]
        if short:
            raise ValueError(f"{len(short)} row(s) (first: row {short[0]}) got no negatives; group size needs {need}")

    def set_negatives(self, negatives: Sequence[Sequence[str]]) -> None:
        """Replace every row's ``neg`` list (in row order) after ``check_negatives``; the
        teacher's ``neg_scores`` no longer match and are dropped."""
        self.check_negatives(negatives)
        rows = self.rows.remove_columns(["neg", "neg_scores"])
        rows = rows.add_column("neg", [list(n) for n in negatives], feature=_FEATURES["neg"])
        self.rows = rows.add_column("neg_scores", [[] for _ in negatives], feature=_FEATURES["neg_scores"])


class StreamingPairDataset(IterableDataset):
    """Iterable view of a streamed (``datasets.IterableDataset``) source, for data larger than RAM.

    Bad rows raise, or under ``on_bad_row=skip`` are logged with their location as they pass.
    """

    def __init__(
        self,
        rows: datasets.IterableDataset,
        group_size: int,
        seed: int,
        query_instruction: str | None,
        on_bad_row: OnBadRow,
    ) -> None:
        self.rows = rows
        self.group_size = group_size
        self.seed = seed
        self.query_instruction = query_instruction
        self.on_bad_row = on_bad_row
        self.epoch = 0
        self.report = BadRowReport()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.rows.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        for row in good_rows(self.rows, self.on_bad_row, self.report, SKIP_NOTE):
            yield {
                "query": with_instruction(row["query"], row["prompt"], self.query_instruction),
                **sample_group(row, self.group_size, rng),
            }


class PairCollator:
    """Tokenises a list of samples into the batch layout in the module docstring."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        query_max_length: int,
        passage_max_length: int,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def _tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(
                list(texts),
                max_length=max_length,
                truncation=True,
                padding=True,
                pad_to_multiple_of=self.pad_to_multiple_of,
                return_tensors="pt",
            )
        )

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        group_sizes = {len(s["passages"]) for s in samples}
        if len(group_sizes) != 1:
            raise ValueError(f"samples of one batch have different group sizes {sorted(group_sizes)}")
        passages = [p for s in samples for p in s["passages"]]
        batch: dict[str, Any] = {
            "query": self._tokenize([s["query"] for s in samples], self.query_max_length),
            "passages": self._tokenize(passages, self.passage_max_length),
            "group_size": group_sizes.pop(),
        }
        scored = sum("teacher_scores" in s for s in samples)
        if scored == len(samples):
            batch["teacher_scores"] = torch.tensor([s["teacher_scores"] for s in samples], dtype=torch.float32)
        elif scored:
            raise ValueError(
                f"{scored} of the batch's {len(samples)} rows carry teacher scores (pos_scores / neg_scores): "
                "score every row (ctem-score) or none"
            )
        if "task" in samples[0]:
            batch["task"] = samples[0]["task"]
        return batch


def load_pair_rows(
    train_files: str | Sequence[str] | None,
    hub_dataset: str | None,
    hub_split: str,
    min_negatives: int,
    streaming: bool,
    cache_dir: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Rows from local files or a hub dataset via ``datasets``; a bad row has only its
    ``error`` (``ctem.rows.table_row``)."""
    if (train_files is None) == (hub_dataset is None):
        raise ValueError("set exactly one of data.train_files or data.hub_dataset")
    if hub_dataset is not None:
        source = datasets.load_dataset(hub_dataset, split=hub_split, streaming=streaming, cache_dir=cache_dir)

        def mark(raw: dict, index: int) -> dict:
            validate = partial(validate_pair_row, min_negatives=min_negatives)
            return hub_table_row(validate, raw, hub_dataset, hub_split, index, _EMPTY_ROW)

        return source.map(mark, with_indices=True, remove_columns=list(source.column_names or []), features=_FEATURES)
    files = expand_files(list(train_files) if not isinstance(train_files, str) else train_files)
    require_rows(files)
    kwargs = {"files": files, "min_negatives": min_negatives, "signature": _file_signature(files)}
    if streaming:
        return datasets.IterableDataset.from_generator(_generate_file_rows, features=_FEATURES, gen_kwargs=kwargs)
    return datasets.Dataset.from_generator(
        _generate_file_rows, features=_FEATURES, gen_kwargs=kwargs, cache_dir=cache_dir
    )


def drop_bad_rows(rows: datasets.Dataset, on_bad_row: OnBadRow) -> tuple[datasets.Dataset, BadRowReport]:
    """Raise on the first bad row (``raise_or_skip``), or (``skip``) drop them all and report them."""
    report = BadRowReport()
    errors = [DataFormatError.from_record(record) for record in rows["error"] if record is not None]
    if not errors:
        return rows, report
    note = f"{SKIP_NOTE}; {len(errors)} bad row(s) in all" if len(errors) > 1 else SKIP_NOTE
    for error in errors:
        raise_or_skip(error, on_bad_row, report, note)
    return rows.filter(lambda error: error is None, input_columns="error"), report


class PairDataModule(ShardedDataModule):
    """Training pairs for the contrastive stage.

    Args:
        train_files: JSON-lines files, globs or folders (one of this or ``hub_dataset``).
        hub_dataset: a hub dataset name with the same columns, loaded with ``datasets``.
        hub_split: split of ``hub_dataset``.
        tokenizer: the encoder's tokenizer (``train.py`` passes it).
        batch_size: queries per batch per device (passages: ``batch_size * train_group_size``).
        train_group_size: passages per query: 1 positive + ``train_group_size - 1`` negatives.
        query_max_length / passage_max_length: token limits.
        query_instruction: prepended to every query without its own ``prompt``.
        streaming: stream rows instead of building a memory-mapped Arrow table.
        shuffle_buffer_size: shuffle buffer of the streaming source.
        on_bad_row: ``error`` (stop with file:line:field) or ``skip`` (drop and report).
        seed: seed of shuffling and per-row sampling.
        language: ISO 639-1 code of the data (``conf/lang``), written into the model card.
        loader: worker processes, pinned memory, persistent workers (``LoaderConfig``;
            ``None``: its defaults). Persistent workers never see negatives refreshed
            during training.
        pad_to_multiple_of: pad token lengths to a multiple of this (``None``: longest row).
        drop_last: drop a last incomplete batch (keeps batch size, hence negatives, fixed).
        cache_dir: ``datasets`` cache folder (``None``: its default).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train_files: str | Sequence[str] | None = None,
        hub_dataset: str | None = None,
        hub_split: str = "train",
        batch_size: int = 32,
        train_group_size: int = 2,
        query_max_length: int = 64,
        passage_max_length: int = 256,
        query_instruction: str | None = None,
        streaming: bool = False,
        shuffle_buffer_size: int = 10_000,
        on_bad_row: OnBadRow = "error",
        seed: int = 42,
        loader: LoaderConfig | None = None,
        pad_to_multiple_of: int | None = None,
        drop_last: bool = True,
        cache_dir: str | None = None,
        language: str | None = None,
    ) -> None:
        super().__init__(loader, language)
        if train_group_size < 1:
            raise ValueError(f"train_group_size must be >= 1, got {train_group_size}")
        check_on_bad_row(on_bad_row)
        self.tokenizer = tokenizer
        self.train_files = train_files
        self.hub_dataset = hub_dataset
        self.hub_split = hub_split
        self.batch_size = batch_size
        self.train_group_size = train_group_size
        self.query_instruction = resolve_instruction(query_instruction)
        self.streaming = streaming
        self.shuffle_buffer_size = shuffle_buffer_size
        self.on_bad_row = on_bad_row
        self.seed = seed
        self.drop_last = drop_last
        self.cache_dir = cache_dir
        self.collator = PairCollator(tokenizer, query_max_length, passage_max_length, pad_to_multiple_of)
        self.train_dataset: PairDataset | StreamingPairDataset | None = None
        self.bad_rows = BadRowReport()

    @property
    def trained_query_instruction(self) -> str | None:
        """``data.query_instruction``, the instruction queries without their own ``prompt``
        train with (``None``: not set, so ``model.query_instruction`` or the model's recorded
        one stays)."""
        return self.query_instruction

    def card_facts(self) -> DataFacts:
        """The files or hub dataset, batch size, passages per query, seed and language."""
        sources = file_sources(self.train_files, self.hub_dataset)
        return DataFacts(sources, self.batch_size, self.seed, self.language, self.train_group_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        rows = load_pair_rows(
            self.train_files,
            self.hub_dataset,
            self.hub_split,
            min_negatives=1 if self.train_group_size > 1 else 0,
            streaming=self.streaming,
            cache_dir=self.cache_dir,
        )
        if self.streaming:
            rows = self.shuffled_shard(rows, self.shuffle_buffer_size)
            self.train_dataset = StreamingPairDataset(
                rows, self.train_group_size, self.seed, self.query_instruction, self.on_bad_row
            )
            self.bad_rows = self.train_dataset.report
            return
        rows, self.bad_rows = drop_bad_rows(rows, self.on_bad_row)
        if self.bad_rows.count:
            log.warning(self.bad_rows.summary())
        if len(rows) == 0:
            raise no_rows(describe_source(self.train_files, self.hub_dataset), self.bad_rows)
        self.check_language(rows, "query")
        self.train_dataset = PairDataset(rows, self.train_group_size, self.seed, self.query_instruction)

    # ------------------------------------------------------------ negatives refresh
    def mining_rows(self) -> list[dict[str, Any]]:
        """Training rows in dataset order, for hard-negative mining (see
        ``PairDataset.mining_rows``; each source file is its own pool). Not available when
        streaming."""
        return self._map_style_dataset().mining_rows()

    def set_negatives(self, negatives: Sequence[Sequence[str]]) -> None:
        """Replace every row's ``neg`` list (in ``mining_rows`` order) without restarting.

        Takes effect at the next batch with ``loader.num_workers=0``; with worker processes
        at the next epoch only if workers are not persistent.
        """
        self._map_style_dataset().set_negatives(negatives)

    def _map_style_dataset(self) -> PairDataset:
        if self.train_dataset is None:
            self.setup("fit")
        if not isinstance(self.train_dataset, PairDataset):
            raise ValueError("hard-negative mining needs the map-style dataset (data.streaming=false)")
        return self.train_dataset

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None, "call setup() first"
        return self.sharded_loader(self.train_dataset, self.collator)
