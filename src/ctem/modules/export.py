"""Writing a stage's trained encoder at the end of ``fit``, whatever the strategy, with its
model card (``README.md``, :mod:`ctem.model_card`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

from ctem.encoder import TextEncoder
from ctem.model_card import is_hub_id, languages_hint, read_front_matter, write_model_card
from ctem.modules.contract import DataFacts, StageData, TrainingEvaluation

log = logging.getLogger(__name__)


def submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (e.g. ``"encoder.backbone."``), prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def export_encoder(
    trainer: L.Trainer,
    encoder: TextEncoder,
    prefix: str,
    directory: str | Path,
    extra_files: Callable[[Path, dict[str, torch.Tensor]], Any] | None = None,
) -> Path | None:
    """Save ``encoder`` to ``directory`` (rank 0) with ``TextEncoder.save_pretrained``, and
    its model card, as one folder: written beside ``directory`` and put in its place when
    complete (``ctem_complete.json`` last), so an interrupted export leaves no half folder.

    The weights come from ``trainer.strategy.lightning_module_state_dict()``, a collective
    call that returns full (unsharded) weights under FSDP, so every rank must call this.
    ``prefix`` is the encoder's attribute path in the LightningModule (``"encoder."``).
    ``extra_files(folder, state)`` writes more files into the folder from that full state
    (RetroMAE: its decoder). Returns the folder on rank 0, ``None`` elsewhere.
    """
    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    backbone_state = submodule_state(state, f"{prefix}backbone.")
    parameters = count_parameters(backbone_state)  # before saving: transformers may empty the dict

    def add_files(folder: Path) -> None:
        write_card(trainer, encoder, folder, parameters)
        if extra_files is not None:
            extra_files(folder, state)

    return encoder.save_pretrained(directory, backbone_state=backbone_state, extra_files=add_files)


def count_parameters(state: dict[str, torch.Tensor]) -> int:
    """Number of values in a (full, unsharded) state dict."""
    return sum(t.numel() for t in state.values())


def write_card(trainer: L.Trainer, encoder: TextEncoder, folder: str | Path, parameters: int | None = None) -> Path | None:
    """Write ``folder/README.md`` for the model ``trainer`` just trained (``parameters``: the
    backbone's size, counted on the full weights). A failure is logged, never raised: the
    model itself is already saved."""
    try:
        return write_model_card(folder, model_card_facts(trainer, encoder, parameters))
    except Exception as err:  # noqa: BLE001 - the card must never cost the trained model
        log.warning("model card not written to %s: %s", folder, err)
        return None


def model_card_facts(trainer: L.Trainer, encoder: TextEncoder, parameters: int | None = None) -> dict[str, Any]:
    """The facts of :func:`ctem.model_card.render_model_card` for the model ``trainer`` just
    trained, read through the declared contract (:mod:`ctem.modules.contract`): the stage
    and its hyper-parameters (the ``EncoderStage``), the data (a ``StageData``'s
    ``card_facts``), the encoder's settings and origin, and the latest results of a
    ``TrainingEvaluation`` callback."""
    from ctem import __version__

    module = trainer.lightning_module
    datamodule = trainer.datamodule
    data = datamodule.card_facts() if isinstance(datamodule, StageData) else DataFacts()
    config = encoder.backbone.config
    source = config.name_or_path or None
    previous = read_front_matter(source) if source and Path(source).is_dir() else {}
    base_model = source if is_hub_id(source) else previous.get("base_model")
    # transformers configs name some of these differently (attribute_map) or lack them
    architecture = {
        key: getattr(config, key, None)
        for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    }
    accumulate = trainer.accumulate_grad_batches
    hyper: dict[str, Any] = {
        "batch size per device": data.batch_size,
        "devices": trainer.world_size,
        "gradient accumulation": accumulate if accumulate > 1 else None,
        "passages per query (train_group_size)": data.train_group_size,
        **module.card_hyperparameters(),
        **data.settings,
        "precision": str(trainer.precision),
        "seed": data.seed,
    }
    evaluation = next((c for c in trainer.callbacks if isinstance(c, TrainingEvaluation) and c.last_results), None)
    results = [] if evaluation is None else [
        {"task": r.task, "type": r.type, "main_metric": r.main_metric, "main_score": float(r.main_score)} for r in evaluation.last_results
    ]
    instruction = encoder.query_instruction or ""
    return {
        "stage": module.stage_name,
        "stage_description": module.stage_description,
        "base_model": base_model,
        "started_from": source,
        "architecture": architecture,
        "parameters": parameters if parameters is not None else count_parameters(encoder.backbone.state_dict()),
        "languages": languages_hint(instruction, base_model, previous.get("language"), data.language),
        "data": data.sources,
        "hyperparameters": hyper,
        "pooling": encoder.pooling,
        "normalize": encoder.normalize,
        "query_max_length": encoder.query_max_length,
        "passage_max_length": encoder.passage_max_length,
        "embedding_dim": encoder.dim,
        "query_instruction": instruction,
        "results": results,
        "results_step": None if evaluation is None else evaluation.last_step,
        "ctem_version": __version__,
    }
