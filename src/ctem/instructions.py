"""Query instructions: one named constant each, and the one rule for which one applies.

Any setting that takes an instruction (``model.query_instruction``, ``data.query_instruction``,
``data.instructions_by_type.*``, ``ctem-eval query_instruction=``, ``ctem-mine
mining.query_instruction=``, ...) accepts either the text itself or one of the names of
:data:`NAMED_INSTRUCTIONS`, so ``query_instruction=bge_zh`` works in any override without
Hydra quoting rules.

The rule: a trained model folder records the instruction its retrieval queries were trained
with (``ctem_config.json`` ``query_instruction`` and the sentence-transformers ``query``
prompt; ``""`` = none). Evaluation uses that recorded instruction unless the user sets one.
"""

from __future__ import annotations

import re

from ctem.errors import CtemInputError

# BGE's Chinese retrieval instruction (C-Pack; the BAAI/bge-*-zh model cards).
BGE_ZH = "为这个句子生成表示以用于检索相关文章："
# BGE's English retrieval instruction (the BAAI/bge-*-en model cards).
BGE_EN = "Represent this sentence for searching relevant passages: "

# Short names usable wherever an instruction is configured; "none" means no instruction.
NAMED_INSTRUCTIONS: dict[str, str] = {"bge_zh": BGE_ZH, "bge_en": BGE_EN, "none": ""}


# What a name looks like (``bge_zh``): lower-case words joined by underscores, no spaces or
# punctuation. An instruction text always has spaces or punctuation ("...passages: ").
_NAME_LIKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


class InstructionNameError(CtemInputError, ValueError):
    """A setting names an instruction that does not exist (``bge_fr``)."""


def resolve_instruction(value: str | None) -> str | None:
    """The instruction text for ``value``: a name of :data:`NAMED_INSTRUCTIONS` becomes its
    text; any other string is the instruction itself; ``None`` stays ``None`` (not set).
    A value shaped like a name that is not one (``bge_fr``) is an
    :class:`InstructionNameError`, not silently an instruction text."""
    if value is None:
        return None
    if value in NAMED_INSTRUCTIONS:
        return NAMED_INSTRUCTIONS[value]
    if _NAME_LIKE.match(value):
        raise InstructionNameError(
            f"unknown instruction name {value!r}: use one of {', '.join(NAMED_INSTRUCTIONS)} or the instruction's own text"
        )
    return value


def evaluation_instruction(override: str | None, recorded: str | None) -> str:
    """The retrieval-query instruction to evaluate a model with: the user's ``override`` when
    set, else the instruction the model ``recorded`` (none when it records none)."""
    chosen = resolve_instruction(override)
    if chosen is None:
        chosen = resolve_instruction(recorded)
    return chosen or ""


def with_instruction(query: str, prompt: str | None, instruction: str | None) -> str:
    """The query with its row ``prompt`` (wins) or the configured instruction prepended."""
    prefix = prompt if prompt is not None else instruction
    return f"{prefix}{query}" if prefix else query
