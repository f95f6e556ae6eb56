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


def cache_home() -> str:
    """The user's cache folder as the XDG spec defines it: ``XDG_CACHE_HOME`` when set and not
    empty (an empty one is unset: it never means the file-system root), else ``$HOME/.cache``,
    else ``./.cache`` (``${ctem_cache_home:}``)."""
    if os.environ.get("XDG_CACHE_HOME"):
        return os.environ["XDG_CACHE_HOME"]
    return str(Path(os.environ.get("HOME") or ".") / ".cache")


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


def new_folder(path: str) -> str:
    """``path``, else ``path_2``, ``path_3``, ...: the first that does not exist yet, created
    here. ``os.mkdir`` fails when the folder exists, so two runs started in the same second
    (even on two machines sharing the folder) never get the same one
    (``${ctem_new_folder:logs/train/runs/${now:...}}``; Hydra resolves it once per run, and
    Lightning hands the resolved folder to DDP worker processes)."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = base, 1
    while True:
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            number += 1
            candidate = base.with_name(f"{base.name}_{number}")


def register_resolvers() -> None:
    """Register ``ctem_asset``, ``ctem_cache_home``, ``ctem_new_folder``, ``ctem_wandb_offline``,
    ``ctem_wandb_name`` and ``ctem_wandb_group`` (idempotent)."""
    from ctem.wandb_runs import wandb_run_group, wandb_run_name

    resolvers = {
        "ctem_asset": asset_path,
        "ctem_cache_home": cache_home,
        "ctem_wandb_offline": wandb_offline,
        "ctem_wandb_name": wandb_run_name,
        "ctem_wandb_group": wandb_run_group,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("ctem_new_folder"):
        # Cached: every resolution of one config (and of the copies Hydra makes of it for
        # multirun jobs) gives the folder claimed first.
        OmegaConf.register_new_resolver("ctem_new_folder", new_folder, use_cache=True)


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
