"""Curation of weakly related training pairs (C-MTP style): score filtering with an
embedding model, exact / near deduplication and decontamination against evaluation tasks."""

from ctem.curation.decontaminate import Decontaminator, find_task_dirs, iter_task_texts
from ctem.curation.dedup import MinHasher, NearDuplicateIndex, PairDeduplicator
from ctem.curation.engine import DedupSettings
from ctem.curation.pipeline import curate
from ctem.curation.report import REASONS, CurationReport, FileStats, ScoreDistribution
from ctem.curation.scoring import PairScorer
from ctem.curation.textnorm import TextNormalizer, char_ngrams, normalize_text, shingles

__all__ = [
    "CurationReport",
    "Decontaminator",
    "DedupSettings",
    "FileStats",
    "MinHasher",
    "NearDuplicateIndex",
    "PairDeduplicator",
    "PairScorer",
    "REASONS",
    "ScoreDistribution",
    "TextNormalizer",
    "char_ngrams",
    "curate",
    "find_task_dirs",
    "iter_task_texts",
    "normalize_text",
    "shingles",
]
