"""The RetroMAE enhanced decoder: one transformer layer with separate query and key/value streams.

Enhanced decoding (Xiao et al., 2022): the query stream of row ``i`` is the encoder's
sentence embedding plus the position embedding of ``i``; keys and values are the sentence
embedding followed by the token embeddings of the text; a per-row attention mask decides
which keys each row sees. So every token is rebuilt from the sentence embedding and a
random, partial view of its context, never from itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN


class EnhancedDecoderLayer(nn.Module):
    """Post-LayerNorm transformer layer (BERT layout) whose attention takes queries from one
    stream and keys/values from another.

    Args:
        hidden_size: model width H.
        num_attention_heads: heads (H must divide by it).
        intermediate_size: feed-forward width.
        hidden_act: feed-forward activation (a ``transformers.activations`` name).
        hidden_dropout_prob: dropout on attention output and feed-forward output.
        attention_probs_dropout_prob: dropout on attention weights.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        self.num_heads = num_attention_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attention_output = nn.Linear(hidden_size, hidden_size)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.intermediate = nn.Linear(hidden_size, intermediate_size)
        self.activation = ACT2FN[hidden_act]
        self.output = nn.Linear(intermediate_size, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.attention_dropout = attention_probs_dropout_prob

    @classmethod
    def from_config(cls, config: Any) -> "EnhancedDecoderLayer":
        """A layer shaped like one layer of the encoder described by a HF ``config``."""
        return cls(
            hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            hidden_dropout_prob=config.hidden_dropout_prob,
            attention_probs_dropout_prob=config.attention_probs_dropout_prob,
            layer_norm_eps=config.layer_norm_eps,
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        return x.view(batch, length, self.num_heads, hidden // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``query`` ``[B, L, H]``, ``key_value`` ``[B, L, H]``, ``attention_mask`` ``[B, L, L]``
        (bool, True = row may attend to key) -> ``[B, L, H]``."""
        batch, length, hidden = query.shape
        attended = F.scaled_dot_product_attention(
            self._heads(self.query(query)),
            self._heads(self.key(key_value)),
            self._heads(self.value(key_value)),
            attn_mask=attention_mask.unsqueeze(1),
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(batch, length, hidden)
        hidden_states = self.attention_norm(query + self.dropout(self.attention_output(attended)))
        feed_forward = self.output(self.activation(self.intermediate(hidden_states)))
        return self.output_norm(hidden_states + self.dropout(feed_forward))
