"""``ctem-score``: write a teacher's scores into training rows, for distillation.

``ctem-score teacher=DIR input=FILE output=FILE [teacher_kind=auto|bi_encoder|cross_encoder]
[batch_size=64] [max_length=512] [query_instruction=...]``; see ``conf/score.yaml`` and
``docs/objectives.md``.
"""

from __future__ import annotations

from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ctem.cli import input_errors_as_messages, refuse_moved_overrides, signals_as_messages
from ctem.config import config_dir, register_resolvers
from ctem.instructions import resolve_instruction
from ctem.mining import check_mining_paths
from ctem.scoring import BiEncoderTeacher, ScoringResult, load_teacher, score_jsonl


def _plain(value: Any) -> Any:
    """Lists of a Hydra config as Python objects (scalars unchanged)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def run(cfg: DictConfig) -> ScoringResult:
    """Load the teacher, score ``cfg.input`` and write ``cfg.output``."""
    check_mining_paths(_plain(cfg.input), cfg.output)  # before the model loads
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = load_teacher(cfg.teacher, cfg.teacher_kind, cfg.batch_size, cfg.max_length, device, cfg.trust_remote_code)
    instruction = resolve_instruction(cfg.query_instruction)
    if instruction is None and isinstance(teacher, BiEncoderTeacher):
        instruction = teacher.encoder.query_instruction
    result = score_jsonl(teacher, _plain(cfg.input), cfg.output, instruction, on_bad_row=cfg.on_bad_row)
    print(f"[ctem-score] {result.summary()}", flush=True)
    print(f"[ctem-score] written to {cfg.output}", flush=True)
    return result


register_resolvers()


@refuse_moved_overrides("ctem-score")
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="score")
def main(cfg: DictConfig) -> None:
    with input_errors_as_messages("ctem-score"), signals_as_messages("ctem-score", f"{cfg.output} not written: run the command again"):
        run(cfg)


if __name__ == "__main__":
    main()
