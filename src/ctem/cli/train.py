"""``ctem-train`` / ``python train.py``: compose the config, build everything, fit."""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctem.callbacks.interrupt import InterruptCheckpoint
from ctem.checkpoint_io import check_resumable
from ctem.cli import in_main_thread, input_errors_as_messages, refuse_moved_overrides, signals_as_messages
from ctem.config import config_dir, register_resolvers
from ctem.encoder import EncoderSpec
from ctem.files import atomic_writer, check_writable_folder
from ctem.instructions import resolve_instruction
from ctem.modules.contract import StageData, TrainingEvaluation
from ctem.settings import SettingError
from ctem.wandb_runs import end_wandb_runs

log = logging.getLogger("ctem.train")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Objects of a group whose entries each hold a ``_target_`` (callbacks, loggers)."""
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def run(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Build callbacks, loggers and trainer (their settings and folders checked first), then
    model, data and stage from ``cfg``; check the checkpoint to resume from; fit.

    ``extra_callbacks`` join the configured ones. Returns the built objects (for tests and
    scripts).
    """
    check_output_folders(cfg)
    check_schedule_length(cfg)
    callbacks = instantiate_group(cfg.get("callbacks")) + list(extra_callbacks)
    callbacks.append(RecordTrainedInstruction(cfg.model.get("query_instruction")))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    spec, datamodule = check_before_weights(cfg)
    L.seed_everything(cfg.seed, workers=True)
    encoder = instantiate(cfg.model, _partial_=True)(spec=spec)  # the spec as is (not a config node)
    module = instantiate(cfg.stage, encoder=encoder)
    ckpt_path = cfg.get("ckpt_path") if cfg.get("train", True) else None
    if ckpt_path:
        check_resumable(ckpt_path, module)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if cfg.get("train", True):
        if ckpt_path:
            note_resume(Path(ckpt_path), Path(cfg.paths.output_dir), trainer)
        try:
            with lightning_handles_sigterm():
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except SystemExit:  # Lightning's way out on SIGTERM (status 0!) and Ctrl-C (status 1)
            if trainer.interrupted:
                raise SystemExit(interrupted_message(trainer)) from None
            raise
    return {"encoder": encoder, "datamodule": datamodule, "module": module, "trainer": trainer}


def record_trained_instruction(encoder: TextEncoder, datamodule: StageData, configured: str | None) -> None:
    """The one place the query instruction of the trained model is decided: the data's
    (``datamodule.trained_query_instruction``, what its retrieval queries train with) when it
    says one, else ``model.query_instruction`` (``configured``) or the instruction the loaded
    model recorded, which the encoder already holds. ``configured`` and the data's both set
    and different is a ``SettingError``."""
    trained = datamodule.trained_query_instruction
    if trained is None:
        return
    if configured is not None and resolve_instruction(configured) != trained:
        raise SettingError(
            "model.query_instruction", configured,
            f"the data trains retrieval queries with {trained!r} (data.query_instruction / data.instructions_by_type); "
            "set the instruction in one place, or make both the same",
        )
    encoder.query_instruction = trained


class RecordTrainedInstruction(L.Callback):
    """Calls :func:`record_trained_instruction` when fitting starts, once the data is set up
    (Lightning sets up the data module before the callbacks), so evaluation during training
    and the exported model use the instruction the queries trained with."""

    def __init__(self, configured: str | None) -> None:
        self.configured = configured

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and isinstance(trainer.datamodule, StageData):
            record_trained_instruction(pl_module.encoder, trainer.datamodule, self.configured)


def check_before_weights(cfg: DictConfig) -> tuple[EncoderSpec, StageData]:
    """Before the model's weights are downloaded or loaded (``model=hf``: minutes for a large
    hub model): the model's settings (``EncoderSpec``, from the tokenizer files alone), the
    data's (its module, built on that tokenizer, reading no rows) and the objects the stage
    is built from (its loss). Returns the spec (the encoder is built from it) and the data
    module (trained on)."""
    spec: EncoderSpec = instantiate(cfg.model, _target_="ctem.encoder.EncoderSpec.of")
    datamodule = instantiate(
        cfg.data, tokenizer=spec.tokenizer, query_max_length=spec.query_max_length, passage_max_length=spec.passage_max_length
    )
    instantiate(cfg.stage, _partial_=True)
    return spec, datamodule


def check_output_folders(cfg: DictConfig) -> None:
    """Before any work: every configured logger's ``save_dir`` (found at the end of training
    otherwise, with the logger's files gone elsewhere) and the data cache can be written."""
    for key, entry in (cfg.get("logger") or {}).items():
        if isinstance(entry, DictConfig) and entry.get("save_dir"):
            check_writable_folder(entry.save_dir, f"logger.{key}.save_dir")
    if cfg.data.get("cache_dir"):
        check_writable_folder(cfg.data.cache_dir, "data.cache_dir")


def check_schedule_length(cfg: DictConfig) -> None:
    """Streamed data has no known length: only ``trainer.max_steps`` sizes the learning-rate
    schedule then (``trainer.max_epochs`` cannot; found only when training starts otherwise)."""
    max_steps = cfg.trainer.get("max_steps", -1)
    if cfg.data.get("streaming") and (max_steps is None or max_steps < 1):
        raise SettingError(
            "trainer.max_steps", max_steps,
            "streamed data (data.streaming=true) has no known length, so trainer.max_epochs cannot size the "
            "learning-rate schedule: set trainer.max_steps > 0",
        )


@contextmanager
def lightning_handles_sigterm() -> Iterator[None]:
    """SIGTERM handled by Lightning alone while it fits (it also calls a handler it finds
    installed, and the command's would stop the run in the middle of a step)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL) if in_main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def note_resume(ckpt_path: Path, run_dir: Path, trainer: L.Trainer) -> None:
    """Say (and write to ``run_dir/resumed_from.txt``) which checkpoint and run folder this
    run continues."""
    if not trainer.is_global_zero:
        return
    earlier = ckpt_path.resolve().parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.resolve().parent
    line = f"resuming from {ckpt_path.resolve()} (earlier part of this run: {earlier})"
    with atomic_writer(run_dir / "resumed_from.txt") as handle:
        handle.write(line + "\n")
    print(f"[ctem] {line}", flush=True)


def interrupted_message(trainer: L.Trainer) -> str:
    """One line: which signal stopped the run at which step (or during the final export), and
    the checkpoint to resume from."""
    saver = next((c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint) and c.signal), None)
    if saver is None:
        return f"ctem-train: stopped at step {trainer.global_step} by a signal; no checkpoint saved (callbacks.interrupt_checkpoint is off)"
    if saver.exporting:
        return (
            f"ctem-train: stopped by {saver.signal} during the final export (training had finished at step "
            f"{trainer.global_step}; no final model written); resumable checkpoint {saver.saved}: "
            f"export with ckpt_path={saver.saved}"
        )
    return (
        f"ctem-train: stopped at step {trainer.global_step} by {saver.signal}; "
        f"resumable checkpoint {saver.saved}: continue with ckpt_path={saver.saved}"
    )


def report(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Print where the run's outputs went."""
    if not trainer.is_global_zero:
        return
    out = Path(cfg.paths.output_dir)
    lines = [f"run folder:   {out.resolve()}"]
    final = cfg.stage.get("final_model_dir")
    if final and Path(final).is_dir():
        lines.append(f"final model:  {Path(final).resolve()}  (SentenceTransformer / AutoModel / ctem-eval)")
    for logger in trainer.loggers:
        lines.append(f"{type(logger).__name__}: {Path(logger.save_dir or out).resolve()}")
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
        lines.append(f"checkpoints:  {Path(trainer.checkpoint_callback.dirpath).resolve()}")
    for callback in trainer.callbacks:
        if isinstance(callback, TrainingEvaluation) and callback.first_average is not None and "cmteb/average" in trainer.callback_metrics:
            last = float(trainer.callback_metrics["cmteb/average"])
            lines.append(
                f"C-MTEB average on {len(callback.tasks)} dev task(s): {callback.first_average:.4f} at the first evaluation -> "
                f"{last:.4f} at the last (best {callback.best_average:.4f}, step {callback.best_step})"
            )
    print("\n[ctem] " + "\n[ctem] ".join(lines))


register_resolvers()


@refuse_moved_overrides("ctem-train")
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> None:
    with input_errors_as_messages("ctem-train"), \
            signals_as_messages("ctem-train", "nothing to resume (no training step had run): run the command again"):
        built = run(cfg)
    if HydraConfig.initialized():
        report(cfg, built["trainer"])
    end_wandb_runs(built["trainer"], cfg.stage.get("final_model_dir"))  # one W&B run per (multirun) job


if __name__ == "__main__":
    main()
