"""Writing a stage's trained encoder at the end of ``fit``, whatever the strategy, with its
model card (``README.md``, :mod:`ctem.model_card`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

from ctem.encoder import TextEncoder
from ctem.losses import CriterionFacts
from ctem.model_card import is_hub_id, languages_hint, read_front_matter, write_model_card

log = logging.getLogger(__name__)

# LightningModule classes (or their bases) -> the stage name of conf/stage/.
STAGE_NAMES = {"RetroMAEModule": "retromae", "MultiTaskModule": "multitask", "BiEncoderModule": "contrastive"}


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


def stage_name(module: Any) -> str:
    """``contrastive`` / ``multitask`` / ``retromae`` for ctem's modules (and subclasses)."""
    for cls in type(module).__mro__:
        if cls.__name__ in STAGE_NAMES:
            return STAGE_NAMES[cls.__name__]
    return type(module).__name__


def _plain(value: Any) -> Any:
    """Lists / strings of an OmegaConf or dataclass field, as plain Python."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:
        return [str(v) for v in value]
    except TypeError:
        return str(value)


def criterion_facts(module: Any) -> CriterionFacts | None:
    """What the contrastive stage's criterion declares, ``None`` for other stages."""
    from ctem.modules.bi_encoder import BiEncoderModule  # here: bi_encoder imports this module

    return module.criterion.facts() if isinstance(module, BiEncoderModule) else None


def model_card_facts(trainer: L.Trainer, encoder: TextEncoder, parameters: int | None = None) -> dict[str, Any]:
    """The facts of :func:`ctem.model_card.render_model_card` for the model ``trainer`` just
    trained: the stage and its hyper-parameters (the LightningModule), the data (the
    datamodule's ``train_files`` / ``hub_dataset`` / ``specs``), the encoder's settings and
    origin, and the latest results of an evaluation callback (its ``last_results``)."""
    from ctem import __version__

    module = trainer.lightning_module
    datamodule = getattr(trainer, "datamodule", None)
    config = encoder.backbone.config
    stage = stage_name(module)
    source = getattr(config, "_name_or_path", "") or None
    previous = read_front_matter(source) if source and Path(source).is_dir() else {}
    base_model = source if is_hub_id(source) else previous.get("base_model")
    architecture = {
        key: getattr(config, key, None)
        for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    }

    optimizer = getattr(module, "optimizer_config", None)
    objective = criterion_facts(module)
    grad_cache = getattr(module, "grad_cache", None)
    collator = getattr(datamodule, "collator", None)
    accumulate = getattr(trainer, "accumulate_grad_batches", 1)
    hyper: dict[str, Any] = {
        "batch size per device": getattr(datamodule, "batch_size", None),
        "devices": trainer.world_size,
        "gradient accumulation": accumulate if accumulate and accumulate > 1 else None,
        "passages per query (train_group_size)": getattr(datamodule, "train_group_size", None),
        "learning rate": getattr(optimizer, "lr", None),
        "schedule": None
        if optimizer is None
        else f"{optimizer.scheduler}, warm-up "
        + (f"{optimizer.warmup_steps} steps" if optimizer.warmup_steps is not None else f"{optimizer.warmup_ratio:g} of the steps"),
        "weight decay": getattr(optimizer, "weight_decay", None),
        "steps": trainer.global_step,
        "objective": None if objective is None else objective.name,
        "temperature": None if objective is None else objective.temperature,
        **({} if objective is None else objective.settings),
        "matryoshka dims": None if objective is None or objective.matryoshka_dims is None else list(objective.matryoshka_dims),
        "in-batch negatives": getattr(module, "in_batch_negatives", None),
        "false-negative masking": getattr(module, "mask_false_negatives", None),
        "cross-device negatives": getattr(module, "negatives_cross_device", None),
        "gradient cache": None if grad_cache is None else (f"chunks of {grad_cache.chunk_size}" if grad_cache.enabled else False),
        "dataset sampling": getattr(datamodule, "sampling", None),
        "encoder / decoder mask ratio": None
        if not hasattr(collator, "decoder_mask_ratio")
        else f"{collator.encoder_mask_ratio:g} / {collator.decoder_mask_ratio:g}",
        "max sequence length": getattr(datamodule, "max_seq_length", None) if stage == "retromae" else None,
        "precision": str(trainer.precision),
        "seed": getattr(datamodule, "seed", None),
    }

    data: dict[str, Any] = {}
    if getattr(datamodule, "train_files", None):
        files = datamodule.train_files
        data["files"] = [files] if isinstance(files, str) else _plain(files)
    if getattr(datamodule, "hub_dataset", None):
        data["hub_dataset"] = datamodule.hub_dataset
    specs = getattr(datamodule, "specs", None)
    if isinstance(specs, dict):
        loaded = {part.name: part for part in getattr(getattr(datamodule, "train_dataset", None), "parts", [])}
        data["datasets"] = {
            name: {
                "files": _plain(getattr(spec, "files", None)),
                "type": getattr(loaded.get(name), "type", None) or getattr(spec, "type", None),
                "rows": len(loaded[name]) if name in loaded else None,
            }
            for name, spec in specs.items()
        }

    results, results_step = [], None
    for callback in trainer.callbacks:
        found = getattr(callback, "last_results", None)
        if found:
            results = [{"task": r.task, "type": r.type, "main_metric": r.main_metric, "main_score": float(r.main_score)} for r in found]
            results_step = getattr(callback, "last_step", None)
            break

    instruction = encoder.query_instruction or ""
    return {
        "stage": stage,
        "base_model": base_model,
        "started_from": source,
        "architecture": architecture,
        "parameters": parameters if parameters is not None else count_parameters(encoder.backbone.state_dict()),
        "languages": languages_hint(instruction, base_model, previous.get("language"), getattr(datamodule, "language", None)),
        "data": data,
        "hyperparameters": hyper,
        "pooling": encoder.pooling,
        "normalize": encoder.normalize,
        "query_max_length": encoder.query_max_length,
        "passage_max_length": encoder.passage_max_length,
        "embedding_dim": encoder.dim,
        "query_instruction": instruction,
        "results": results,
        "results_step": results_step,
        "ctem_version": __version__,
    }
