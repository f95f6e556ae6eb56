"""``ctem-curate``: score-filter, deduplicate and decontaminate C-MTP-style pairs.

``ctem-curate input_files='[a.jsonl,b/*.jsonl]' scorer.model_path=DIR [threshold=0.43]
[decontaminate.task_dirs='[EVAL_DIR]'] [output_dir=DIR]``; see ``conf/curate.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ctem.cli import input_errors_as_messages, refuse_moved_overrides, signals_as_messages
from ctem.config import config_dir, register_resolvers
from ctem.curation import CurationReport, Decontaminator, PairScorer, TextNormalizer, curate
from ctem.curation.engine import EXECUTORS, DedupSettings, SlurmSettings
from ctem.curation.textnorm import UNITS
from ctem.settings import SettingError


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def check_threshold(threshold: Any, scorer: str | None) -> None:
    """Before any work: with a scorer, ``threshold`` is a number a cosine can reach (at most 1:
    above, every pair would be dropped)."""
    if not scorer:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold <= 1:
        raise SettingError("threshold", threshold, "must be a number of at most 1 (a cosine): a higher one keeps no pair")


def check_engine(engine: DictConfig) -> None:
    """Before any work: ``engine.executor`` is known, ``engine.workers`` (and
    ``engine.tasks`` unless null) are whole numbers of at least 1."""
    if engine.executor not in EXECUTORS:
        raise SettingError("engine.executor", engine.executor, f"must be one of {', '.join(EXECUTORS)}")
    for key in ("workers", "tasks"):
        value = engine[key]
        if key == "tasks" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingError(f"engine.{key}", value, "must be a whole number of at least 1")


def kept_nothing_warnings(report: CurationReport) -> list[str]:
    """A warning per input file that had rows and keeps none (its output file is empty; the
    table says which filter dropped them)."""
    return [
        f"[ctem-curate] warning: {stats.input}: all {stats.rows_in} rows were dropped, its output file is empty; "
        "the table above says by which filter"
        for stats in report.files
        if stats.rows_in and not stats.rows_out
    ]


def run(cfg: DictConfig) -> CurationReport:
    """Build scorer / deduplicator / decontaminator from ``cfg`` and curate."""
    check_threshold(cfg.threshold, cfg.scorer.model_path)
    check_engine(cfg.engine)
    if cfg.normalize.units not in UNITS:
        raise SettingError("normalize.units", cfg.normalize.units, f"must be one of {', '.join(UNITS)}")
    normalizer = TextNormalizer(cfg.normalize.lowercase, cfg.normalize.strip_punctuation, cfg.normalize.units)
    build_scorer = None
    if cfg.scorer.model_path:
        s = cfg.scorer
        options = dict(
            pooling=s.pooling,
            trust_remote_code=s.trust_remote_code,
            query_instruction=s.query_instruction,
            passage_instruction=s.passage_instruction,
            query_max_length=s.query_max_length,
            passage_max_length=s.passage_max_length,
            batch_size=s.batch_size,
            device=s.device,
        )
        path, threads = s.model_path, s.num_threads
        if threads:
            torch.set_num_threads(threads)
        # Built here, so a bad model folder is refused before any row is read; worker
        # processes (engine.workers > 1) each build their own from the same settings.
        build_scorer = PairScorer.from_pretrained(path, **options)
        if cfg.engine.workers > 1:

            def build_scorer() -> PairScorer:
                if threads:
                    torch.set_num_threads(threads)
                return PairScorer.from_pretrained(path, **options)

    d = cfg.dedup
    dedup = None
    if d.exact or d.near:
        dedup = DedupSettings(
            exact=d.exact, near=d.near, threshold=d.threshold, ngram=d.ngram,
            num_perm=d.num_perm, min_chars=d.min_chars, seed=d.seed,
        )
    c = cfg.decontaminate
    decontaminator = None
    if _as_list(c.task_dirs):
        decontaminator = Decontaminator.from_task_dirs(
            _as_list(c.task_dirs), fields=list(c.fields), near=c.near, threshold=c.threshold,
            ngram=c.ngram, num_perm=c.num_perm, min_chars=c.min_chars, seed=c.seed, normalizer=normalizer,
        )
    settings = {
        key: OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        for key, value in ((k, cfg[k]) for k in cfg if k not in ("hydra", "paths"))
    }
    report = curate(
        _as_list(cfg.input_files),
        cfg.output_dir,
        scorer=build_scorer,
        threshold=cfg.threshold,
        score_decimals=cfg.score_decimals,
        dedup=dedup,
        decontaminator=decontaminator,
        normalizer=normalizer,
        on_bad_row=cfg.on_bad_row,
        rows_per_batch=cfg.rows_per_batch,
        hist_bin_width=cfg.report.hist_bin_width,
        threshold_table=list(cfg.report.threshold_table),
        show_progress=cfg.progress,
        settings=settings,
        tasks=cfg.engine.tasks,
        workers=cfg.engine.workers,
        slurm=SlurmSettings(**OmegaConf.to_container(cfg.engine.slurm, resolve=True)) if cfg.engine.executor == "slurm" else None,
    )
    print("\n" + report.table())
    if report.scores is not None and report.scores.total:
        s = report.scores.summary()
        print(f"\n[ctem-curate] scores: mean {s['mean']}, p10 {s['p10']}, p50 {s['p50']}, p90 {s['p90']}; "
              f"threshold {cfg.threshold}")
    if report.contamination:
        print("[ctem-curate] contaminated rows per task: "
              + ", ".join(f"{t} {n}" for t, n in sorted(report.contamination.items())))
    print(f"[ctem-curate] {report.total.rows_in} rows in, {report.total.rows_out} out, {report.seconds:.1f}s; "
          f"results in {Path(cfg.output_dir).resolve()}")
    for warning in kept_nothing_warnings(report):
        print(warning, file=sys.stderr, flush=True)
    return report


register_resolvers()


@refuse_moved_overrides("ctem-curate")
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="curate")
def main(cfg: DictConfig) -> None:
    with input_errors_as_messages("ctem-curate"), \
            signals_as_messages("ctem-curate", f"nothing written ({cfg.output_dir} is as it was): run the command again"):
        run(cfg)


if __name__ == "__main__":
    main()
