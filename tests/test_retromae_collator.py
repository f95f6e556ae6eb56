"""RetroMAE data: mask ratios, special / padding tokens, decoder masks, whole words, packing, reading."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from ctem.tokenization import load_tokenizer
from ctem.data_modules import DataFormatError, PretrainCorpusDataModule
from ctem.data_modules.corpus import RetroMAECollator, pack_token_rows, tokenize_texts, word_spans
from tests.retromae_helpers import random_texts


@pytest.fixture(scope="module")
def tokenizer(tiny_vocab):
    return load_tokenizer(str(tiny_vocab))


def rows_of(texts, tokenizer, max_tokens=62, segmentation=None):
    tokens = tokenize_texts(texts, tokenizer, max_tokens, segmentation)
    return [{"input_ids": i, "word_ids": w} for i, w in zip(tokens["input_ids"], tokens["word_ids"])]


def collate(tokenizer, rows, seed=0, **settings):
    collator = RetroMAECollator(tokenizer, generator=torch.Generator().manual_seed(seed), **settings)
    return collator(rows)


def maskable(batch, tokenizer) -> torch.Tensor:
    ids = batch["decoder_input_ids"]
    return (batch["encoder"]["attention_mask"] == 1) & ~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))


@pytest.mark.parametrize("encoder_ratio,decoder_ratio", [(0.3, 0.5), (0.15, 0.7)])
def test_measured_mask_ratios_match_config(tokenizer, encoder_ratio, decoder_ratio) -> None:
    rows = rows_of(random_texts(600, seed=1, min_len=3, max_len=60), tokenizer)
    encoder_hidden = decoder_hidden = encoder_total = decoder_total = 0
    for start in range(0, len(rows), 100):
        batch = collate(tokenizer, rows[start : start + 100], seed=start, encoder_mask_ratio=encoder_ratio, decoder_mask_ratio=decoder_ratio)
        can_mask = maskable(batch, tokenizer)
        encoder_hidden += int((batch["encoder_labels"] != -100).sum())
        encoder_total += int(can_mask.sum())
        # decoder: for every real row i, the share of maskable keys j != i that row i cannot see
        keys = can_mask.unsqueeze(1) & batch["encoder"]["attention_mask"].bool().unsqueeze(2)
        keys &= ~torch.eye(keys.size(-1), dtype=torch.bool)
        decoder_hidden += int((keys & ~batch["decoder_attention_mask"]).sum())
        decoder_total += int(keys.sum())
    assert abs(encoder_hidden / encoder_total - encoder_ratio) < 0.03
    assert abs(decoder_hidden / decoder_total - decoder_ratio) < 0.03


def test_special_and_padding_tokens_never_masked_or_visible(tokenizer) -> None:
    rows = rows_of(random_texts(200, seed=2, min_len=1, max_len=50), tokenizer)
    batch = collate(tokenizer, rows, seed=3, pad_to_multiple_of=8)
    ids, attention = batch["decoder_input_ids"], batch["encoder"]["attention_mask"].bool()
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) & attention
    padding = ~attention
    assert ids.size(1) % 8 == 0 and padding.any()
    assert (ids[:, 0] == tokenizer.cls_token_id).all()
    lengths = attention.sum(1)
    assert (ids[torch.arange(len(rows)), lengths - 1] == tokenizer.sep_token_id).all()
    # encoder: specials and padding keep their ids and are never targets
    assert (batch["encoder"]["input_ids"][special | padding] == ids[special | padding]).all()
    assert (batch["encoder_labels"][special | padding] == -100).all()
    # decoder: no special / padding target; every other real token is a target
    assert (batch["decoder_labels"][special | padding] == -100).all()
    real_tokens = attention & ~special
    assert (batch["decoder_labels"][real_tokens] == ids[real_tokens]).all()
    visible = batch["decoder_attention_mask"]
    assert not visible[padding.unsqueeze(1).expand_as(visible)].any(), "a padding key is visible"
    # specials are visible to every real row except their own
    rows_real = attention.unsqueeze(2) & special.unsqueeze(1)
    off_diagonal = ~torch.eye(ids.size(1), dtype=torch.bool)
    assert visible[rows_real & off_diagonal].all()
    # every row can attend somewhere (no empty softmax)
    assert visible.any(dim=-1).all()


def test_each_decoder_row_hides_its_own_position(tokenizer) -> None:
    batch = collate(tokenizer, rows_of(random_texts(64, seed=4), tokenizer), seed=5, decoder_mask_ratio=0.1)
    diagonal = batch["decoder_attention_mask"].diagonal(dim1=1, dim2=2)
    assert not diagonal.any()
    # and rows do differ (they draw from a pool of masks)
    first = batch["decoder_attention_mask"][0]
    n = int(batch["encoder"]["attention_mask"][0].sum())
    assert len({tuple(first[i, :n].tolist()) for i in range(n)}) > 1


def test_random_replacement_avoids_special_tokens(tokenizer) -> None:
    rows = rows_of(random_texts(300, seed=6, min_len=20, max_len=60), tokenizer)
    batch = collate(tokenizer, rows, seed=7, encoder_mask_ratio=0.5, mask_token_prob=0.0, random_token_prob=1.0)
    targets = batch["encoder_labels"] != -100
    replaced = batch["encoder"]["input_ids"][targets]
    assert not torch.isin(replaced, torch.tensor(tokenizer.all_special_ids)).any()
    batch = collate(tokenizer, rows, seed=8)
    targets = batch["encoder_labels"] != -100
    share_mask = (batch["encoder"]["input_ids"][targets] == tokenizer.mask_token_id).float().mean()
    assert abs(float(share_mask) - 0.8) < 0.03


def test_whole_word_masking_with_presegmented_text(tokenizer) -> None:
    texts = [" ".join(random_texts(12, seed=s, min_len=1, max_len=4)) for s in range(150)]
    rows = rows_of(texts, tokenizer, max_tokens=126, segmentation="whitespace")
    assert rows[0]["word_ids"][0] == rows[0]["word_ids"][len(texts[0].split()[0]) - 1]
    batch = collate(tokenizer, rows, seed=9)
    hidden, total = 0, 0
    for b, row in enumerate(rows):
        words = torch.tensor(row["word_ids"])
        masked = (batch["encoder_labels"][b, 1 : len(words) + 1] != -100)
        for w in words.unique():
            assert masked[words == w].all() or not masked[words == w].any(), "a word was masked in part"
        hidden += int(masked.sum())
        total += len(words)
    assert abs(hidden / total - 0.3) < 0.03


@pytest.mark.skipif(importlib.util.find_spec("jieba") is None, reason="jieba not installed (pip install 'ctem[zh]')")
def test_jieba_segmentation_groups_tokens_of_a_word(tokenizer) -> None:
    spans = word_spans("我们是中国人", "jieba")
    assert spans[0] == (0, 2)
    row = rows_of(["我们是中国人"], tokenizer, segmentation="jieba")[0]
    assert row["word_ids"][0] == row["word_ids"][1] and row["word_ids"][1] != row["word_ids"][2]


def test_packing_keeps_every_token_in_full_rows() -> None:
    ids = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34]]
    words = [[0, 1, 2], [0, 0], [0, 1, 1, 2, 3]]
    packed = pack_token_rows(ids, words, capacity=4, separator_id=3)
    assert packed["input_ids"] == [[10, 11, 12, 3], [20, 21, 3, 30], [31, 32, 33, 34], [3]]
    flat_words = [w for row in packed["word_ids"] for w in row]
    assert flat_words == [0, 1, 2, -1, 3, 3, -1, 4, 5, 5, 6, 7, -1]


def write_lines(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_data_module_reads_jsonl_and_text_files_with_truncation_or_packing(tokenizer, tmp_path) -> None:
    texts = random_texts(40, seed=10, min_len=5, max_len=30)
    jsonl = write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t, "id": i}, ensure_ascii=False) for i, t in enumerate(texts[:20])])
    txt = write_lines(tmp_path / "b.txt", texts[20:] + [""])
    common = dict(tokenizer=tokenizer, train_files=[jsonl, txt], batch_size=8, cache_dir=str(tmp_path / "cache"))
    dm = PretrainCorpusDataModule(**common, passage_max_length=16)
    dm.setup("fit")
    assert dm.max_seq_length == 16 and len(dm.train_dataset) == 40
    assert max(len(dm.train_dataset[i]["input_ids"]) for i in range(40)) == 14
    batch = next(iter(dm.train_dataloader()))
    assert batch["decoder_attention_mask"].shape == (8, 16, 16)
    packed = PretrainCorpusDataModule(**common, max_seq_length=32, packing=True)
    packed.setup("fit")
    lengths = [len(packed.train_dataset[i]["input_ids"]) for i in range(len(packed.train_dataset))]
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    assert sum(lengths) == total and all(n == 30 for n in lengths[:-1])
    streamed = PretrainCorpusDataModule(**common, max_seq_length=32, packing=True, streaming=True)
    streamed.setup("fit")
    assert sum(len(r["input_ids"]) for r in streamed.train_dataset) == total


def test_bad_rows_name_file_line_and_field(tokenizer, tmp_path) -> None:
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps({"text": "好的"}), json.dumps({"body": "x"}), "{oops", json.dumps({"text": ""})])
    dm = PretrainCorpusDataModule(tokenizer, train_files=[bad], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: field 'text': missing") as err:
        dm.setup("fit")
    assert (err.value.file, err.value.line, err.value.field) == (str(bad), 2, "text")
    skip = PretrainCorpusDataModule(tokenizer, train_files=[bad], on_bad_row="skip", cache_dir=str(tmp_path / "cache"))
    skip.setup("fit")
    assert len(skip.train_dataset) == 1 and skip.bad_rows.count == 3
    streamed = PretrainCorpusDataModule(tokenizer, train_files=[bad], streaming=True)
    streamed.setup("fit")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:[234]: .*\(data.on_bad_row=skip skips bad rows\)$") as err:
        list(streamed.train_dataset)
    assert err.value.file == str(bad) and err.value.line in (2, 3, 4)


def test_plain_text_corpus_bad_utf8_names_file_and_line(tokenizer, tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes("第一行\n".encode() + b"\xff\xfe\n" + "第三行\n".encode())
    dm = PretrainCorpusDataModule(tokenizer, train_files=[str(corpus)], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataFormatError) as err:
        dm.setup("fit")
    assert (err.value.file, err.value.line, err.value.field) == (str(corpus), 2, None)
    assert str(err.value).startswith(f"{corpus}:2: invalid UTF-8")
    skip = PretrainCorpusDataModule(tokenizer, train_files=[str(corpus)], on_bad_row="skip", cache_dir=str(tmp_path / "cache"))
    skip.setup("fit")
    assert len(skip.train_dataset) == 2 and skip.bad_rows.count == 1
