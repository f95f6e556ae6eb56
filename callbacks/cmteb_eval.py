"""``CMTEBEvalCallback``: evaluate the encoder being trained on C-MTEB-style tasks.

Every ``every_n_steps`` optimizer steps and/or at the end of every training epoch, the
callback borrows ``pl_module.encoder`` (a ``ctem.TextEncoder``), evaluates it on the
configured local tasks and logs ``cmteb/<task>/<metric>``, ``cmteb/<type>`` (per-type mean
of main scores) and ``cmteb/average`` to every logger (and to ``trainer.callback_metrics``
so ``ModelCheckpoint(monitor="cmteb/average")`` works too). With ``eval.truncate_dim`` set
it evaluates that prefix of each embedding, as ``ctem-eval`` does (a Matryoshka model's
smaller sizes: the same setting, read from the same config node). Under DDP every rank encodes
its share of the texts and the embeddings are gathered; all ranks compute the same scores.
With a ``WandbLogger`` attached, each evaluation's results also go to the W&B table
``cmteb/results`` (task, type, main_metric, main_score).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ctem.encoding import EncodeFn
from ctem.evaluation import (
    CMTEBEvaluator,
    EncoderAdapter,
    EvalConfig,
    TaskResult,
    averages,
    check_main_scores,
    load_local_tasks,
)
from ctem.evaluation.runner import truncated
from ctem.settings import SettingError

log = logging.getLogger(__name__)

# Columns of the W&B table of each evaluation's results (logged when a WandbLogger is attached).
WANDB_TABLE_COLUMNS = ("task", "type", "main_metric", "main_score")


class CMTEBEvalCallback(Callback):
    """Periodic C-MTEB evaluation during training; the model card and ``ctem-train``'s
    summary read its results as a ``ctem.modules.contract.TrainingEvaluation``.

    Args:
        tasks_dir: folder of local task folders (``../shared/data`` layout).
        eval: what to evaluate and how (:class:`ctem.evaluation.EvalConfig`, the config
            node ``eval`` shared with ``ctem-eval``): tasks / task_types to use (``None``:
            all), query instructions, encoding batch and token limit, evaluator settings.
            ``query_instruction=None`` evaluates with the instruction the model is being
            trained with (``pl_module.encoder.query_instruction``), as ``ctem-eval`` does
            with a saved model; ``truncate_dim`` evaluates the first N values of each
            embedding (re-normalised for a normalising model). ``None``: the defaults
            (every task of ``tasks_dir``, whole embeddings).
        every_n_steps: evaluate every N optimizer steps (``None``: never by steps).
        on_epoch_end: evaluate at the end of every training epoch.
        on_train_start: evaluate once before the first training step (a baseline).
        on_train_end: evaluate once more when training ends (unless that step was just evaluated).
        metrics: which scores of each task to log (``None``: all of them; the main score
            is always logged).
        save_best: when ``cmteb/average`` improves, save the encoder
            (``save_pretrained``) to ``best_dir`` and a Lightning checkpoint
            ``best_dir/best.ckpt``.
        best_dir: folder for ``save_best`` (``None``: ``<trainer.default_root_dir>/best_cmteb``).
    """

    def __init__(
        self,
        tasks_dir: str,
        eval: EvalConfig | None = None,  # the config node's name (shadows the builtin here only)
        every_n_steps: int | None = None,
        on_epoch_end: bool = True,
        on_train_start: bool = False,
        on_train_end: bool = False,
        metrics: Sequence[str] | None = None,
        save_best: bool = False,
        best_dir: str | None = None,
    ) -> None:
        if every_n_steps is not None and every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be positive or null, got {every_n_steps}")
        self.config = eval or EvalConfig()
        self.tasks = load_local_tasks(tasks_dir, self.config.tasks, self.config.task_types)
        check_main_scores(self.tasks, self.config)  # a typo is found now, not after the first evaluation
        self.every_n_steps = every_n_steps
        self.eval_on_epoch_end = on_epoch_end
        self.eval_on_train_start = on_train_start
        self.eval_on_train_end = on_train_end
        self.first_average: float | None = None
        self.metrics = None if metrics is None else set(metrics)
        self.save_best = save_best
        self.best_dir = best_dir
        self.best_average = float("-inf")
        self.best_step: int | None = None
        self.last_results: list[TaskResult] = []
        self._adapter: EncoderAdapter | None = None
        self._last_step = -1

    @property
    def last_step(self) -> int | None:
        """Global step of ``last_results`` (``None`` before the first evaluation)."""
        return self._last_step if self.last_results else None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before any step: a ``truncate_dim`` the encoder's embedding is too small for is refused."""
        dim, size = self.config.truncate_dim, pl_module.encoder.dim
        if dim is not None and dim > size:
            raise SettingError("callbacks.cmteb_eval.eval.truncate_dim", dim, f"exceeds the model's embedding size {size}")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_on_train_start:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_on_train_end and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_on_epoch_end and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ work
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Evaluate now (on every rank); log and return the metrics."""
        self._last_step = trainer.global_step
        encode = self._encode_fn(trainer, pl_module)
        settings = self.config.for_model(pl_module.encoder.query_instruction)
        results = CMTEBEvaluator(self.tasks, settings).run(encode)
        self.last_results = results
        metrics = self._metrics(results)
        for name, value in metrics.items():
            trainer.callback_metrics[name] = torch.tensor(value)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
            self._log_wandb_table(trainer, results)
            log.info("C-MTEB at step %d: average %.4f", trainer.global_step, metrics["cmteb/average"])
        if metrics["cmteb/average"] > self.best_average:
            if self.save_best:
                self._save_best(trainer, pl_module)
            self.best_average, self.best_step = metrics["cmteb/average"], trainer.global_step
        if self.first_average is None:
            self.first_average = metrics["cmteb/average"]
        return metrics

    def _encode_fn(self, trainer: L.Trainer, pl_module: L.LightningModule) -> EncodeFn:
        """The encoder's adapter, cut to ``eval.truncate_dim`` values when that is set."""
        adapter = self._encoder_adapter(trainer, pl_module)
        dim = self.config.truncate_dim
        return adapter if dim is None else truncated(adapter, dim, pl_module.encoder.normalize)

    def _encoder_adapter(self, trainer: L.Trainer, pl_module: L.LightningModule) -> EncoderAdapter:
        encoder = pl_module.encoder
        if self._adapter is None or self._adapter.encoder is not encoder:
            world = trainer.world_size
            self._adapter = EncoderAdapter(
                encoder,
                batch_size=self.config.batch_size,
                max_length=self.config.max_length,
                rank=trainer.global_rank,
                world_size=world,
                all_gather=(lambda t: trainer.strategy.all_gather(t)) if world > 1 else None,
            )
        return self._adapter

    def _metrics(self, results: list[TaskResult]) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in results:
            for metric, value in r.scores.items():
                if self.metrics is None or metric in self.metrics or metric == r.main_metric:
                    out[f"cmteb/{r.task}/{metric}"] = float(value)
        for key, value in averages(results).items():
            out[f"cmteb/{key}"] = float(value)
        return out

    def _log_wandb_table(self, trainer: L.Trainer, results: list[TaskResult]) -> None:
        """Log ``results`` as the W&B table ``cmteb/results`` (columns task, type,
        main_metric, main_score) to every attached ``WandbLogger``."""
        from lightning.pytorch.loggers import WandbLogger

        rows = [[r.task, r.type, r.main_metric, float(r.main_score)] for r in results]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="cmteb/results", columns=list(WANDB_TABLE_COLUMNS), data=rows, step=trainer.global_step)

    def _save_best(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(self.best_dir or Path(trainer.default_root_dir) / "best_cmteb")
        if trainer.is_global_zero:  # first: save_pretrained replaces the whole folder
            pl_module.encoder.save_pretrained(folder)
            log.info("new best cmteb/average: encoder saved to %s", folder)
        trainer.save_checkpoint(folder / "best.ckpt")  # collective under DDP

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"best_average": self.best_average, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_average = state_dict.get("best_average", float("-inf"))
        self.best_step = state_dict.get("best_step")
