"""One W&B run per training job: names and groups for multirun sweeps, and finishing the run.

``conf/logger/wandb.yaml`` names runs with ``${ctem_wandb_name:...}`` and groups them with
``${ctem_wandb_group:...}`` (registered by ``ctem.config.register_resolvers``);
``ctem-train`` and ``ctem.api.train`` call :func:`end_wandb_runs` at the end of each job.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _multirun_job() -> DictConfig | None:
    """Hydra's config of the current job when it is one job of a multirun, else ``None``."""
    if not HydraConfig.initialized():
        return None
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return hc if hc.mode == RunMode.MULTIRUN else None


def swept_overrides(hc: DictConfig) -> list[str]:
    """The overrides of this multirun job whose keys the sweep varies (``data.batch_size=2048``
    for ``-m data.batch_size=256,2048``), read from the sweep's ``multirun.yaml``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweep_file = Path(str(hc.sweep.dir)) / "multirun.yaml"
    if not sweep_file.is_file():
        return []
    parser = OverridesParser.create()
    try:
        sweep_overrides = OmegaConf.load(sweep_file).hydra.overrides.task
        swept = {o.key_or_group for o in parser.parse_overrides(list(sweep_overrides)) if o.is_sweep_override()}
        job = list(hc.overrides.task)
        return [line for line, o in zip(job, parser.parse_overrides(job)) if o.key_or_group in swept]
    except Exception as err:  # an unreadable sweep file only costs the nicer name
        log.debug("swept overrides not read from %s: %s", sweep_file, err)
        return []


def wandb_run_name(default: str) -> str:
    """W&B name of this run (``${ctem_wandb_name:...}``): a multirun job is named by its swept
    overrides (``data.batch_size=2048``; all its overrides when no sweep file says which vary),
    a single run ``default`` (the task name)."""
    hc = _multirun_job()
    if hc is None:
        return default
    return ",".join(swept_overrides(hc)) or str(hc.job.override_dirname) or f"{default}-{hc.job.num}"


def wandb_run_group(task_name: str) -> str | None:
    """W&B group of this run (``${ctem_wandb_group:...}``): the jobs of one multirun share
    ``<task_name>-<sweep folder name>`` (the sweep's time by default); a single run has none."""
    hc = _multirun_job()
    return None if hc is None else f"{task_name}-{Path(str(hc.sweep.dir)).name}"


def end_wandb_runs(trainer: L.Trainer, final_model_dir: str | None) -> None:
    """Finish this job's W&B runs, after logging ``final_model_dir`` as a ``model`` artifact
    when the run is online (offline and disabled runs skip the upload silently).

    Lightning's ``WandbLogger`` leaves its run open at the end of ``fit``, and a new
    ``WandbLogger`` reuses any open run; Hydra's basic launcher runs all jobs of a multirun
    in one process, so without this every job would log into the first job's run."""
    if not trainer.is_global_zero:
        return
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        experiment = logger.experiment
        online = not getattr(experiment, "offline", True) and not getattr(experiment, "disabled", False)
        if online and final_model_dir and Path(final_model_dir).is_dir():
            import wandb

            artifact = wandb.Artifact(f"final_model-{experiment.id}", type="model",
                                      metadata={"global_step": trainer.global_step})
            artifact.add_dir(str(final_model_dir))
            experiment.log_artifact(artifact, aliases=["latest", "final"])
        experiment.finish()
