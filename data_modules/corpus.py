"""`PretrainCorpusDataModule`: plain text for RetroMAE pre-training, and the RetroMAE collator.

Sources (one of):
    * JSON lines ``{"text": str, ...}`` (``.jsonl`` / ``.json``; other keys are ignored),
    * plain text files (any other suffix): one text per non-blank line,
    * a hub dataset with a text column, loaded with ``datasets`` (``streaming`` for corpora
      larger than disk or RAM).

Each text is tokenised without special tokens, then either truncated to
``max_seq_length - 2`` tokens (``packing=false``: one text per row) or packed
(``packing=true``: consecutive texts joined by [SEP] and cut into rows of exactly
``max_seq_length - 2`` tokens, so nothing is thrown away and no compute goes to padding).
The collator adds [CLS] / [SEP] and draws the masks (``RetroMAECollator``).

Whole-word masking (``word_segmentation``):
    * ``null`` (default): units are the tokenizer's pre-tokenised words: every Chinese
      character on its own (character masking), a Latin word with all its WordPieces.
    * ``jieba``: Chinese words from ``jieba`` segmentation (``pip install ctem[zh]``); all
      tokens of a word are masked together.
    * ``whitespace``: the corpus is already segmented, words separated by spaces
      (``"我 爱 北京 天安门"``); BERT tokenisation ignores the spaces between Chinese characters,
      so the model sees the same tokens as for the unsegmented text.
"""

from __future__ import annotations

import bisect
import logging
import os
from typing import Any, Callable, Iterator, Literal, Sequence

import datasets
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase

from ctem.retromae.masking import PADDING, SPECIAL, corrupt_for_mlm, decoder_attention_mask, sample_unit_masks
from ctem.tokenization import check_max_length
from ctem.rows import (
    BadRowReport,
    OnBadRow,
    check_on_bad_row,
    describe_source,
    error_feature,
    expand_files,
    good_rows,
    hub_table_row,
    iter_rows,
    no_rows,
    require_object,
    require_rows,
    require_text,
    table_row,
)
from ctem.data_modules.base import LoaderConfig, ShardedDataModule, file_sources
from ctem.modules.contract import DataFacts
from ctem.data_modules.pairs import SKIP_NOTE, drop_bad_rows

log = logging.getLogger(__name__)

WordSegmentation = Literal["jieba", "whitespace"]
_TEXT_FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "source": datasets.Value("string"),
        "line": datasets.Value("int64"),
        "error": error_feature(),
    }
)
# The columns of a bad row (its ``error`` holds the record, see ``ctem.rows.table_row``).
_EMPTY_ROW = {"text": "", "source": None, "line": None}
_TOKEN_FEATURES = datasets.Features(
    {"input_ids": datasets.Sequence(datasets.Value("int32")), "word_ids": datasets.Sequence(datasets.Value("int32"))}
)


# --------------------------------------------------------------------------- reading
def validate_text_row(row: Any, location: str, text_field: str = "text") -> str:
    """The text of one corpus row; a bad row raises ``DataFormatError`` naming ``text_field``."""
    return require_text(require_object(row, location), text_field, location)


def _text_validator(text_field: str) -> Callable[[Any, str], dict[str, str]]:
    """A ``ctem.rows`` validator of JSON corpus rows: ``{"text": <text_field>}``."""
    return lambda value, location: {"text": validate_text_row(value, location, text_field)}


def _plain_text(text: str, location: str) -> dict[str, str]:
    return {"text": text}


def _generate_text_rows(files: list[str], text_field: str, signature: Any = None) -> Iterator[dict[str, Any]]:
    """Rows of ``files`` for ``datasets`` (JSON lines read ``text_field``, other files are one
    text per line; bad rows carry their error; ``signature``, the files' sizes and mtimes,
    keys the Arrow cache so an edited file is read again)."""
    for row in iter_rows(files, _text_validator(text_field), validate_text=_plain_text):
        yield table_row(row, _EMPTY_ROW)


def load_text_rows(
    train_files: str | Sequence[str] | None,
    hub_dataset: str | None,
    hub_split: str,
    hub_config: str | None,
    text_field: str,
    streaming: bool,
    cache_dir: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Text rows (``text``, ``source``, ``line``, ``error``: see ``ctem.rows.table_row``)
    from files or a hub dataset."""
    if (train_files is None) == (hub_dataset is None):
        raise ValueError("set exactly one of data.train_files or data.hub_dataset")
    if hub_dataset is not None:
        source = datasets.load_dataset(hub_dataset, hub_config, split=hub_split, streaming=streaming, cache_dir=cache_dir)

        def mark(raw: dict, index: int) -> dict:
            return hub_table_row(_text_validator(text_field), raw, hub_dataset, hub_split, index, _EMPTY_ROW)

        return source.map(mark, with_indices=True, remove_columns=list(source.column_names or []), features=_TEXT_FEATURES)
    files = expand_files(list(train_files) if not isinstance(train_files, str) else train_files)
    require_rows(files)
    signature = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
    kwargs = {"files": files, "text_field": text_field, "signature": signature}
    if streaming:
        return datasets.IterableDataset.from_generator(_generate_text_rows, features=_TEXT_FEATURES, gen_kwargs=kwargs)
    return datasets.Dataset.from_generator(_generate_text_rows, features=_TEXT_FEATURES, gen_kwargs=kwargs, cache_dir=cache_dir)


# --------------------------------------------------------------------------- tokenising
def word_spans(text: str, segmentation: WordSegmentation) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the words of ``text``, in order."""
    if segmentation == "whitespace":
        spans, start = [], None
        for i, ch in enumerate(text + " "):
            if ch.isspace():
                if start is not None:
                    spans.append((start, i))
                start = None
            elif start is None:
                start = i
        return spans
    if segmentation == "jieba":
        try:
            import jieba
        except ImportError as err:
            raise ImportError("word_segmentation=jieba needs jieba: pip install 'ctem[zh]' (or pip install jieba)") from err
        return [(start, end) for _, start, end in jieba.tokenize(text)]
    raise ValueError(f"unknown word_segmentation {segmentation!r}; use null, jieba or whitespace")


def tokenize_texts(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_tokens: int | None,
    segmentation: WordSegmentation | None = None,
) -> dict[str, list[list[int]]]:
    """``input_ids`` (no special tokens, at most ``max_tokens`` each when given) and
    ``word_ids`` (one id per token, equal within a word) of every text."""
    encoded = tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=max_tokens is not None,
        max_length=max_tokens,
        return_offsets_mapping=segmentation is not None,
        verbose=False,
    )
    word_ids: list[list[int]] = []
    for i, text in enumerate(texts):
        if segmentation is None:
            word_ids.append([-1 if w is None else w for w in encoded.word_ids(i)])
            continue
        starts = [start for start, _ in word_spans(text, segmentation)]
        word_ids.append([max(bisect.bisect_right(starts, start) - 1, 0) for start, _ in encoded["offset_mapping"][i]])
    return {"input_ids": [list(ids) for ids in encoded["input_ids"]], "word_ids": word_ids}


def pack_token_rows(
    input_ids: Sequence[Sequence[int]],
    word_ids: Sequence[Sequence[int]],
    capacity: int,
    separator_id: int,
) -> dict[str, list[list[int]]]:
    """Concatenate texts (each followed by ``separator_id``) and cut the stream into rows of
    ``capacity`` tokens; the last row of the block may be shorter. Word ids are renumbered
    so that words of different texts never share an id."""
    rows_ids: list[list[int]] = []
    rows_words: list[list[int]] = []
    stream_ids: list[int] = []
    stream_words: list[int] = []
    offset = 0
    for ids, words in zip(input_ids, word_ids):
        stream_ids += [*ids, separator_id]
        stream_words += [w + offset if w >= 0 else SPECIAL for w in words] + [SPECIAL]
        offset += max((w for w in words if w >= 0), default=-1) + 1
    for start in range(0, len(stream_ids), capacity):
        rows_ids.append(stream_ids[start : start + capacity])
        rows_words.append(stream_words[start : start + capacity])
    return {"input_ids": rows_ids, "word_ids": rows_words}


class CorpusTokenizer:
    """Turns a block of text rows into training rows (tokenise, then truncate or pack).

    ``max_seq_length`` includes the [CLS] and [SEP] the collator adds.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_seq_length: int,
        packing: bool,
        segmentation: WordSegmentation | None,
    ) -> None:
        check_max_length(tokenizer, max_seq_length, "data.max_seq_length")  # room for [CLS], [SEP] and a token
        self.tokenizer = tokenizer
        self.capacity = max_seq_length - 2
        self.packing = packing
        self.segmentation = segmentation

    def __call__(self, block: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        tokens = tokenize_texts(block["text"], self.tokenizer, None if self.packing else self.capacity, self.segmentation)
        if not self.packing:
            return tokens
        return pack_token_rows(tokens["input_ids"], tokens["word_ids"], self.capacity, self.tokenizer.sep_token_id)


# --------------------------------------------------------------------------- collating
class RetroMAECollator:
    """Builds RetroMAE batches from rows ``{"input_ids", "word_ids"}`` (no special tokens).

    Each row becomes ``[CLS] tokens [SEP]``. Special tokens (``tokenizer.all_special_ids``,
    [UNK] included) and padding are never masked and never predicted; padding is never
    visible. Output (``L`` = longest row, rounded up to ``pad_to_multiple_of``)::

        encoder: {input_ids [B, L] (BERT-corrupted: of the masked tokens mask_token_prob
                  -> [MASK], random_token_prob -> a random token, the rest unchanged),
                  attention_mask [B, L]}
        encoder_labels [B, L]            original id where the encoder mask hides it, else -100
        decoder_input_ids [B, L]         the clean text
        decoder_labels [B, L]            every non-special real token, else -100
        decoder_attention_mask [B, L, L] bool, per row i: True where row i may attend

    Args:
        tokenizer: the encoder's tokenizer.
        encoder_mask_ratio: share of maskable tokens hidden from the encoder (0.3).
        decoder_mask_ratio: share of maskable tokens hidden from each decoder row (0.5).
        decoder_mask_pool_size: random decoder masks drawn per text; every position picks
            one of them (RetroMAE's pool; at most one mask per position is drawn).
        mask_token_prob / random_token_prob: BERT corruption of the encoder's masked tokens.
        pad_to_multiple_of: pad ``L`` up to a multiple (8 helps tensor cores).
        generator: random source (``None``: torch's global generator, seeded by Lightning).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        encoder_mask_ratio: float = 0.3,
        decoder_mask_ratio: float = 0.5,
        decoder_mask_pool_size: int = 128,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        for name, ratio in (("encoder_mask_ratio", encoder_mask_ratio), ("decoder_mask_ratio", decoder_mask_ratio)):
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {ratio}")
        if decoder_mask_pool_size < 1:
            raise ValueError(f"decoder_mask_pool_size must be >= 1, got {decoder_mask_pool_size}")
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.mask_token_id is None:
            raise ValueError("RetroMAE needs a tokenizer with [CLS], [SEP] and [MASK] tokens")
        self.tokenizer = tokenizer
        self.encoder_mask_ratio = encoder_mask_ratio
        self.decoder_mask_ratio = decoder_mask_ratio
        self.decoder_mask_pool_size = decoder_mask_pool_size
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        self.pad_to_multiple_of = pad_to_multiple_of
        self.generator = generator
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        vocabulary = torch.arange(len(tokenizer))
        self.random_token_ids = vocabulary[~torch.isin(vocabulary, self.special_ids)]

    def __call__(self, rows: list[dict[str, Sequence[int]]]) -> dict[str, Any]:
        length = max(len(r["input_ids"]) for r in rows) + 2
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(rows)
        input_ids = torch.full((batch_size, length), self.tokenizer.pad_token_id, dtype=torch.long)
        word_ids = torch.full((batch_size, length), PADDING, dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[b, : n + 2] = torch.tensor([self.tokenizer.cls_token_id, *row["input_ids"], self.tokenizer.sep_token_id])
            word_ids[b, : n + 2] = torch.tensor([SPECIAL, *row["word_ids"], SPECIAL])
        real = word_ids != PADDING
        word_ids[real & torch.isin(input_ids, self.special_ids)] = SPECIAL
        encoder_mask = sample_unit_masks(word_ids, self.encoder_mask_ratio, 1, self.generator)[:, 0]
        encoder_inputs, encoder_labels = corrupt_for_mlm(
            input_ids,
            encoder_mask,
            self.tokenizer.mask_token_id,
            self.random_token_ids,
            self.mask_token_prob,
            self.random_token_prob,
            self.generator,
        )
        decoder_mask = decoder_attention_mask(word_ids, self.decoder_mask_ratio, self.decoder_mask_pool_size, self.generator)
        return {
            "encoder": {"input_ids": encoder_inputs, "attention_mask": real.long()},
            "encoder_labels": encoder_labels,
            "decoder_input_ids": input_ids,
            "decoder_labels": torch.where(word_ids >= 0, input_ids, torch.full_like(input_ids, -100)),
            "decoder_attention_mask": decoder_mask,
        }


# --------------------------------------------------------------------------- datasets
class CorpusDataset(Dataset):
    """Map-style view of tokenised rows; accepts ``index`` or ``(index, epoch)`` keys."""

    def __init__(self, rows: datasets.Dataset) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, list[int]]:
        index = key[0] if isinstance(key, tuple) else key
        return self.rows[int(index)]


class StreamingCorpusDataset(IterableDataset):
    """Streams text rows, tokenising (and packing) them in blocks of ``block_size`` texts.

    Bad rows raise, or under ``on_bad_row=skip`` are logged with their location as they pass.
    """

    def __init__(self, rows: datasets.IterableDataset, to_tokens: CorpusTokenizer, block_size: int, on_bad_row: OnBadRow) -> None:
        self.rows = rows
        self.to_tokens = to_tokens
        self.block_size = block_size
        self.on_bad_row = on_bad_row
        self.report = BadRowReport()

    def set_epoch(self, epoch: int) -> None:
        self.rows.set_epoch(epoch)

    def _blocks(self) -> Iterator[list[str]]:
        block: list[str] = []
        for row in good_rows(self.rows, self.on_bad_row, self.report, SKIP_NOTE):
            block.append(row["text"])
            if len(block) == self.block_size:
                yield block
                block = []
        if block:
            yield block

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        for block in self._blocks():
            tokens = self.to_tokens({"text": block})
            for ids, words in zip(tokens["input_ids"], tokens["word_ids"]):
                yield {"input_ids": ids, "word_ids": words}


# --------------------------------------------------------------------------- module
class PretrainCorpusDataModule(ShardedDataModule):
    """Plain-text corpus for the RetroMAE stage (see the module docstring for formats).

    Args:
        tokenizer: the encoder's tokenizer (``train.py`` passes it).
        train_files: files, globs or folders (folders: their ``*.jsonl``); JSON lines read
            ``text_field``, any other file is one text per line. One of this or ``hub_dataset``.
        hub_dataset / hub_config / hub_split: a hub dataset loaded with ``datasets``.
        text_field: the text column / JSON key.
        max_seq_length: tokens per row including [CLS] and [SEP]; ``None``: the encoder's
            ``passage_max_length`` (which ``train.py`` passes).
        packing: pack texts into full rows (see module docstring) instead of one truncated
            text per row.
        word_segmentation: ``None`` (character / WordPiece-word masking), ``jieba`` or
            ``whitespace`` (whole-word masking; see module docstring).
        encoder_mask_ratio / decoder_mask_ratio / decoder_mask_pool_size / mask_token_prob /
            random_token_prob / pad_to_multiple_of: ``RetroMAECollator`` settings.
        batch_size: rows per batch per device.
        streaming: stream and tokenise on the fly instead of building a tokenised Arrow
            table (for corpora larger than disk or RAM).
        shuffle_buffer_size: shuffle buffer (rows) when streaming.
        block_size: texts tokenised (and packed) together.
        preprocessing_num_proc: processes for tokenising a map-style corpus (``None``: one).
        on_bad_row: ``error`` (stop, naming file:line:field) or ``skip`` (drop and report).
        seed: shuffling seed.
        language: ISO 639-1 code of the corpus (``conf/lang``), written into the model card.
        loader: worker processes (the collator draws the masks there), pinned memory,
            persistent workers (``LoaderConfig``; ``None``: its defaults).
        drop_last: drop a last incomplete batch.
        cache_dir: ``datasets`` cache folder (``None``: its default).
        query_max_length: accepted for ``train.py``'s common call and unused.
        passage_max_length: the default of ``max_seq_length``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train_files: str | Sequence[str] | None = None,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        hub_split: str = "train",
        text_field: str = "text",
        max_seq_length: int | None = None,
        packing: bool = False,
        word_segmentation: WordSegmentation | None = None,
        encoder_mask_ratio: float = 0.3,
        decoder_mask_ratio: float = 0.5,
        decoder_mask_pool_size: int = 128,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        batch_size: int = 32,
        streaming: bool = False,
        shuffle_buffer_size: int = 10_000,
        block_size: int = 1000,
        preprocessing_num_proc: int | None = None,
        on_bad_row: OnBadRow = "error",
        seed: int = 42,
        loader: LoaderConfig | None = None,
        drop_last: bool = True,
        cache_dir: str | None = None,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        language: str | None = None,
    ) -> None:
        super().__init__(loader, language)
        check_on_bad_row(on_bad_row)
        if word_segmentation not in (None, "jieba", "whitespace"):
            raise ValueError(f"word_segmentation must be null, jieba or whitespace, got {word_segmentation!r}")
        self.tokenizer = tokenizer
        self.train_files = train_files
        self.hub_dataset = hub_dataset
        self.hub_config = hub_config
        self.hub_split = hub_split
        self.text_field = text_field
        self.max_seq_length = max_seq_length or passage_max_length or 512
        self.to_tokens = CorpusTokenizer(tokenizer, self.max_seq_length, packing, word_segmentation)
        self.collator = RetroMAECollator(
            tokenizer,
            encoder_mask_ratio,
            decoder_mask_ratio,
            decoder_mask_pool_size,
            mask_token_prob,
            random_token_prob,
            pad_to_multiple_of,
        )
        self.batch_size = batch_size
        self.streaming = streaming
        self.shuffle_buffer_size = shuffle_buffer_size
        self.block_size = block_size
        self.preprocessing_num_proc = preprocessing_num_proc
        self.on_bad_row = on_bad_row
        self.seed = seed
        self.drop_last = drop_last
        self.cache_dir = cache_dir
        self.train_dataset: CorpusDataset | StreamingCorpusDataset | None = None
        self.bad_rows = BadRowReport()

    def card_facts(self) -> DataFacts:
        """The files or hub dataset, batch size, seed, language, mask ratios and sequence length."""
        ratios = f"{self.collator.encoder_mask_ratio:g} / {self.collator.decoder_mask_ratio:g}"
        settings = {"encoder / decoder mask ratio": ratios, "max sequence length": self.max_seq_length}
        sources = file_sources(self.train_files, self.hub_dataset)
        return DataFacts(sources, self.batch_size, self.seed, self.language, settings=settings)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        rows = load_text_rows(
            self.train_files,
            self.hub_dataset,
            self.hub_split,
            self.hub_config,
            self.text_field,
            streaming=self.streaming,
            cache_dir=self.cache_dir,
        )
        if self.streaming:
            rows = self.shuffled_shard(rows, self.shuffle_buffer_size)
            self.train_dataset = StreamingCorpusDataset(rows, self.to_tokens, self.block_size, self.on_bad_row)
            self.bad_rows = self.train_dataset.report
            return
        rows, self.bad_rows = drop_bad_rows(rows, self.on_bad_row)
        if self.bad_rows.count:
            log.warning(self.bad_rows.summary())
        if len(rows) == 0:
            raise no_rows(describe_source(self.train_files, self.hub_dataset), self.bad_rows)
        self.check_language(rows, "text")
        tokens = rows.map(
            self.to_tokens,
            batched=True,
            batch_size=self.block_size,
            remove_columns=rows.column_names,
            features=_TOKEN_FEATURES,
            num_proc=self.preprocessing_num_proc,
            desc="tokenising corpus",
        )
        self.train_dataset = CorpusDataset(tokens)

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None, "call setup() first"
        return self.sharded_loader(self.train_dataset, self.collator)
