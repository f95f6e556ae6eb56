"""W&B: every job of a multirun is its own run (named by its swept overrides, grouped by
the sweep), the C-MTEB callback logs a results table, and ``final_model/`` becomes a model
artifact only when the run is online. All offline: the runs' ``.wandb`` files are read back."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from tests.evaluation.eval_helpers import make_tiny_tasks
from tests.helpers.tiny import sentences, write_vocab

ROOT = Path(__file__).resolve().parents[1]


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline run's ``run-<id>.wandb`` file (W&B's LevelDB-style
    log: a 7-byte file header, then 32 KiB blocks of chunks with a 7-byte header each)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL / FIRST start a record
        if kind in (1, 4):  # FULL / LAST end it
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def read_run(folder: Path) -> dict[str, Any]:
    """Id, name, group and history rows (``{key: value}``) of one offline run folder."""
    out: dict[str, Any] = {"history": []}
    for record in wandb_records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(id=record.run.run_id, name=record.run.display_name, group=record.run.run_group)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:  # a logged dict (a table) comes as one item per field
                keys = [item.key] if item.key else list(item.nested_key)
                node = row
                for key in keys[:-1]:
                    node = node.setdefault(key, {})
                node[keys[-1]] = json.loads(item.value_json)
            out["history"].append(row)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """``train.py -m data.batch_size=8,16`` with W&B (offline) and the C-MTEB callback."""
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    vocab = write_vocab(tmp)
    data = tmp / "pairs.jsonl"
    qs, ps = sentences(48, seed=7), sentences(48, seed=8, max_len=20)
    data.write_text("".join(json.dumps({"query": q, "pos": [p]}, ensure_ascii=False) + "\n" for q, p in zip(qs, ps)), encoding="utf-8")
    tasks = make_tiny_tasks(tmp / "tasks")
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update(HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", NETRC=str(tmp / "no-netrc"))
    out = tmp / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "model=tiny", f"model.tokenizer={vocab}", "data=pairs",
         f"data.train_files=[{data}]", "data.train_group_size=1", "data.batch_size=8,16", "trainer.max_steps=3",
         "trainer.log_every_n_steps=1", "callbacks=cmteb_eval", f"callbacks.cmteb_eval.tasks_dir={tasks}",
         "callbacks.cmteb_eval.eval.tasks=null", "logger=wandb", f"hydra.sweep.dir={out}"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


@pytest.mark.slow
def test_each_multirun_job_is_its_own_run_in_one_group(sweep) -> None:
    folders = {job: list((sweep / job / "wandb").glob("offline-run-*")) for job in ("0", "1")}
    assert all(len(found) == 1 for found in folders.values()), folders
    runs = {job: read_run(found[0]) for job, found in folders.items()}
    assert runs["0"]["id"] != runs["1"]["id"]
    assert (runs["0"]["name"], runs["1"]["name"]) == ("data.batch_size=8", "data.batch_size=16")
    assert runs["0"]["group"] == runs["1"]["group"] == "train-sweep"
    for run in runs.values():
        steps = [row["trainer/global_step"] for row in run["history"] if "trainer/global_step" in row]
        assert steps[0] == 0 and steps == sorted(steps) and steps[-1] == 3, steps  # its own history: 0..3, once
        assert run["history"][0]["_step"] == 0


@pytest.mark.slow
def test_cmteb_results_are_a_wandb_table(sweep) -> None:
    folder = next((sweep / "0" / "wandb").glob("offline-run-*"))
    rows = [row["cmteb/results"] for row in read_run(folder)["history"] if "cmteb/results" in row]
    assert rows and rows[0]["_type"] == "table-file"
    table = json.loads((folder / "files" / rows[-1]["path"]).read_text(encoding="utf-8"))
    assert table["columns"] == ["task", "type", "main_metric", "main_score"]
    by_task = {row[0]: row for row in table["data"]}
    assert by_task["TinySTS"][1:3] == ["STS", "cosine_spearman"]
    assert by_task["TinyRetrieval"][1:3] == ["Retrieval", "ndcg_at_10"]
    assert all(0.0 <= row[3] <= 1.0 for row in table["data"])


def test_single_run_keeps_its_task_name_and_no_group() -> None:
    from ctem.wandb_runs import wandb_run_group, wandb_run_name

    assert wandb_run_name("train") == "train"
    assert wandb_run_group("train") is None


class FakeRun:
    """What ``end_wandb_runs`` uses of a ``wandb`` run."""

    def __init__(self, offline: bool) -> None:
        self.offline, self.disabled, self.id = offline, False, "abc123"
        self.artifacts: list[tuple[Any, list[str]]] = []
        self.finished = False

    def log_artifact(self, artifact: Any, aliases: list[str]) -> None:
        self.artifacts.append((artifact, aliases))

    def finish(self) -> None:
        self.finished = True


@pytest.mark.parametrize("offline", [True, False])
def test_final_model_is_a_model_artifact_only_online(tmp_path, offline) -> None:
    from lightning.pytorch.loggers import WandbLogger

    from ctem.wandb_runs import end_wandb_runs

    final = tmp_path / "final_model"
    final.mkdir()
    (final / "config.json").write_text("{}", encoding="utf-8")
    run = FakeRun(offline)
    trainer = SimpleNamespace(is_global_zero=True, global_step=7, loggers=[WandbLogger(experiment=run)])
    end_wandb_runs(trainer, str(final))  # type: ignore[arg-type]
    assert run.finished
    if offline:
        assert run.artifacts == []
    else:
        (artifact, aliases), = run.artifacts
        assert artifact.type == "model" and artifact.name.startswith("final_model-abc123")
        assert "config.json" in artifact.manifest.entries and artifact.metadata["global_step"] == 7
        assert "final" in aliases
