"""OmegaConf resolvers used by ctem's Hydra configs, and the location of ``conf/``."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"


def asset_path(relative: str) -> str:
    """Absolute path of a file shipped in ``ctem/assets`` (``${ctem_asset:quickstart/train.jsonl}``)."""
    path = ASSETS_DIR / relative
    if not path.exists():
        raise FileNotFoundError(f"ctem asset not found: {path}")
    return str(path)


def wandb_offline(mode: str = "auto") -> bool:
    """``auto``: offline exactly when no W&B API key is configured (env or ``wandb login``)."""
    if mode in (True, False):
        return bool(mode)
    if str(mode).lower() in ("true", "false"):
        return str(mode).lower() == "true"
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return False
    try:
        rc = netrc.netrc(os.environ.get("NETRC", os.path.expanduser("~/.netrc")))
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        return rc.authenticators(host) is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def register_resolvers() -> None:
    """Register ``ctem_asset``, ``ctem_wandb_offline``, ``ctem_wandb_name`` and
    ``ctem_wandb_group`` (idempotent)."""
    from ctem.wandb_runs import wandb_run_group, wandb_run_name

    resolvers = {
        "ctem_asset": asset_path,
        "ctem_wandb_offline": wandb_offline,
        "ctem_wandb_name": wandb_run_name,
        "ctem_wandb_group": wandb_run_group,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def config_dir() -> str:
    """The Hydra config folder: ``CTEM_CONFIG_DIR`` when set, else the configs installed with
    the package (``ctem/conf``, shipped in the wheel), else ``conf/`` of this checkout."""
    override = os.environ.get("CTEM_CONFIG_DIR")
    candidates = [Path(override)] if override else []
    candidates += [PACKAGE_DIR / "conf", PACKAGE_DIR.parents[1] / "conf"]
    for path in candidates:
        if (path / "train.yaml").is_file():
            return str(path)
    raise FileNotFoundError(
        f"ctem's Hydra configs were not found in {', '.join(map(str, candidates))}; "
        "reinstall ctem or set CTEM_CONFIG_DIR to a conf/ folder"
    )
