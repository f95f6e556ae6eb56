"""``ctem-merge``: LM-Cocktail-style weighted average of two or more model folders.

``ctem-merge models=[DIR_A,DIR_B] weights=[0.5,0.5] output=DIR`` (or ``examples=FILE`` instead of
``weights``: chosen from the models' losses on a few examples); see ``conf/merge.yaml``
and ``docs/objectives.md``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from ctem.cli import input_errors_as_messages, refuse_moved_overrides, signals_as_messages
from ctem.config import config_dir, register_resolvers
from ctem.merge import Examples, MergeResult, merge_models


def run(cfg: DictConfig) -> MergeResult:
    """Merge ``cfg.models`` with ``cfg.weights`` into ``cfg.output``."""
    models = [str(m) for m in OmegaConf.to_container(cfg.models, resolve=True)]  # type: ignore[union-attr]
    weights = None if cfg.weights is None else list(OmegaConf.to_container(cfg.weights, resolve=True))  # type: ignore[arg-type]
    examples = None
    if cfg.examples is not None:
        files = OmegaConf.to_container(cfg.examples, resolve=True) if OmegaConf.is_config(cfg.examples) else str(cfg.examples)
        examples = Examples(files, cfg.example_temperature, on_bad_row=cfg.on_bad_row)  # type: ignore[arg-type]
    result = merge_models(models, cfg.output, weights, trust_remote_code=cfg.trust_remote_code, examples=examples)
    print(f"[ctem-merge] {result.summary(models)}", flush=True)
    return result


register_resolvers()


@refuse_moved_overrides("ctem-merge")
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="merge")
def main(cfg: DictConfig) -> None:
    with input_errors_as_messages("ctem-merge"), signals_as_messages("ctem-merge", f"{cfg.output} not written (nothing half-written is left): run the command again"):
        run(cfg)


if __name__ == "__main__":
    main()
