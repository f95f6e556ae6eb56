"""Command-line entry points (thin Hydra mains)."""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from ctem.evaluation.tasks import TaskFormatError
from ctem.rows import DataFormatError, DataSizeError
from ctem.files import OutputPathError
from ctem.finite import NonFiniteError
from ctem.remote_code import RemoteCodeError
from ctem.settings import SettingError

# Errors in what the user gave (files, rows, task folders, output names): reported as one clear line.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    DataFormatError,
    DataSizeError,
    TaskFormatError,
    FileNotFoundError,
    OutputPathError,
    SettingError,
    NonFiniteError,  # a run that diverged, a model with NaN weights
)
_EVAL_KEYS = ("tasks", "task_types", "instructions", "query_instruction", "instruction_task_types", "task_instructions", "batch_size", "max_length")
_MINING_KEYS = ("range", "negative_number", "seed", "query_instruction", "false_negative_margin", "keep_existing", "use_gpu", "gpu_ids",
                "index", "nlist", "nprobe", "search_batch_size", "batch_size")
# Override paths that moved when the evaluation and mining settings became one node each
# (README, "Changed override paths"): old path (or prefix) -> new, per command.
MOVED_OVERRIDES: dict[str, dict[str, str]] = {
    "ctem-eval": {**{k: f"eval.{k}" for k in _EVAL_KEYS}, "settings": "eval"},
    "ctem-mine": {**{k: f"mining.{k}" for k in _MINING_KEYS}, "progress": "mining.show_progress"},
    "ctem-train": {
        **{f"callbacks.cmteb_eval.{k}": f"callbacks.cmteb_eval.eval.{k}" for k in _EVAL_KEYS},
        "callbacks.cmteb_eval.settings": "callbacks.cmteb_eval.eval",
        **{f"callbacks.hard_negative_refresh.{k}": f"callbacks.hard_negative_refresh.mining.{k}" for k in (*_MINING_KEYS, "show_progress")},
        **{f"data.{k}": f"data.loader.{k}" for k in ("num_workers", "pin_memory", "persistent_workers")},
    },
}
# The setting that allows a model's own code, per command (default: trust_remote_code).
TRUST_SETTINGS = {"ctem-train": "model.trust_remote_code", "ctem-curate": "scorer.trust_remote_code"}


def error_message(command: str, err: BaseException) -> str | None:
    """``command: error: ...`` for an error the user can fix (bad input, a model that needs
    its own code, a file system error such as a full disk or a read-only / forbidden output
    folder, naming the path), ``None`` for anything else (a bug: keep the traceback)."""
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        return error_message(command, err.__cause__)  # raised while Hydra built an object
    if isinstance(err, RemoteCodeError):
        return f"{command}: error: {err.message(TRUST_SETTINGS.get(command, 'trust_remote_code'))}"
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{command}: error: {err.filename}: {err.strerror}"
    if isinstance(err, (*INPUT_ERRORS, OSError)):
        return f"{command}: error: {err}"
    return None


@contextmanager
def input_errors_as_messages(command: str) -> Iterator[None]:
    """Turn an input error or a file system error raised anywhere below (even inside
    Lightning's loop or Hydra's ``instantiate``) into ``command: error: <message>`` on stderr
    and exit status 1, without a stack trace."""
    try:
        yield
    except MissingMandatoryValue as err:
        raise SystemExit(f"{command}: error: {err.full_key} is required: add {err.full_key}=... to the command") from None
    except Exception as err:  # noqa: BLE001 - only the ones error_message recognises are turned into a line
        message = error_message(command, err)
        if message is None:
            raise
        raise SystemExit(message) from None


def moved_override(command: str, override: str) -> str | None:
    """The one-line error for a command-line override whose path moved, else ``None``
    (``tasks=[A]`` of ctem-eval: ``tasks is now eval.tasks``)."""
    bare = override.lstrip("+~")
    key = bare.split("=", 1)[0]
    for old, new in MOVED_OVERRIDES.get(command, {}).items():
        if key == old or key.startswith(old + "."):
            moved = new + key[len(old):]
            # The new path is in the config: set it plainly (a `+` would be refused), delete with `~`.
            use = ("~" if override.startswith("~") else "") + moved + bare[len(key):]
            return f"{command}: error: {key} is now {moved} (README.md, 'Changed override paths'): use {use}"
    return None


def refuse_moved_overrides(command: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Decorate a Hydra main: before Hydra parses ``sys.argv``, an override of a moved path
    exits with status 1 and one line naming the new path (Hydra alone prints five lines
    saying the key is not in the config)."""

    def decorate(main: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(main)
        def checked() -> None:
            for override in sys.argv[1:]:
                message = None if override.startswith("-") else moved_override(command, override)
                if message:
                    raise SystemExit(message)
            main()

        return checked

    return decorate
