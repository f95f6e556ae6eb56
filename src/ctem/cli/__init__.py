"""Command-line entry points (thin Hydra mains)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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
