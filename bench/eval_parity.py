"""Parity of ctem's C-MTEB evaluators with the ``mteb`` package on the same local tasks.

Both sides get the same embeddings (one ctem ``EncoderAdapter`` serves ctem's evaluators
and, wrapped as an mteb encoder, mteb's tasks built from the same local data), so any
difference comes from the evaluation code. Prints both main scores side by side and the
largest absolute difference per task type. Needs ``pip install mteb``.

    python bench/eval_parity.py --model DIR --tasks-dir ../shared/data/eval/cmteb-dev
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from ctem import TextEncoder
from ctem.evaluation import CMTEBEvaluator, EncoderAdapter, EvalSettings, Task, load_local_tasks
from ctem.evaluation.data import RetrievalData

# ctem main score -> the mteb score compared with it
MTEB_METRIC = {
    "Retrieval": ("ndcg_at_10", "ndcg_at_10"),
    "Reranking": ("map", "map_at_1000"),
    "STS": ("cosine_spearman", "cosine_spearman"),
    "PairClassification": ("ap", "cosine_ap"),
    "Classification": ("accuracy", "accuracy"),
    "Clustering": ("v_measure", "v_measure"),
}
# also compared: MTEB's current pair-classification main score
EXTRA = {"PairClassification": ("max_accuracy", "max_accuracy"), "Reranking": ("mrr_at_10", "mrr_at_10")}

_META: dict[str, Any] = {
    "description": "ctem local task wrapped for parity checks",
    "reference": "https://example.org/ctem",
    "dataset": {"path": "local", "revision": "local"},
    "category": "t2t",
    "eval_splits": ["test"],
    "eval_langs": ["cmn-Hans"],
    "date": ("2020-01-01", "2020-12-31"),
    "dialect": [],
    "domains": [],
    "task_subtypes": [],
    "license": "not specified",
    "annotations_creators": "derived",
    "modalities": ["text"],
    "sample_creation": "found",
    "bibtex_citation": "",
}


def mteb_task(task: Task, settings: EvalSettings) -> Any:
    """An mteb task object holding the data of a ctem ``Task``."""
    from datasets import Dataset, DatasetDict
    from mteb import TaskMetadata
    from mteb.abstasks import (
        AbsTaskClassification,
        AbsTaskPairClassification,
        AbsTaskRetrieval,
        AbsTaskSTS,
    )
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    data = task.data
    main = {"Reranking": "map_at_1000", "PairClassification": "cosine_ap"}.get(task.type, task.main_score)
    attrs: dict[str, Any] = {"metadata": TaskMetadata(name=f"ctem{task.name}", type=task.type, main_score=main, **_META)}
    if task.type == "STS":
        base = AbsTaskSTS
        ds = DatasetDict(test=Dataset.from_dict({"sentence1": data.sentences1, "sentence2": data.sentences2, "score": data.scores}))
        attrs.update(min_score=min(data.scores), max_score=max(data.scores))
    elif task.type == "PairClassification":
        base = AbsTaskPairClassification
        ds = DatasetDict(test=Dataset.from_dict({"sentence1": data.sentences1, "sentence2": data.sentences2, "labels": data.scores}))
    elif task.type == "Classification":
        base = AbsTaskClassification
        ds = DatasetDict(
            train=Dataset.from_dict({"text": data.train_texts, "label": data.train_labels}),
            test=Dataset.from_dict({"text": data.test_texts, "label": data.test_labels}),
        )
        attrs.update(
            n_experiments=task.params.get("n_experiments", settings.n_experiments),
            samples_per_label=task.params.get("samples_per_label", settings.samples_per_label),
        )
    elif task.type == "Clustering":
        base = AbsTaskClusteringLegacy
        ds = DatasetDict(test=Dataset.from_dict({"sentences": [s[0] for s in data.sets], "labels": [s[1] for s in data.sets]}))
    else:
        base = AbsTaskRetrieval
        split = _retrieval_split(data) if task.type == "Retrieval" else _reranking_split(data)
        ds = {"default": {"test": RetrievalSplitData(**split)}}
        attrs["k_values"] = tuple(settings.k_values)

    def load_data(self: Any, *args: Any, **kwargs: Any) -> None:
        self.dataset = ds
        self.data_loaded = True

    attrs["load_data"] = load_data
    return type(f"Ctem{task.name}", (base,), attrs)()


def _retrieval_split(data: RetrievalData) -> dict[str, Any]:
    from datasets import Dataset

    titles = data.corpus_titles or [""] * len(data.corpus_ids)
    return {
        "queries": Dataset.from_dict({"id": data.query_ids, "text": data.query_texts}),
        "corpus": Dataset.from_dict({"id": data.corpus_ids, "text": data.corpus_texts, "title": titles}),
        "relevant_docs": {q: dict(d) for q, d in data.qrels.items()},
        "top_ranked": None,
    }


def _reranking_split(data: Any) -> dict[str, Any]:
    from datasets import Dataset

    qids, qtexts, dids, dtexts, qrels, top = [], [], [], [], {}, {}
    for i, query in enumerate(data.queries):
        if not data.positives[i] or not data.negatives[i]:
            continue  # skipped by ctem too (MTEB v1 rule)
        qid = f"q{i}"
        qids.append(qid)
        qtexts.append(query)
        labelled = [(f"{qid}p{j}", t, 1) for j, t in enumerate(data.positives[i])]
        labelled += [(f"{qid}n{j}", t, 0) for j, t in enumerate(data.negatives[i])]
        qrels[qid] = {d: rel for d, _, rel in labelled}
        top[qid] = [d for d, _, _ in labelled]
        dids += [d for d, _, _ in labelled]
        dtexts += [t for _, t, _ in labelled]
    return {
        "queries": Dataset.from_dict({"id": qids, "text": qtexts}),
        "corpus": Dataset.from_dict({"id": dids, "text": dtexts}),
        "relevant_docs": qrels,
        "top_ranked": top,
    }


def mteb_model(adapter: EncoderAdapter, settings: EvalSettings, name: str) -> Any:
    """An mteb encoder that embeds with ``adapter`` (cosine similarity)."""
    from mteb.models import ModelMeta
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.types import PromptType

    class CtemEncoder(AbsEncoder):
        mteb_model_meta = ModelMeta.create_empty({"name": f"ctem/{name}", "revision": "local", "similarity_fn_name": "cosine"})

        def __init__(self) -> None:
            self.model = None

        def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            texts = [t for batch in inputs for t in batch["text"]]
            is_query = prompt_type == PromptType.query
            task = type("T", (), {"name": task_metadata.name.removeprefix("ctem"), "type": task_metadata.type})()
            instruction = settings.instruction_for(task) if is_query else None
            return adapter(texts, instruction)

        def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
            a = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings1)), dim=-1)
            b = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings2)), dim=-1)
            return a @ b.T

        def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
            a = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings1)), dim=-1)
            b = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings2)), dim=-1)
            return (a * b).sum(-1)

    return CtemEncoder()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--tasks-dir", required=True, help="folder of local task folders")
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-instructions", action="store_true", help="no query instructions")
    args = parser.parse_args()

    import mteb

    tasks = load_local_tasks(args.tasks_dir, args.tasks)
    settings = EvalSettings(instructions=not args.no_instructions)
    adapter = EncoderAdapter(TextEncoder.from_pretrained(args.model), batch_size=args.batch_size)
    start = time.perf_counter()
    ours = {r.task: r.scores for r in CMTEBEvaluator(tasks, settings).run(adapter)}
    ctem_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model = mteb_model(adapter, settings, args.model.rstrip("/").split("/")[-1])
    run = mteb.evaluate(model, [mteb_task(t, settings) for t in tasks], cache=None, show_progress_bar=False)
    mteb_seconds = time.perf_counter() - start
    theirs = {r.task_name.removeprefix("ctem"): r.scores["test"][0] for r in run.task_results}

    rows, worst = [], {}
    for task in tasks:
        for ours_key, their_key in [MTEB_METRIC[task.type]] + ([EXTRA[task.type]] if task.type in EXTRA else []):
            a, b = ours[task.name][ours_key], float(theirs[task.name][their_key])
            rows.append((task.name, task.type, f"{ours_key} / {their_key}", a, b, abs(a - b)))
            if ours_key == MTEB_METRIC[task.type][0]:
                worst[task.type] = max(worst.get(task.type, 0.0), abs(a - b))
    print("| Task | Type | ctem / mteb metric | ctem | mteb | abs diff |")
    print("|---|---|---|---|---|---|")
    for name, typ, metric, a, b, d in rows:
        print(f"| {name} | {typ} | {metric} | {a:.5f} | {b:.5f} | {d:.5f} |")
    print("\n| Type | largest main-score difference |")
    print("|---|---|")
    for typ, d in worst.items():
        print(f"| {typ} | {d:.5f} |")
    print(f"\nctem {ctem_seconds:.1f}s, mteb {mteb_seconds:.1f}s (same cached tokenisation; encoding included)")


if __name__ == "__main__":
    main()
