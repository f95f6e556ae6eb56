"""Official tasks on the Hugging Face hub: the 35 C-MTEB tasks (C-Pack paper, Table 2) and
the English MTEB tasks users name most, and loading them.

Each entry names the Hugging Face dataset, its configuration, the evaluated split, its
language (mteb's tag) and the main score. ``load_hub_task`` turns the hub rows into the
same containers as local task folders (it needs network access and the ``datasets``
package). Retrieval sets come in two layouts: C-MTEB's (``corpus`` / ``queries`` splits,
judgements in the dataset ``<id>-qrels``) and MTEB's BEIR layout (``corpus`` / ``queries``
configurations, judgements in the ``default`` configuration's evaluated split, columns
``_id``, ``query-id``, ``corpus-id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctem.evaluation.task_type import find_task_type
from ctem.evaluation.tasks import DEFAULT_MAIN_SCORES, Task, TaskFormatError


@dataclass(frozen=True)
class HubTaskSpec:
    """Where an official task lives on the hub and how it is evaluated.

    ``columns`` maps hub column names to ctem's (``sentence1``, ``score``, ``text``,
    ``label``, ``sentences``, ``labels``); ``params`` overrides evaluator settings;
    ``language`` is mteb's tag of the evaluated subset; ``layout`` the retrieval layout
    (``cmteb`` or ``beir``, see the module docstring).
    """

    name: str
    type: str
    hub_id: str
    split: str
    subset: str | None = None
    train_split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    language: str = "cmn-Hans"
    layout: str = "cmteb"

    @property
    def main_score(self) -> str:
        return DEFAULT_MAIN_SCORES[self.type]


def _clf(name: str, hub: str, split: str, subset: str | None = None, language: str = "cmn-Hans", **params: Any) -> HubTaskSpec:
    return HubTaskSpec(name, "Classification", hub, split, subset, params={"samples_per_label": 32, **params}, language=language)


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
        _clf("MassiveIntentClassification", "mteb/amazon_massive_intent", "test", "zh-CN", "cmo-Hans", samples_per_label=8),
        _clf("MassiveScenarioClassification", "mteb/amazon_massive_scenario", "test", "zh-CN", "cmo-Hans", samples_per_label=8),
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


_EN = "eng-Latn"
_PAIR_COLUMNS = {"labels": "label"}

# English MTEB tasks (MTEB v1 datasets on the hub, test splits), a few per type: the ones
# an English user names first. ``ctem-eval lang=en tasks_dir=null`` evaluates all of them.
MTEB_EN_TASKS: dict[str, HubTaskSpec] = {
    spec.name: spec
    for spec in [
        # Retrieval (BEIR layout)
        *(
            HubTaskSpec(name, "Retrieval", f"mteb/{hub}", "test", language=_EN, layout="beir")
            for name, hub in (("SciFact", "scifact"), ("NFCorpus", "nfcorpus"), ("ArguAna", "arguana"), ("FiQA2018", "fiqa"), ("SCIDOCS", "scidocs"))
        ),
        # STS
        *(
            HubTaskSpec(name, "STS", f"mteb/{hub}", "test", language=_EN)
            for name, hub in (("STSBenchmark", "stsbenchmark-sts"), ("SICK-R", "sickr-sts"), ("STS12", "sts12-sts"), ("STS13", "sts13-sts"),
                              ("STS14", "sts14-sts"), ("STS15", "sts15-sts"), ("STS16", "sts16-sts"), ("BIOSSES", "biosses-sts"))
        ),
        # Pair classification (one row of lists)
        HubTaskSpec("TwitterURLCorpus", "PairClassification", "mteb/twitterurlcorpus-pairclassification", "test", columns=_PAIR_COLUMNS, language=_EN),
        HubTaskSpec("SprintDuplicateQuestions", "PairClassification", "mteb/sprintduplicatequestions-pairclassification", "test", columns=_PAIR_COLUMNS, language=_EN),
        HubTaskSpec("TwitterSemEval2015", "PairClassification", "mteb/twittersemeval2015-pairclassification", "test", columns=_PAIR_COLUMNS, language=_EN),
        # Classification
        _clf("Banking77Classification", "mteb/banking77", "test", language=_EN),
        _clf("EmotionClassification", "mteb/emotion", "test", language=_EN),
        _clf("ImdbClassification", "mteb/imdb", "test", language=_EN),
        _clf("AmazonCounterfactualClassification", "mteb/amazon_counterfactual", "test", "en", language=_EN),
        # Reranking
        HubTaskSpec("AskUbuntuDupQuestions", "Reranking", "mteb/askubuntudupquestions-reranking", "test", language=_EN),
        HubTaskSpec("SciDocsRR", "Reranking", "mteb/scidocs-reranking", "test", language=_EN),
        HubTaskSpec("StackOverflowDupQuestions", "Reranking", "mteb/stackoverflowdupquestions-reranking", "test", language=_EN),
        # Clustering
        HubTaskSpec("TwentyNewsgroupsClustering", "Clustering", "mteb/twentynewsgroups-clustering", "test", language=_EN),
        HubTaskSpec("MedrxivClusteringS2S", "Clustering", "mteb/medrxiv-clustering-s2s", "test", language=_EN),
        HubTaskSpec("BiorxivClusteringS2S", "Clustering", "mteb/biorxiv-clustering-s2s", "test", language=_EN),
    ]
}
# Every registered hub task by name, and the default task set of each language (conf/lang/).
HUB_TASKS: dict[str, HubTaskSpec] = {**CMTEB_TASKS, **MTEB_EN_TASKS}
HUB_SUITES: dict[str, dict[str, HubTaskSpec]] = {"zh": CMTEB_TASKS, "en": MTEB_EN_TASKS}


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
    """Download (or read from the ``datasets`` cache) one official task; its type's
    ``load_hub`` turns the hub rows into the task's container."""
    record = find_task_type(spec.type)
    if record is None:
        raise TaskFormatError(f"hub task {spec.name}: unknown task type {spec.type!r}")

    def fetch(hub_id: str, subset: str | None, split: str) -> Any:
        return hub_split(hub_id, subset, split, cache_dir)

    data = record.load_hub(spec, fetch)
    return Task(spec.name, spec.type, spec.main_score, data, f"hf://{spec.hub_id}", dict(spec.params), spec.language)


def load_hub_tasks(
    names: list[str] | None = None, types: list[str] | None = None, cache_dir: str | None = None, language: str = "zh"
) -> list[Task]:
    """Load the selected official tasks: by name from every registered task (C-MTEB and
    English MTEB), or by default the suite of ``language`` (zh: the 35 C-MTEB tasks, en:
    :data:`MTEB_EN_TASKS`)."""
    if language not in HUB_SUITES:
        raise TaskFormatError(f"no hub task suite for language {language!r}; known: {sorted(HUB_SUITES)} (name tasks with eval.tasks=[...])")
    unknown = sorted(set(names or []) - set(HUB_TASKS))
    if unknown:
        raise TaskFormatError(f"unknown hub tasks {unknown}; known: {sorted(HUB_TASKS)}")
    specs = [HUB_TASKS[n] for n in names] if names else list(HUB_SUITES[language].values())
    return [load_hub_task(s, cache_dir) for s in specs if not types or s.type in types]
