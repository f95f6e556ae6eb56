"""One evaluator per C-MTEB task type; each sees only an ``encode`` callable."""

from ctem.evaluation.evaluators.base import EncodeFn, encode_unique
from ctem.evaluation.evaluators.classification import evaluate_classification
from ctem.evaluation.evaluators.clustering import evaluate_clustering
from ctem.evaluation.evaluators.pair_classification import evaluate_pair_classification
from ctem.evaluation.evaluators.reranking import evaluate_reranking
from ctem.evaluation.evaluators.retrieval import evaluate_retrieval
from ctem.evaluation.evaluators.sts import evaluate_sts

__all__ = [
    "EncodeFn",
    "encode_unique",
    "evaluate_classification",
    "evaluate_clustering",
    "evaluate_pair_classification",
    "evaluate_reranking",
    "evaluate_retrieval",
    "evaluate_sts",
]
