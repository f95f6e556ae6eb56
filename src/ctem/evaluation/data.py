"""In-memory task data, one container per C-MTEB task type.

The evaluators read only these containers; `tasks.py` (local folders) and `registry.py`
(Hugging Face hub) build them. Texts are plain strings; labels and scores keep the values
of the source files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Union


@dataclass
class SentencePairs:
    """STS (float ``scores``) or pair classification (0/1 ``scores``): ``N`` pairs."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


@dataclass
class ClassificationData:
    """Labelled texts: a training split for the classifier and an evaluation split."""

    train_texts: list[str]
    train_labels: list[Hashable]
    test_texts: list[str]
    test_labels: list[Hashable]


@dataclass
class ClusteringData:
    """One or more sets of ``(texts, labels)``; each set is clustered on its own."""

    sets: list[tuple[list[str], list[Hashable]]]


@dataclass
class RetrievalData:
    """A corpus, queries and graded relevance judgements ``qrels[qid][pid] = int``.

    ``corpus_titles[i]`` may be empty; a document is encoded as ``"title text"``.
    """

    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    corpus_titles: list[str] = field(default_factory=list)


@dataclass
class RerankingData:
    """Per query, candidate passages split into ``positives`` and ``negatives``."""

    queries: list[str]
    positives: list[list[str]]
    negatives: list[list[str]]


TaskData = Union[SentencePairs, ClassificationData, ClusteringData, RetrievalData, RerankingData]
