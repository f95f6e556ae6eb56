"""OmegaConf resolvers used by ctem's Hydra configs, and the location of ``conf/``."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


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
    """Register ``ctem_asset`` and ``ctem_wandb_offline`` (idempotent)."""
    if not OmegaConf.has_resolver("ctem_asset"):
        OmegaConf.register_new_resolver("ctem_asset", asset_path)
    if not OmegaConf.has_resolver("ctem_wandb_offline"):
        OmegaConf.register_new_resolver("ctem_wandb_offline", wandb_offline)


def config_dir() -> str:
    """The Hydra config folder ``conf/`` of this checkout (``CTEM_CONFIG_DIR`` overrides)."""
    override = os.environ.get("CTEM_CONFIG_DIR")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[2] / "conf")
    for path in candidates:
        if (path / "train.yaml").is_file():
            return str(path)
    raise FileNotFoundError(
        "ctem's Hydra configs (conf/) were not found; install ctem from its source tree with "
        "`pip install -e .` or set CTEM_CONFIG_DIR to the conf/ folder"
    )
