"""Masked-language-model head shared by the RetroMAE encoder and decoder, and loading the
pretrained head of a Hugging Face masked-LM checkpoint into it."""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

log = logging.getLogger(__name__)


class MLMHead(nn.Module):
    """BERT / RoBERTa-style prediction head: dense, activation, LayerNorm, then a projection
    onto the vocabulary whose weights are the encoder's word embeddings (tied: they are
    passed to ``forward``, not owned) plus a bias of its own.

    Args:
        hidden_size: model width H.
        vocab_size: vocabulary size V.
        hidden_act: activation after the dense layer.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(self, hidden_size: int, vocab_size: int, hidden_act: str = "gelu", layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[hidden_act]
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    @classmethod
    def from_config(cls, config: Any) -> "MLMHead":
        return cls(config.hidden_size, config.vocab_size, config.hidden_act, config.layer_norm_eps)

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dense, activation, LayerNorm: ``[..., H]`` -> ``[..., H]``, the input of the
        vocabulary projection (``ctem.retromae.fused_loss`` fuses that one with the loss)."""
        return self.norm(self.activation(self.dense(hidden)))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``[..., H]`` and embedding matrix ``[V, H]`` -> logits ``[..., V]``."""
        return F.linear(self.transform(hidden), word_embeddings, self.bias)


_NORM = re.compile(r"(LayerNorm|layer_norm|layernorm)\.(weight|bias)$")


def load_pretrained_mlm_head(head: MLMHead, name_or_path: str, trust_remote_code: bool = False) -> bool:
    """Copy the MLM head of the masked-LM checkpoint ``name_or_path`` into ``head``
    (``trust_remote_code``: the encoder's setting, passed to transformers explicitly).

    Works for heads laid out as dense -> LayerNorm -> (tied) decoder with a vocabulary bias
    (BERT ``cls.predictions``, RoBERTa / XLM-R ``lm_head``, ERNIE, MacBERT, ...). Returns
    ``False`` and leaves ``head`` as it is when the checkpoint has no trained MLM head
    (e.g. a model saved as a bare ``BertModel``) or a different layout.
    """
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            name_or_path, output_loading_info=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        log.warning("no masked-LM head loaded from %s (%s); the MLM head starts random", name_or_path, err)
        return False
    prefix = model.base_model_prefix + "."
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix)]
    vocab_size = head.bias.numel()

    def pick(match: Any) -> torch.Tensor | None:
        """The first head tensor whose name matches (BERT stores the vocabulary bias twice)."""
        found = [k for k in state if match(k)]
        return state[found[0]] if found else None

    weights = {
        "dense.weight": pick(lambda k: k.endswith("dense.weight")),
        "dense.bias": pick(lambda k: k.endswith("dense.bias")),
        "norm.weight": pick(lambda k: bool(_NORM.search(k)) and k.endswith("weight")),
        "norm.bias": pick(lambda k: bool(_NORM.search(k)) and k.endswith("bias")),
        "bias": pick(lambda k: k.endswith("bias") and "dense" not in k and not _NORM.search(k) and state[k].shape == (vocab_size,)),
    }
    own = head.state_dict()
    if missing:
        log.warning(
            "%s holds no trained MLM head (an encoder-only checkpoint); the MLM head starts random. "
            "For the output of a ctem RetroMAE run set stage.decoder_checkpoint=%s",
            name_or_path,
            name_or_path,
        )
        return False
    if any(w is None or w.shape != own[k].shape for k, w in weights.items()):
        log.warning("the MLM head of %s is not of the BERT / RoBERTa layout; the MLM head starts random", name_or_path)
        return False
    head.load_state_dict(weights)
    log.info("MLM head initialised from the pretrained head of %s", name_or_path)
    return True
