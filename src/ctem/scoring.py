"""Teacher scores for distillation: a teacher model scores every (query, passage) pair of
training rows, written back as the rows' ``pos_scores`` / ``neg_scores`` (FlagEmbedding's
fields), which ``DistillationLoss`` (``stage/loss=distill``) trains towards.

Two kinds of teacher, one protocol (:class:`Teacher`: ``score(queries, passages)``):

- :class:`BiEncoderTeacher`: any model ``TextEncoder`` loads (a ctem folder, a
  sentence-transformers or transformers model); the score is the dot product of the
  embeddings (the cosine for a normalising model), queries with the folder's instruction
  unless the row has its own ``prompt``;
- :class:`CrossEncoderTeacher`: a ``transformers`` sequence-classification model with one
  output (a reranker such as BAAI/bge-reranker-*); the score is its logit.

:func:`score_jsonl` reads rows through ``ctem.rows`` (bad rows: one line naming file, line
and field), scores them in batches and writes the output atomically (``ctem.files``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

import numpy as np
import torch

from ctem.encoder import TextEncoder
from ctem.instructions import with_instruction
from ctem.mining import check_mining_paths, read_mining_rows, write_jsonl_atomic
from ctem.remote_code import check_remote_code, refused_remote_code
from ctem.rows import OnBadRow, describe_source, no_rows
from ctem.settings import SettingError

log = logging.getLogger(__name__)

TeacherKind = Literal["auto", "bi_encoder", "cross_encoder"]


class Teacher(Protocol):
    """Scores pairs: ``score(queries, passages)`` -> float32 ``[N]`` for ``N`` pairs."""

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray: ...


class BiEncoderTeacher:
    """A bi-encoder teacher: ``TextEncoder`` embeddings, score = dot product. Each distinct
    query and passage is encoded once over all calls (memory: one embedding per distinct
    text, as the rows themselves are all held).

    Args:
        encoder: the teacher encoder.
        batch_size: texts per forward pass.
    """

    def __init__(self, encoder: TextEncoder, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        # Embeddings of the texts seen so far, per side: mined negatives are other rows'
        # positives, so across calls most passages repeat (each is embedded once).
        self._seen: dict[bool, dict[str, np.ndarray]] = {True: {}, False: {}}

    def embed(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        """``[len(texts), H]`` embeddings; texts not seen before are encoded, once each."""
        seen = self._seen[is_query]
        new = list(dict.fromkeys(t for t in texts if t not in seen))
        if new:
            for text, vector in zip(new, self.encoder.encode(new, batch_size=self.batch_size, is_query=is_query)):
                seen[text] = vector
        return np.stack([seen[t] for t in texts]) if texts else np.zeros((0, self.encoder.dim), np.float32)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        q, p = self.embed(queries, is_query=True), self.embed(passages, is_query=False)
        return np.einsum("nh,nh->n", q, p).astype(np.float32)


class CrossEncoderTeacher:
    """A cross-encoder teacher: a sequence-classification model with one output; score = its logit.

    Args:
        model: the ``AutoModelForSequenceClassification`` model.
        tokenizer: its tokenizer.
        batch_size: pairs per forward pass.
        max_length: token limit of a (query, passage) pair.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, batch_size: int = 64, max_length: int = 512) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        device = next(self.model.parameters()).device
        order = np.argsort([-(len(q) + len(p)) for q, p in zip(queries, passages)], kind="stable")
        out = np.empty(len(queries), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            tokens = self.tokenizer(
                [queries[i] for i in rows], [passages[i] for i in rows],
                truncation=True, max_length=self.max_length, padding=True, return_tensors="pt",
            ).to(device)
            out[rows] = self.model(**tokens).logits[:, 0].float().cpu().numpy()
        return out


def teacher_kind(path: str | os.PathLike) -> Literal["bi_encoder", "cross_encoder"]:
    """``cross_encoder`` for a folder whose ``config.json`` names a ``...ForSequenceClassification``
    architecture, else ``bi_encoder``."""
    config = Path(path) / "config.json"
    if config.is_file():
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        if any(name.endswith("ForSequenceClassification") for name in architectures):
            return "cross_encoder"
    return "bi_encoder"


def load_teacher(
    path: str,
    kind: TeacherKind = "auto",
    batch_size: int = 64,
    max_length: int = 512,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> Teacher:
    """The teacher in ``path`` (a folder or hub id) as a :class:`Teacher`; ``kind="auto"``
    reads it from the folder (:func:`teacher_kind`)."""
    if kind not in ("auto", "bi_encoder", "cross_encoder"):
        raise SettingError("teacher_kind", kind, "must be auto, bi_encoder or cross_encoder")
    resolved = teacher_kind(path) if kind == "auto" else kind
    if resolved == "bi_encoder":
        encoder = TextEncoder.from_pretrained(path, trust_remote_code=trust_remote_code).to(device)
        return BiEncoderTeacher(encoder, batch_size)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_remote_code(path, trust_remote_code)
    with refused_remote_code(path):
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if model.config.num_labels != 1:
        raise SettingError(
            "teacher", path, f"a cross-encoder teacher needs one output (a relevance logit), this model has {model.config.num_labels}"
        )
    return CrossEncoderTeacher(model.to(device), tokenizer, batch_size, max_length)


@dataclass
class ScoringResult:
    """What :func:`score_jsonl` did: rows written, pairs scored, rows skipped as bad."""

    rows: int
    pairs: int
    skipped: int

    def summary(self) -> str:
        skipped = f", {self.skipped} bad row(s) skipped" if self.skipped else ""
        return f"{self.rows} rows, {self.pairs} (query, passage) pairs scored{skipped}"


def score_jsonl(
    teacher: Teacher,
    input_files: str | Sequence[str],
    output: str | os.PathLike,
    query_instruction: str | None = None,
    rows_per_call: int = 1024,
    on_bad_row: OnBadRow = "error",
) -> ScoringResult:
    """Score every (query, positive) and (query, negative) pair of ``input_files`` with
    ``teacher`` and write the rows, unchanged but for ``pos_scores`` / ``neg_scores``, to
    ``output`` (atomically; refused when ``output`` is an input). Queries get the row's
    ``prompt``, else ``query_instruction`` (bi-encoder teachers: their folder's instruction).
    ``rows_per_call`` rows are scored per call of the teacher (which batches further)."""
    check_mining_paths(input_files, output)
    rows, report = read_mining_rows(input_files, on_bad_row)
    if report.count:
        log.warning(report.summary())
    if not rows:
        raise no_rows(describe_source(input_files), report)
    written, pairs = [], 0
    for start in range(0, len(rows), rows_per_call):
        block = rows[start : start + rows_per_call]
        queries, passages = [], []
        for row in block:
            query = with_instruction(row["query"], row["prompt"], query_instruction)
            for passage in [*row["pos"], *row["neg"]]:
                queries.append(query)
                passages.append(passage)
        scores = teacher.score(queries, passages).tolist()
        pairs += len(scores)
        at = 0
        for row in block:
            n_pos, n_neg = len(row["pos"]), len(row["neg"])
            pos_scores, neg_scores = scores[at : at + n_pos], scores[at + n_pos : at + n_pos + n_neg]
            at += n_pos + n_neg
            written.append({**row["original"], "pos_scores": pos_scores, "neg_scores": neg_scores})
    write_jsonl_atomic(written, output)
    return ScoringResult(len(written), pairs, report.count)
