"""The 35 official C-MTEB tasks (C-Pack paper, Table 2) and loading them from the hub.

Each entry names the Hugging Face dataset, its configuration, the evaluated split and the
main score. ``load_hub_task`` turns the hub rows into the same containers as local task
folders (it needs network access and the ``datasets`` package).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctem.evaluation.data import (
    ClassificationData,
    ClusteringData,
    RerankingData,
    RetrievalData,
    SentencePairs,
)
from ctem.evaluation.tasks import DEFAULT_MAIN_SCORES, Task, TaskFormatError


@dataclass(frozen=True)
class HubTaskSpec:
    """Where an official task lives on the hub and how it is evaluated.

    ``columns`` maps hub column names to ctem's (``sentence1``, ``score``, ``text``,
    ``label``, ``sentences``, ``labels``); ``params`` overrides evaluator settings.
    """

    name: str
    type: str
    hub_id: str
    split: str
    subset: str | None = None
    train_split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def main_score(self) -> str:
        return DEFAULT_MAIN_SCORES[self.type]


def _clf(name: str, hub: str, split: str, subset: str | None = None, **params: Any) -> HubTaskSpec:
    return HubTaskSpec(name, "Classification", hub, split, subset, params={"samples_per_label": 32, **params})


_NLI_COLUMNS = {"sent1": "sentence1", "sent2": "sentence2", "labels": "label"}

CMTEB_TASKS: dict[str, HubTaskSpec] = {
    spec.name: spec
    for spec in [
        # Retrieval (8): corpus/queries in hub_id, judgements in hub_id + "-qrels".
        *(
            HubTaskSpec(name, "Retrieval", f"C-MTEB/{name}", "dev")
            for name in (
                "T2Retrieval",
                "MMarcoRetrieval",
                "DuRetrieval",
                "CovidRetrieval",
                "CmedqaRetrieval",
                "EcomRetrieval",
                "MedicalRetrieval",
                "VideoRetrieval",
            )
        ),
        # STS (8)
        HubTaskSpec("ATEC", "STS", "C-MTEB/ATEC", "test"),
        HubTaskSpec("BQ", "STS", "C-MTEB/BQ", "test"),
        HubTaskSpec("LCQMC", "STS", "C-MTEB/LCQMC", "test"),
        HubTaskSpec("PAWSX", "STS", "C-MTEB/PAWSX", "test"),
        HubTaskSpec("STSB", "STS", "C-MTEB/STSB", "test"),
        HubTaskSpec("AFQMC", "STS", "C-MTEB/AFQMC", "validation"),
        HubTaskSpec("QBQTC", "STS", "C-MTEB/QBQTC", "test"),
        HubTaskSpec("STS22", "STS", "mteb/sts22-crosslingual-sts", "test", subset="zh"),
        # Pair classification (2)
        HubTaskSpec("Ocnli", "PairClassification", "C-MTEB/OCNLI", "validation", columns=_NLI_COLUMNS),
        HubTaskSpec("Cmnli", "PairClassification", "C-MTEB/CMNLI", "validation", columns=_NLI_COLUMNS),
        # Classification (9)
        _clf("TNews", "C-MTEB/TNews-classification", "validation"),
        _clf("IFlyTek", "C-MTEB/IFlyTek-classification", "validation", n_experiments=5),
        _clf("MultilingualSentiment", "C-MTEB/MultilingualSentiment-classification", "validation"),
        _clf("JDReview", "C-MTEB/JDReview-classification", "test"),
        _clf("OnlineShopping", "C-MTEB/OnlineShopping-classification", "test"),
        _clf("Waimai", "C-MTEB/waimai-classification", "test"),
        _clf("AmazonReviewsClassification", "mteb/amazon_reviews_multi", "test", "zh", samples_per_label=8),
        _clf("MassiveIntentClassification", "mteb/amazon_massive_intent", "test", "zh-CN", samples_per_label=8),
        _clf("MassiveScenarioClassification", "mteb/amazon_massive_scenario", "test", "zh-CN", samples_per_label=8),
        # Reranking (4)
        HubTaskSpec("T2Reranking", "Reranking", "C-MTEB/T2Reranking", "dev"),
        HubTaskSpec("MMarcoReranking", "Reranking", "C-MTEB/Mmarco-reranking", "dev"),
        HubTaskSpec("CMedQAv1", "Reranking", "C-MTEB/CMedQAv1-reranking", "test"),
        HubTaskSpec("CMedQAv2", "Reranking", "C-MTEB/CMedQAv2-reranking", "test"),
        # Clustering (4)
        HubTaskSpec("CLSClusteringS2S", "Clustering", "C-MTEB/CLSClusteringS2S", "test"),
        HubTaskSpec("CLSClusteringP2P", "Clustering", "C-MTEB/CLSClusteringP2P", "test"),
        HubTaskSpec("ThuNewsClusteringS2S", "Clustering", "C-MTEB/ThuNewsClusteringS2S", "test"),
        HubTaskSpec("ThuNewsClusteringP2P", "Clustering", "C-MTEB/ThuNewsClusteringP2P", "test"),
    ]
}


def _columns(rows: Any, spec: HubTaskSpec, wanted: list[str]) -> dict[str, list[Any]]:
    """Columns by ctem name; unwraps MTEB's v1 one-row-of-lists layout."""
    renamed = {spec.columns.get(col, col): col for col in rows.column_names}
    missing = [w for w in wanted if w not in renamed]
    if missing:
        raise TaskFormatError(f"{spec.hub_id} ({spec.split}): columns {missing} missing; has {rows.column_names}")
    out = {w: list(rows[renamed[w]]) for w in wanted}
    if len(rows) == 1 and isinstance(out[wanted[0]][0], list):
        out = {w: list(v[0]) for w, v in out.items()}
    return out


def hub_split(hub_id: str, subset: str | None, split: str, cache_dir: str | None) -> Any:
    """One split of a hub dataset; a failure to reach or read it is a ``TaskFormatError``
    naming the dataset (one line for the command line), not a network stack trace."""
    from datasets import load_dataset

    try:
        return load_dataset(hub_id, subset, split=split, cache_dir=cache_dir)
    except Exception as err:  # network, auth, missing dataset or split: all input problems here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaskFormatError(
            f"hf://{hub_id} ({split}): could not be loaded from the Hugging Face hub ({reason}); "
            "evaluate local task folders with tasks_dir=DIR"
        ) from err


def load_hub_task(spec: HubTaskSpec, cache_dir: str | None = None) -> Task:
    """Download (or read from the ``datasets`` cache) one official task."""

    def split(name: str, hub_id: str = spec.hub_id) -> Any:
        return hub_split(hub_id, spec.subset, name, cache_dir)

    if spec.type in ("STS", "PairClassification"):
        target = "score" if spec.type == "STS" else "label"
        cols = _columns(split(spec.split), spec, ["sentence1", "sentence2", target])
        data: Any = SentencePairs(cols["sentence1"], cols["sentence2"], cols[target])
    elif spec.type == "Classification":
        train = _columns(split(spec.train_split), spec, ["text", "label"])
        test = _columns(split(spec.split), spec, ["text", "label"])
        data = ClassificationData(train["text"], train["label"], test["text"], test["label"])
    elif spec.type == "Clustering":
        rows = split(spec.split)
        data = ClusteringData([(list(r["sentences"]), list(r["labels"])) for r in rows])
    elif spec.type == "Reranking":
        cols = _columns(split(spec.split), spec, ["query", "positive", "negative"])
        data = RerankingData(cols["query"], cols["positive"], cols["negative"])
    else:
        corpus, queries = split("corpus"), split("queries")
        qrels: dict[str, dict[str, int]] = {}
        for row in hub_split(spec.hub_id + "-qrels", None, spec.split, cache_dir):
            qrels.setdefault(str(row["qid"]), {})[str(row["pid"])] = int(row["score"])
        titles = list(corpus["title"]) if "title" in corpus.column_names else []
        data = RetrievalData(
            [str(i) for i in corpus["id"]],
            list(corpus["text"]),
            [str(i) for i in queries["id"]],
            list(queries["text"]),
            qrels,
            titles,
        )
    return Task(spec.name, spec.type, spec.main_score, data, f"hf://{spec.hub_id}", dict(spec.params))


def load_hub_tasks(names: list[str] | None = None, types: list[str] | None = None, cache_dir: str | None = None) -> list[Task]:
    """Load the selected official tasks (all 35 by default)."""
    unknown = sorted(set(names or []) - set(CMTEB_TASKS))
    if unknown:
        raise TaskFormatError(f"unknown C-MTEB tasks {unknown}; known: {sorted(CMTEB_TASKS)}")
    specs = [CMTEB_TASKS[n] for n in names] if names else list(CMTEB_TASKS.values())
    return [load_hub_task(s, cache_dir) for s in specs if not types or s.type in types]
