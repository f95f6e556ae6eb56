"""RetroMAEModule: the decoder reads only [CLS], tied head, saving / restoring, pretrained heads, sizes."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModel, BertConfig, BertForMaskedLM

from ctem import TextEncoder
from ctem.modules import RetroMAEModule
from ctem.retromae import DECODER_DIR_NAME, load_pretrained_mlm_head
from ctem.data_modules.corpus import RetroMAECollator, tokenize_texts
from tests.retromae_helpers import ROOT, TINY, random_texts, tiny_encoder


def make_batch(tokenizer, n: int = 6, seed: int = 0) -> dict:
    tokens = tokenize_texts(random_texts(n, seed=seed), tokenizer, 30)
    rows = [{"input_ids": i, "word_ids": w} for i, w in zip(tokens["input_ids"], tokens["word_ids"])]
    return RetroMAECollator(tokenizer, generator=torch.Generator().manual_seed(seed))(rows)


def test_decoder_sees_the_encoder_only_through_cls(tiny_vocab) -> None:
    torch.manual_seed(0)
    module = RetroMAEModule(tiny_encoder(tiny_vocab)).eval()
    batch = make_batch(module.encoder.tokenizer)
    with torch.no_grad():
        hidden = module.encoder_hidden_states(batch)
        loss, _ = module.decoder_loss(hidden, batch)
        changed = hidden.clone()
        changed[:, 1:] = torch.randn_like(changed[:, 1:]) * 10
        same, _ = module.decoder_loss(changed, batch)
        cls_changed = hidden.clone()
        cls_changed[:, 0] += torch.randn_like(cls_changed[:, 0])
        other, _ = module.decoder_loss(cls_changed, batch)
    assert torch.equal(loss, same)
    assert not torch.allclose(loss, other)


def test_both_losses_train_the_encoder_and_the_head_is_tied(tiny_vocab) -> None:
    torch.manual_seed(0)
    module = RetroMAEModule(tiny_encoder(tiny_vocab))
    batch = make_batch(module.encoder.tokenizer)
    out = module(batch)
    assert torch.allclose(out.loss, out.encoder_loss + out.decoder_loss)
    names = [n for n, _ in module.named_parameters()]
    assert not any("mlm_head" in n and n.endswith("weight") and module.get_parameter(n).shape[0] == len(module.encoder.tokenizer) for n in names)
    out.decoder_loss.backward()
    layers = module.encoder.backbone.encoder.layer
    assert layers[-1].output.dense.weight.grad.abs().sum() > 0, "decoder loss must reach the encoder through [CLS]"
    assert module.word_embeddings.grad.abs().sum() > 0


def test_saved_model_loads_for_the_next_stage_and_decoder_resumes(tiny_vocab, tmp_path) -> None:
    torch.manual_seed(0)
    module = RetroMAEModule(tiny_encoder(tiny_vocab)).eval()
    with torch.no_grad():
        module.mlm_head.bias.normal_()
    final = module.save(tmp_path / "final_model")
    assert (final / "model.safetensors").is_file() and (final / "modules.json").is_file()
    config = json.loads((final / DECODER_DIR_NAME / "retromae_config.json").read_text())
    assert config["hidden_size"] == TINY["hidden_size"]
    batch = make_batch(module.encoder.tokenizer, seed=3)
    encoder = TextEncoder.from_pretrained(final)
    texts = random_texts(4, seed=9)
    assert torch.allclose(torch.as_tensor(encoder.encode(texts)), torch.as_tensor(module.encoder.encode(texts)), atol=1e-5)
    resumed = RetroMAEModule(encoder, decoder_checkpoint=str(final)).eval()
    fresh = RetroMAEModule(TextEncoder.from_pretrained(final)).eval()
    with torch.no_grad():
        assert torch.allclose(resumed(batch).loss, module(batch).loss, atol=1e-5)
        assert not torch.allclose(fresh(batch).loss, module(batch).loss, atol=1e-3)
    wider = tiny_encoder(tiny_vocab, intermediate_size=256)
    with pytest.raises(ValueError, match="intermediate_size"):
        RetroMAEModule(wider, decoder_checkpoint=str(final))


def test_pretrained_mlm_head_is_reused(tiny_vocab, tmp_path) -> None:
    config = BertConfig(vocab_size=len(tiny_vocab.read_text().splitlines()), **{k: v for k, v in TINY.items() if k != "model_type"})
    masked_lm = BertForMaskedLM(config)
    with torch.no_grad():
        masked_lm.cls.predictions.transform.dense.weight.normal_()
        masked_lm.cls.predictions.bias.normal_()
    masked_lm.save_pretrained(tmp_path / "mlm")
    module = RetroMAEModule(TextEncoder(str(tmp_path / "mlm"), tokenizer=str(tiny_vocab)))
    assert torch.equal(module.mlm_head.dense.weight, masked_lm.cls.predictions.transform.dense.weight)
    assert torch.equal(module.mlm_head.bias, masked_lm.cls.predictions.bias)
    # a bare encoder checkpoint has no head: it stays freshly initialised
    AutoModel.from_config(config).save_pretrained(tmp_path / "bare")
    head = RetroMAEModule(TextEncoder(str(tmp_path / "bare"), tokenizer=str(tiny_vocab))).mlm_head
    assert not load_pretrained_mlm_head(head, str(tmp_path / "bare"))
    assert torch.count_nonzero(head.bias) == 0


@pytest.mark.parametrize("size,millions", [("bert_small", 24), ("bert_base", 102), ("bert_large", 326)])
def test_model_size_configs_match_the_paper(size: str, millions: int) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={size}"])
    settings = OmegaConf.to_container(cfg.model.config)
    settings["vocab_size"] = 21128  # the Chinese BERT vocabulary the sizes refer to
    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.for_model(**settings))
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - millions) < 0.03 * millions, f"{size}: {count:.1f}M parameters"
