"""Models that ship their own Python code (``auto_map`` in ``config.json`` or
``tokenizer_config.json``): loaded only with ``trust_remote_code=True``, otherwise refused at
once with one line, never by a "[y/N]" prompt on stdin.

Every ctem loader passes the setting explicitly (``AutoModel``, ``AutoTokenizer``,
``AutoModelForMaskedLM``), so transformers never asks; a local folder is checked before
anything of it is loaded, and transformers' own refusal (a hub model) becomes
:class:`RemoteCodeError` too.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ctem.errors import CtemInputError

# transformers' words when it refuses to run a model's code without trust_remote_code=True.
_TRANSFORMERS_REFUSAL = "trust_remote_code=True"


class RemoteCodeError(CtemInputError, ValueError):
    """``source`` can only be loaded by running Python code of its own, and
    ``trust_remote_code`` is off."""

    def __init__(self, source: str, setting: str = "trust_remote_code") -> None:
        self.source = source
        super().__init__(self.message(setting))

    def message(self, setting: str) -> str:
        """The one-line reason, naming the setting (``model.trust_remote_code`` for training)."""
        return f"{self.source}: the model needs its own Python code (auto_map); set {setting}=true to run it"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def needs_remote_code(source: str | Path) -> bool:
    """Whether the local folder ``source`` names code of its own that transformers would have
    to run: an ``auto_map`` for a ``model_type`` (or ``tokenizer_class``) transformers does not
    know. ``False`` for hub ids and plain files."""
    from transformers import CONFIG_MAPPING
    import transformers

    root = Path(source)
    if not root.is_dir():
        return False
    config = _read_json(root / "config.json")
    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING:
        return True
    tokenizer = _read_json(root / "tokenizer_config.json")
    auto_map = tokenizer.get("auto_map") or {}
    if isinstance(auto_map, list) or "AutoTokenizer" in auto_map:  # a list: the old layout
        name = str(tokenizer.get("tokenizer_class") or "")
        known = name and (hasattr(transformers, name) or hasattr(transformers, name.removesuffix("Fast")))
        return not known and config.get("model_type") not in CONFIG_MAPPING
    return False


def check_remote_code(source: str | Path, trust_remote_code: bool) -> None:
    """``RemoteCodeError`` when ``source`` (a local folder) needs code of its own and
    ``trust_remote_code`` is off."""
    if not trust_remote_code and needs_remote_code(source):
        raise RemoteCodeError(str(source))


@contextmanager
def refused_remote_code(source: str | Path) -> Iterator[None]:
    """Turn transformers' refusal to run ``source``'s code into ``RemoteCodeError``."""
    try:
        yield
    except ValueError as err:
        if _TRANSFORMERS_REFUSAL in str(err) and not isinstance(err, RemoteCodeError):
            raise RemoteCodeError(str(source)) from None
        raise
