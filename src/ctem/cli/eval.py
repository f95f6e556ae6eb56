"""``ctem-eval``: evaluate a model on C-MTEB-style tasks and write the results.

``ctem-eval model_path=DIR tasks_dir=DIR output_dir=DIR [tasks=[..]] [task_types=[..]]
[instructions=false] [batch_size=N]``; see ``conf/eval.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ctem import TextEncoder, __version__
from ctem.cli import input_errors_as_messages
from ctem.config import config_dir, register_resolvers
from ctem.evaluation import (
    CMTEBEvaluator,
    EncoderAdapter,
    EvalSettings,
    Task,
    TaskResult,
    load_hub_tasks,
    load_local_tasks,
    write_summary,
    write_task_json,
)
from ctem.evaluation.mteb_format import (
    MODEL_META_FILE,
    mteb_results_dir,
    mteb_task_path,
    write_mteb_model_meta,
    write_mteb_task_json,
)
from ctem.evaluation.report import SUMMARY_FILES, task_json_path
from ctem.evaluation.tasks import check_unique_names
from ctem.files import check_distinct

log = logging.getLogger("ctem.eval")


def settings_from_config(cfg: DictConfig) -> EvalSettings:
    """:class:`EvalSettings` from the instruction fields and ``settings`` of ``cfg``."""
    extra: dict[str, Any] = OmegaConf.to_container(cfg.settings, resolve=True)  # type: ignore[assignment]
    return EvalSettings(
        instructions=cfg.instructions,
        query_instruction=cfg.query_instruction,
        instruction_task_types=tuple(cfg.instruction_task_types),
        task_instructions=dict(cfg.task_instructions or {}),
        **{k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()},
    )


def describe_instruction(settings: EvalSettings, override: str | None) -> str:
    """One line: which query instruction the evaluation uses, and where it came from."""
    if not settings.instructions:
        return "query instructions: off (instructions=false)"
    source = "set by query_instruction=" if override is not None else "recorded by the model"
    types = "/".join(settings.instruction_task_types)
    return f"{types} query instruction: {settings.query_instruction!r} ({source})"


def load_tasks(cfg: DictConfig) -> list[Task]:
    """Local task folders, or the official tasks from the hub when ``tasks_dir`` is null."""
    names = list(cfg.tasks) if cfg.tasks else None
    types = list(cfg.task_types) if cfg.task_types else None
    if cfg.tasks_dir:
        return load_local_tasks(cfg.tasks_dir, names, types)
    return load_hub_tasks(names, types, cfg.hub_cache_dir)


def check_outputs(tasks: list[Task], out_dir: Path, model_name: str) -> None:
    """Before anything is evaluated: every task's result files lie inside ``out_dir``, and no
    two outputs share a file (a task selected twice, two tasks of one name)."""
    check_unique_names([(task.name, task.source) for task in tasks])
    meta = mteb_results_dir(out_dir, model_name) / MODEL_META_FILE
    planned = [out_dir / name for name in SUMMARY_FILES] + [meta]
    for task in tasks:
        planned += [task_json_path(out_dir, task.name), mteb_task_path(out_dir, model_name, task.name)]
    check_distinct(planned)


def run(cfg: DictConfig) -> list[TaskResult]:
    """Evaluate ``cfg.model_path`` on the selected tasks; write JSONs (ctem's and mteb's
    format) and the summary."""
    model_path = cfg.model_path  # a missing model is reported before anything is loaded
    tasks = load_tasks(cfg)
    model_name = cfg.model_name or Path(str(model_path).rstrip("/")).name
    out_dir = Path(cfg.output_dir)
    check_outputs(tasks, out_dir, model_name)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = TextEncoder.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code).to(device)
    adapter = EncoderAdapter(
        encoder, batch_size=cfg.batch_size, max_length=cfg.max_length, show_progress=cfg.progress
    )

    def start(task: Task) -> None:
        adapter.progress_label = f"{task.name} ({task.type})"

    tasks_by_name = {task.name: task for task in tasks}
    write_mteb_model_meta(out_dir, model_name, encoder.dim)

    def end(result: TaskResult) -> None:
        write_task_json(result, out_dir, model_name, __version__)
        write_mteb_task_json(result, tasks_by_name[result.task], out_dir, model_name)
        print(f"[ctem-eval] {result.task:<24} {result.main_metric:<16} {100 * result.main_score:6.2f}  ({result.seconds:.1f}s)", flush=True)

    settings = settings_from_config(cfg).for_model(encoder.query_instruction)
    print(f"[ctem-eval] {describe_instruction(settings, cfg.query_instruction)}", flush=True)
    results = CMTEBEvaluator(tasks, settings).run(adapter, start, end)
    print("\n" + write_summary(results, out_dir, model_name, encoder.dim))
    print(f"[ctem-eval] results in {out_dir.resolve()}")
    return results


register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    with input_errors_as_messages("ctem-eval"):
        run(cfg)


if __name__ == "__main__":
    main()
