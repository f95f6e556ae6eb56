"""Command-line entry points (thin Hydra mains)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from omegaconf.errors import MissingMandatoryValue

from ctem.evaluation.tasks import TaskFormatError
from ctem.data_modules.formats import DataFormatError, DataSizeError

# Errors in what the user gave (files, rows, task folders): reported as one clear line.
INPUT_ERRORS: tuple[type[Exception], ...] = (DataFormatError, DataSizeError, TaskFormatError, FileNotFoundError)


@contextmanager
def input_errors_as_messages(command: str) -> Iterator[None]:
    """Turn an input error raised anywhere below (even inside Lightning's loop) into
    ``command: error: <message>`` on stderr and exit status 1, without a stack trace."""
    try:
        yield
    except INPUT_ERRORS as err:
        raise SystemExit(f"{command}: error: {err}") from None
    except MissingMandatoryValue as err:
        raise SystemExit(f"{command}: error: {err.full_key} is required: add {err.full_key}=... to the command") from None
