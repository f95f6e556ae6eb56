"""``ctem-eval``: evaluate a model on C-MTEB-style tasks and write the results.

``ctem-eval model_path=DIR tasks_dir=DIR output_dir=DIR [eval.tasks=[..]] [eval.task_types=[..]]
[eval.instructions=false] [eval.batch_size=N]``; see ``conf/eval.yaml`` and
``conf/eval_settings/default.yaml``.

The results are one set, written when every task is done: ctem's ``<Task>.json`` per task
and ``summary.md`` / ``tasks.csv`` / ``summary.csv`` (last), and mteb's results folder, each
written into a staging folder and moved into place together (``ctem.files.staged_files``).
A failed or interrupted run leaves ``output_dir`` as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ctem import TextEncoder, __version__
from ctem.cli import input_errors_as_messages, refuse_moved_overrides, signals_as_messages
from ctem.config import config_dir, register_resolvers
from ctem.distributed import launched_ranks
from ctem.evaluation import (
    CMTEBEvaluator,
    EncoderAdapter,
    EvalConfig,
    EvalSettings,
    Task,
    TaskResult,
    check_main_scores,
    load_hub_tasks,
    load_local_tasks,
    write_summary,
    write_task_json,
)
from ctem.evaluation.mteb_format import MODEL_META_FILE, mteb_results_dir, mteb_task_path, write_mteb_results
from ctem.evaluation.report import SUMMARY_FILES, task_json_path
from ctem.evaluation.runner import truncated
from ctem.evaluation.tasks import check_unique_names
from ctem.files import check_distinct, staged_files


def describe_instruction(settings: EvalSettings, override: str | None) -> str:
    """One line: which query instruction the evaluation uses, and where it came from."""
    if not settings.instructions:
        return "query instructions: off (eval.instructions=false)"
    source = "set by eval.query_instruction=" if override is not None else "recorded by the model"
    types = "/".join(settings.instruction_task_types)
    return f"{types} query instruction: {settings.query_instruction!r} ({source})"


def load_tasks(cfg: DictConfig, config: EvalConfig) -> list[Task]:
    """Local task folders, or the official tasks from the hub when ``tasks_dir`` is null."""
    if cfg.tasks_dir:
        return load_local_tasks(cfg.tasks_dir, config.tasks, config.task_types)
    return load_hub_tasks(config.tasks, config.task_types, cfg.hub_cache_dir, cfg.lang.code)


def output_files(tasks: Sequence[Task], out_dir: Path, model_name: str) -> tuple[list[Path], list[Path]]:
    """The run's files: ctem's in ``out_dir`` (per task, then ``SUMMARY_FILES``) and mteb's
    in the model's results folder (``model_meta.json``, then per task); each path is checked
    to stay inside ``out_dir``."""
    ctem = [task_json_path(out_dir, task.name) for task in tasks] + [out_dir / name for name in SUMMARY_FILES]
    mteb = [mteb_results_dir(out_dir, model_name) / MODEL_META_FILE]
    mteb += [mteb_task_path(out_dir, model_name, task.name) for task in tasks]
    return ctem, mteb


def check_outputs(tasks: list[Task], out_dir: Path, model_name: str) -> None:
    """Before anything is evaluated: every task's result files lie inside ``out_dir``, and no
    two outputs share a file (a task selected twice, two tasks of one name)."""
    check_unique_names([(task.name, task.source) for task in tasks])
    ctem, mteb = output_files(tasks, out_dir, model_name)
    check_distinct(ctem + mteb)


def write_outputs(results: list[TaskResult], tasks: list[Task], out_dir: Path, model_name: str, dim: int | None) -> str:
    """Write the run's files (:func:`output_files`) as one set: into staging folders, moved
    into place when all are written, mteb's folder first and ``summary.csv`` last; on any
    error ``out_dir`` stays as it was. Returns the summary's Markdown."""
    ctem, mteb = output_files(tasks, out_dir, model_name)
    with staged_files(out_dir, [path.name for path in ctem]) as staging:
        for result in results:
            write_task_json(result, staging, model_name, __version__)
        markdown = write_summary(results, staging, model_name, dim)
        with staged_files(mteb[0].parent, [path.name for path in mteb]) as mteb_staging:
            write_mteb_results(results, tasks, mteb_staging, model_name, dim)
    return markdown


def run(cfg: DictConfig) -> list[TaskResult]:
    """Evaluate ``cfg.model_path`` on the selected tasks; write the JSONs (ctem's and mteb's
    format) and the summary as one set.

    Started by ``torchrun --nproc_per_node N -m ctem.cli.eval ...``, the N ranks each encode
    a share of every task's texts (gathered back in order), every rank scores the same
    embeddings, and rank 0 alone prints and writes: the scores equal one process's.
    """
    model_path = cfg.model_path  # a missing model is reported before anything is loaded
    config: EvalConfig = instantiate(cfg.eval)
    tasks = load_tasks(cfg, config)
    model_name = cfg.model_name or Path(str(model_path).rstrip("/")).name
    out_dir = Path(cfg.output_dir)
    check_outputs(tasks, out_dir, model_name)
    check_main_scores(tasks, config)
    with launched_ranks() as ranks:
        first = ranks.rank == 0
        device = ranks.device or cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        encoder = TextEncoder.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code).to(device)
        # every task's texts are encoded once here: keeping their tokenised batches (the
        # training callback's reuse across evaluations) would only hold memory that grows
        # with the corpus
        adapter = EncoderAdapter(
            encoder, batch_size=config.batch_size, max_length=config.max_length, cache_tokenization=False,
            rank=ranks.rank, world_size=ranks.world, show_progress=cfg.progress and first,
        )

        def start(task: Task) -> None:
            adapter.progress_label = f"{task.name} ({task.type})"

        def end(result: TaskResult) -> None:
            if first:
                print(f"[ctem-eval] {result.task:<24} {result.main_metric:<16} {100 * result.main_score:6.2f}  ({result.seconds:.1f}s)", flush=True)

        settings = config.for_model(encoder.query_instruction)
        if first:
            print(f"[ctem-eval] {describe_instruction(settings, config.query_instruction)}", flush=True)
        encode = adapter if config.truncate_dim is None else truncated(adapter, config.truncate_dim, encoder.normalize)
        results = CMTEBEvaluator(tasks, settings).run(encode, start, end)
    if first:
        print("\n" + write_outputs(results, tasks, out_dir, model_name, config.truncate_dim or encoder.dim))
        print(f"[ctem-eval] results in {out_dir.resolve()}" + (f" (encoded by {ranks.world} ranks)" if ranks.world > 1 else ""))
    return results


register_resolvers()


@refuse_moved_overrides("ctem-eval")
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    with input_errors_as_messages("ctem-eval"), \
            signals_as_messages("ctem-eval", f"no results written ({cfg.output_dir} is as it was): run the command again"):
        run(cfg)


if __name__ == "__main__":
    main()
