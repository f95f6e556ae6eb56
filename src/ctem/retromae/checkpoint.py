"""Saving and restoring the RetroMAE decoder and MLM head beside the encoder.

Layout of ``<final_model>/retromae_decoder/``::

    retromae_decoder.safetensors   decoder.* (the enhanced decoder layer), mlm_head.* (the
                                   MLM head without its projection, which is the encoder's
                                   word-embedding matrix in ../model.safetensors)
    retromae_config.json           shapes, mask ratios used, and what the files hold
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ctem.retromae.decoder import EnhancedDecoderLayer
from ctem.retromae.mlm_head import MLMHead

DECODER_DIR_NAME = "retromae_decoder"
WEIGHTS_NAME = "retromae_decoder.safetensors"
CONFIG_NAME = "retromae_config.json"
FORMAT = "ctem-retromae-decoder/1"
SHAPE_KEYS: tuple[str, ...] = ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size", "hidden_act", "layer_norm_eps")


def shape_settings(config: Any) -> dict[str, Any]:
    """The encoder-config values the decoder and head are built from."""
    return {key: getattr(config, key) for key in SHAPE_KEYS}


def save_decoder(
    out_dir: str | Path,
    decoder_state: dict[str, torch.Tensor],
    mlm_head_state: dict[str, torch.Tensor],
    config: Any,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write decoder and head weights (state dicts, e.g. ``module.state_dict()``) plus a
    JSON description to ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"decoder.{k}": v.detach().contiguous().cpu() for k, v in decoder_state.items()}
    tensors |= {f"mlm_head.{k}": v.detach().contiguous().cpu() for k, v in mlm_head_state.items()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": FORMAT})
    description = {
        "format": FORMAT,
        **shape_settings(config),
        "tied_weights": "mlm_head projection = encoder word embeddings (../model.safetensors)",
        **(extra or {}),
    }
    (out / CONFIG_NAME).write_text(json.dumps(description, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def load_decoder(checkpoint_dir: str | Path, decoder: EnhancedDecoderLayer, mlm_head: MLMHead, config: Any) -> None:
    """Restore weights written by ``save_decoder``; ``config`` is the current encoder's
    config, which must have the shapes the checkpoint was saved with."""
    root = Path(checkpoint_dir)
    if (root / DECODER_DIR_NAME / CONFIG_NAME).is_file():  # a final_model/ folder was given
        root = root / DECODER_DIR_NAME
    config_file = root / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{root} holds no RetroMAE decoder ({CONFIG_NAME} missing)")
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    current = shape_settings(config)
    different = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if different:
        details = ", ".join(f"{k}: saved {a} vs encoder {b}" for k, (a, b) in different.items())
        raise ValueError(f"the RetroMAE decoder in {root} does not fit this encoder ({details})")
    tensors = load_file(str(root / WEIGHTS_NAME))
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")})
    mlm_head.load_state_dict({k[len("mlm_head."):]: v for k, v in tensors.items() if k.startswith("mlm_head.")})
