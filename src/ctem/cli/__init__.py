"""Command-line entry points (thin Hydra mains)."""

from __future__ import annotations

import functools
import re
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from ctem.errors import CtemInputError
from ctem.remote_code import RemoteCodeError
from ctem.settings import SettingError

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
        # The batch layout's switch moved out of the criterion when any loss became pluggable.
        "stage.loss.in_batch_negatives": "stage.in_batch_negatives",
    },
}
# The setting that allows a model's own code, per command (default: trust_remote_code).
TRUST_SETTINGS = {"ctem-train": "model.trust_remote_code", "ctem-curate": "scorer.trust_remote_code"}
# Flags with which Hydra only prints (help, the config) and runs nothing.
INFO_FLAGS = frozenset({"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--shell-completion", "-sc"})
# The config node of an object Hydra failed to build, as its error names it.
_FULL_KEY = re.compile(r"\nfull_key: (\S+)\s*$")


def error_message(command: str, err: BaseException) -> str | None:
    """``command: error: ...`` for an error the user can fix (any ``CtemInputError``, a model
    that needs its own code, a file system error such as a full disk or a read-only /
    forbidden output folder, naming the path, a bad argument of an object the config builds),
    ``None`` for anything else (a bug: keep the traceback)."""
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        return built_object_message(command, err)
    if isinstance(err, RemoteCodeError):
        return f"{command}: error: {err.message(TRUST_SETTINGS.get(command, 'trust_remote_code'))}"
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{command}: error: {err.filename}: {err.strerror}"
    if isinstance(err, (CtemInputError, OSError)):
        return f"{command}: error: {err}"
    return None


def config_path(node: str, setting: str) -> str:
    """The override path of ``setting`` of the object built from the config ``node``:
    ``setting`` may name itself from the object (``query_max_length`` of ``model``) or from
    a node of its own (``eval.batch_size`` of ``callbacks.cmteb_eval.eval``)."""
    nodes, parts = node.split("."), setting.split(".")
    for n in range(min(len(nodes), len(parts) - 1), 0, -1):
        if nodes[-n:] == parts[:n]:
            return ".".join(nodes + parts[n:])
    return f"{node}.{setting}"


def built_object_message(command: str, err: InstantiationException) -> str | None:
    """The line of an error raised while Hydra built an object (Hydra's own text spans
    several lines): the cause's line, a ``SettingError`` named by its config path
    (``data.batch_size=0: ...``), or a constructor's refusal of its arguments
    (``ValueError``, Lightning's ``MisconfigurationException``) after the node's path."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    cause = err.__cause__
    found = _FULL_KEY.search(str(err))
    node = found[1] if found else ""
    if isinstance(cause, SettingError) and node:
        return f"{command}: error: {SettingError(config_path(node, cause.setting), cause.value, cause.problem)}"
    message = error_message(command, cause)
    if message is None and str(err).startswith("Error in call to target") and isinstance(cause, (ValueError, MisconfigurationException)):
        return f"{command}: error: {node or 'config'}: {' '.join(str(cause).split())}"
    return message


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


def run_folder_error(command: str, overrides: Sequence[str]) -> str | None:
    """The one-line error when the folder this run's Hydra outputs go to cannot be created or
    written (``hydra.run.dir``, ``hydra.sweep.dir`` or ``paths.log_dir``, else ``logs``), else
    ``None``; Hydra itself would fail with a traceback. Probed by creating what is missing
    and removing it again."""
    given = {key: value for key, _, value in (o.lstrip("+").partition("=") for o in overrides if "=" in o)}
    setting = next((key for key in ("hydra.run.dir", "hydra.sweep.dir", "paths.log_dir") if given.get(key)), None)
    if setting and "${" in given[setting]:
        return None  # resolved by Hydra; checked when it creates the folder
    folder = Path(given[setting] if setting else "logs")
    created: list[Path] = []
    try:
        for path in reversed([folder, *folder.parents]):
            if not path.exists():
                path.mkdir()
                created.append(path)
        with tempfile.TemporaryFile(dir=folder, prefix=".ctem-write-check."):
            pass
    except OSError as err:
        return f"{command}: error: {setting or 'paths.log_dir'}={folder}: cannot create or write this run's folder ({err.strerror or err}: {err.filename or folder})"
    finally:
        for path in reversed(created):
            path.rmdir()
    return None


def refuse_moved_overrides(command: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Decorate a Hydra main: before Hydra parses ``sys.argv``, an override of a moved path
    exits with status 1 and one line naming the new path (Hydra alone prints five lines
    saying the key is not in the config), and so does a run folder that cannot be created
    (:func:`run_folder_error`; Hydra alone prints a traceback)."""

    def decorate(main: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(main)
        def checked() -> None:
            args = sys.argv[1:]
            for override in args:
                message = None if override.startswith("-") else moved_override(command, override)
                if message:
                    raise SystemExit(message)
            if not INFO_FLAGS.intersection(args):
                message = run_folder_error(command, [a for a in args if not a.startswith("-")])
                if message:
                    raise SystemExit(message)
            main()

        return checked

    return decorate


def in_main_thread() -> bool:
    """Whether signal handlers can be set here (only the main thread may)."""
    return threading.current_thread() is threading.main_thread()


class Interrupted(BaseException):
    """SIGTERM arrived (raised by the handler of :func:`signals_as_messages`; Ctrl-C raises
    ``KeyboardInterrupt``). A ``BaseException``, so no ``except Exception`` swallows it."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted()


@contextmanager
def signals_as_messages(command: str, kept: str) -> Iterator[None]:
    """SIGTERM (a scheduler, ``kill``) or SIGINT (Ctrl-C) inside the block ends the command
    with exit status 1 and one line: the signal and ``kept``, what stays written and how to
    continue (without it: SIGTERM kills silently with status 143). Outputs being written are
    removed by the ``ctem.files`` writers on the way out."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main_thread() else None
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as err:
        name = "SIGTERM" if isinstance(err, Interrupted) else "SIGINT (Ctrl-C)"
        raise SystemExit(f"{command}: stopped by {name}; {kept}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
