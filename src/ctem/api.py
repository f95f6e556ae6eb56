"""Training from Python: what ``python train.py a=b ...`` does, as a function.

Example (a notebook or a script)::

    from ctem.api import train
    out = train(["data.batch_size=64", "trainer.max_steps=100", "logger=csv"])
    out["run_dir"], out["trainer"].global_step
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from ctem.config import config_dir, register_resolvers
from ctem.files import write_text_atomic
from ctem.wandb_runs import end_wandb_runs


def train(overrides: Sequence[str] = (), extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Compose ``conf/train.yaml`` with ``overrides`` (the same strings as on the command
    line, e.g. ``["experiment=cpack/cpu/finetune", "trainer.max_steps=50"]``), train, and
    return the built objects (``encoder``, ``datamodule``, ``module``, ``trainer``) plus
    ``run_dir``, the run folder (``hydra.run.dir``, e.g. ``logs/train/runs/<time>``) that
    holds ``config.yaml``, the logs, checkpoints and ``final_model/`` as for the command.

    ``extra_callbacks`` join the configured callbacks. Multirun (``-m``) is the command
    line's job: call this in a loop instead.
    """
    from ctem.cli.train import run

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    run_dir = Path(str(cfg.hydra.run.dir)).resolve()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the config resolves as under the CLI
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.resolve(job_cfg)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(job_cfg))
    built = run(job_cfg, extra_callbacks=extra_callbacks)
    end_wandb_runs(built["trainer"], job_cfg.stage.get("final_model_dir"))  # each call its own W&B run
    return {**built, "run_dir": run_dir}
