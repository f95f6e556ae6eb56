"""`RetroMAEModule`: RetroMAE pre-training of an encoder for embedding use (C-Pack stage 1).

The encoder reads a polluted text (``encoder_mask_ratio`` of its tokens masked, BERT-style)
and is trained with the usual MLM loss on those positions. Its [CLS] hidden state is the
sentence embedding; a one-layer enhanced decoder (``ctem.retromae.EnhancedDecoderLayer``)
rebuilds every token of the clean text from that embedding plus a random partial view of
the text (``decoder_mask_ratio`` hidden per row, never the row itself). Both predictions go
through one MLM head tied to the encoder's word embeddings. Loss = encoder MLM loss +
decoder reconstruction loss.

Batch layout (``ctem.data_modules.corpus.RetroMAECollator``)::

    {"encoder": {"input_ids", "attention_mask"} [B, L],   # polluted text
     "encoder_labels": [B, L],                           # original id at masked positions, else -100
     "decoder_input_ids": [B, L],                        # clean text
     "decoder_labels": [B, L],                           # every real token except specials, else -100
     "decoder_attention_mask": [B, L, L] bool}           # True = row may attend to key
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctem.encoder import TextEncoder
from ctem.modules.export import submodule_state
from ctem.modules.stage import EncoderStage
from ctem.optim import OptimizerConfig
from ctem.retromae.checkpoint import DECODER_DIR_NAME, load_decoder, save_decoder
from ctem.retromae.decoder import EnhancedDecoderLayer
from ctem.retromae.fused_loss import fused_linear_cross_entropy
from ctem.retromae.mlm_head import MLMHead, load_pretrained_mlm_head
from ctem.settings import SettingError

log = logging.getLogger(__name__)


@dataclass
class RetroMAEOutput:
    """Scalar results of one step: total loss and its parts, plus masked-token accuracies."""

    loss: torch.Tensor
    encoder_loss: torch.Tensor
    decoder_loss: torch.Tensor
    encoder_accuracy: torch.Tensor
    decoder_accuracy: torch.Tensor


def _masked_lm_loss(
    head: MLMHead, hidden: torch.Tensor, labels: torch.Tensor, word_embeddings: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and top-1 accuracy (detached) over the positions whose label is
    not -100; zero loss and accuracy when there is none.

    The head's dense / activation / LayerNorm run at those positions only (``[N, H]``, N
    labelled positions), and its vocabulary projection is fused with the cross-entropy and
    the accuracy (``fused_linear_cross_entropy``, ``chunk_size`` rows at a time): no
    ``[N, V]`` logits are kept, nothing is recomputed in backward.
    """
    targets = labels != -100
    rows = head.transform(hidden[targets])
    return fused_linear_cross_entropy(rows, word_embeddings, head.bias, labels[targets], chunk_size=chunk_size)


class RetroMAEModule(EncoderStage):
    """RetroMAE pre-training of ``encoder`` (a ``TextEncoder`` with a BERT-like backbone).

    Logs ``train/loss``, ``train/encoder_mlm_loss``, ``train/decoder_loss``,
    ``train/encoder_mlm_accuracy``, ``train/decoder_accuracy``, ``train/lr``,
    ``train/samples_per_s`` and ``train/tokens_per_s`` (encoder tokens; global, all ranks).
    At the end of ``fit`` rank 0 writes the encoder to ``final_model_dir``
    (``TextEncoder.save_pretrained``, loadable by the next stage with
    ``model=hf model.name_or_path=<dir>``) and the decoder and MLM head to
    ``<final_model_dir>/retromae_decoder/``.

    Args:
        encoder: the ``TextEncoder`` to pre-train; its backbone must have BERT-style
            ``embeddings`` (word, position, token-type embeddings + LayerNorm).
        optimizer: AdamW and learning-rate schedule settings.
        decoder_checkpoint: a ``retromae_decoder/`` folder (or the ``final_model/`` that
            holds one) of an earlier run: decoder and MLM head start from it.
        reuse_pretrained_mlm_head: when the encoder was loaded from a masked-LM checkpoint
            (e.g. ``bert-base-chinese``) and no ``decoder_checkpoint`` is given, start the MLM
            head from that checkpoint's head.
        final_model_dir: where to write the encoder (``None``: nowhere).
        loss_chunk_size: labelled positions whose ``[chunk, V]`` logits are formed at once
            by the fused MLM loss (``None``: ~128 MiB of float32 logits per chunk; lower it
            for very large vocabularies on a small GPU). Losses do not depend on it.
    """

    stage_name = "retromae"
    stage_description = "RetroMAE pre-training (C-Pack stage 1): masked auto-encoding with enhanced decoding"

    def __init__(
        self,
        encoder: TextEncoder,
        optimizer: OptimizerConfig | dict[str, Any] | None = None,
        decoder_checkpoint: str | None = None,
        reuse_pretrained_mlm_head: bool = True,
        final_model_dir: str | None = None,
        loss_chunk_size: int | None = None,
    ) -> None:
        if encoder.lora.enabled:
            raise SettingError(
                "model.lora.enabled", True, "LoRA is for the contrastive and fine-tuning stages; RetroMAE pre-trains the whole encoder"
            )
        super().__init__(encoder, optimizer, final_model_dir)
        config = encoder.backbone.config
        if not isinstance(getattr(encoder.backbone, "embeddings", None), nn.Module):
            raise ValueError(f"RetroMAE needs a BERT-like backbone with `embeddings`; {type(encoder.backbone).__name__} has none")
        self.decoder = EnhancedDecoderLayer.from_config(config)
        self.mlm_head = MLMHead.from_config(config)
        self._init_new_weights(config.initializer_range)
        source = getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "")
        if decoder_checkpoint:
            load_decoder(decoder_checkpoint, self.decoder, self.mlm_head, config)
            log.info("RetroMAE decoder and MLM head restored from %s", decoder_checkpoint)
        elif reuse_pretrained_mlm_head and source:
            load_pretrained_mlm_head(self.mlm_head, source, encoder.trust_remote_code)
        self.loss_chunk_size = loss_chunk_size
        self.save_hyperparameters(ignore=["encoder"])

    def _init_new_weights(self, std: float) -> None:
        """BERT initialisation of the decoder and head (normal(0, std) weights, zero biases)."""
        for module in [*self.decoder.modules(), *self.mlm_head.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.mlm_head.bias)

    @property
    def embeddings(self) -> nn.Module:
        """The encoder's embedding layer (shared by the decoder; not registered twice)."""
        return self.encoder.backbone.embeddings

    @property
    def word_embeddings(self) -> torch.Tensor:
        """The encoder's input embedding matrix ``[V, H]`` (the MLM head's tied projection)."""
        return self.encoder.backbone.get_input_embeddings().weight

    # ------------------------------------------------------------------ forward
    def encoder_hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        """Last hidden states ``[B, L, H]`` of the encoder on the polluted text."""
        return self.encoder.backbone(**batch["encoder"]).last_hidden_state

    def encoder_mlm_loss(self, hidden: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM loss and accuracy of the encoder on its masked positions."""
        return _masked_lm_loss(self.mlm_head, hidden, batch["encoder_labels"], self.word_embeddings, self.loss_chunk_size)

    def decoder_loss(self, encoder_hidden: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction loss and accuracy of the enhanced decoder.

        Only ``encoder_hidden[:, 0]`` (the [CLS] sentence embedding) is read. Query stream:
        ``LayerNorm(cls + position + token-type embedding)`` at every position; keys and
        values: ``[cls, embeddings of the clean text at positions 1..L-1]``; the per-row
        ``decoder_attention_mask`` hides the decoder-masked keys, padding and the row itself.
        """
        input_ids = batch["decoder_input_ids"]
        cls = encoder_hidden[:, :1]  # [B, 1, H]
        query = self.embeddings(inputs_embeds=cls.expand(-1, input_ids.size(1), -1))
        tokens = self.embeddings(input_ids=input_ids)
        key_value = torch.cat([cls, tokens[:, 1:]], dim=1)
        hidden = self.decoder(query, key_value.to(query.dtype), batch["decoder_attention_mask"])
        return _masked_lm_loss(self.mlm_head, hidden, batch["decoder_labels"], self.word_embeddings, self.loss_chunk_size)

    def forward(self, batch: dict[str, Any]) -> RetroMAEOutput:
        hidden = self.encoder_hidden_states(batch)
        encoder_loss, encoder_accuracy = self.encoder_mlm_loss(hidden, batch)
        decoder_loss, decoder_accuracy = self.decoder_loss(hidden, batch)
        return RetroMAEOutput(encoder_loss + decoder_loss, encoder_loss, decoder_loss, encoder_accuracy, decoder_accuracy)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        size = batch["decoder_input_ids"].size(0)
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/encoder_mlm_loss", out.encoder_loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/decoder_loss", out.decoder_loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/encoder_mlm_accuracy", out.encoder_accuracy, batch_size=size)
        self.log("train/decoder_accuracy", out.decoder_accuracy, batch_size=size)
        self.throughput.log(self, size, int(batch["encoder"]["attention_mask"].sum()))
        return out.loss

    # ------------------------------------------------------------------ export
    def write_extra_files(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        """Write the decoder and MLM head of ``state`` (the module's full state dict) to
        ``folder/retromae_decoder/``."""
        decoder, head = submodule_state(state, "decoder."), submodule_state(state, "mlm_head.")
        save_decoder(folder / DECODER_DIR_NAME, decoder, head, self.encoder.backbone.config)

    def save(self, final_model_dir: str | Path) -> Path:
        """Write the encoder (HF + sentence-transformers files) and, in its
        ``retromae_decoder/`` sub-folder, the decoder and MLM head, as one folder
        (``TextEncoder.save_pretrained``), from this process's weights."""
        state = self.state_dict()
        backbone_state = submodule_state(state, "encoder.backbone.")
        return self.encoder.save_pretrained(
            Path(final_model_dir), backbone_state=backbone_state, extra_files=lambda folder: self.write_extra_files(folder, state)
        )

    def export_note(self, path: Path) -> str:
        return f"pre-trained encoder written to {path} (decoder + MLM head in {path / DECODER_DIR_NAME})"
