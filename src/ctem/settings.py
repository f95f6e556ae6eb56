"""``SettingError``: a configured value the run cannot use, reported as one line naming
the setting (``query_max_length=1: ...``)."""

from __future__ import annotations

from typing import Any

from ctem.errors import CtemInputError


class SettingError(CtemInputError, ValueError):
    """``setting=value: problem``."""

    def __init__(self, setting: str, value: Any, problem: str) -> None:
        self.setting = setting
        self.value = value
        self.problem = problem
        super().__init__(f"{setting}={value}: {problem}")
