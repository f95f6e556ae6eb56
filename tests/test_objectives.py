"""The objectives beyond InfoNCE on the loss seam: in-batch false-negative masking,
Matryoshka and teacher-score distillation, against direct references and
sentence-transformers' losses on the same batch, and blockwise (gradient cache) = full."""

from __future__ import annotations

import pytest
import torch

from ctem.grad_cache import blockwise_loss
from ctem.losses import BatchLayout, DistillationLoss, InfoNCELoss, MatryoshkaLoss, text_keys


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


class _Fixed(torch.nn.Module):
    """A stand-in SentenceTransformer returning fixed embeddings per input column."""

    def __init__(self, tables: list[torch.Tensor]) -> None:
        super().__init__()
        self.tables = tables

    def forward(self, features: dict) -> dict:
        return {"sentence_embedding": self.tables[features["which"]]}

    def get_embedding_dimension(self) -> int:
        return self.tables[0].size(1)

    _get_untruncated_embedding_dimension = get_embedding_dimension


def _columns(n: int) -> list[dict]:
    return [{"which": i} for i in range(n)]


# ----------------------------------------------------------------- false negatives
def test_text_keys_ignore_padding_and_tell_texts_apart() -> None:
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 8], [5, 6, 7, 0], [6, 5, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]])
    keys = text_keys(ids, mask)
    assert keys[0] == keys[2] and len({int(k) for k in keys}) == 3
    assert keys[0] == text_keys(ids[:1, :3], mask[:1, :3])[0]  # padding to another length


@pytest.mark.parametrize("in_batch", [True, False])
def test_masked_duplicates_are_not_negatives(in_batch: bool) -> None:
    """A passage equal to a query's positive counts as neither negative nor positive: the
    loss equals InfoNCE over the batch with that column removed for that query."""
    torch.manual_seed(0)
    group, n = 2, 4
    q, p = _unit(torch.randn(n, 8)), _unit(torch.randn(n * group, 8))
    keys = torch.arange(n * group)
    keys[5] = keys[0]  # query 2's negative is query 0's positive
    keys[6] = keys[2]  # query 3's positive is query 1's positive
    keys[3] = keys[4]  # query 1's negative is query 2's positive
    keys[7] = keys[6]  # query 3's negative is its own positive (and query 1's)
    out = InfoNCELoss(0.05)(q, p, BatchLayout(group, in_batch_negatives=in_batch, passage_keys=keys))
    expected, masked = [], 0
    for i in range(n):
        cands = list(range(n * group)) if in_batch else list(range(i * group, (i + 1) * group))
        kept = [j for j in cands if j == i * group or keys[j] != keys[i * group]]
        masked += len(cands) - len(kept)
        logits = torch.stack([q[i] @ p[j] for j in kept]) / 0.05
        expected.append(-torch.log_softmax(logits, 0)[kept.index(i * group)])
    assert out.loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    assert int(out.masked) == masked and masked == (6 if in_batch else 1)


def test_without_duplicates_masking_changes_nothing() -> None:
    torch.manual_seed(1)
    q, p = _unit(torch.randn(3, 8)), _unit(torch.randn(6, 8))
    plain = InfoNCELoss(0.05)(q, p, BatchLayout(2))
    masked = InfoNCELoss(0.05)(q, p, BatchLayout(2, passage_keys=torch.arange(6)))
    assert plain.loss.item() == masked.loss.item() and int(masked.masked) == 0


@pytest.mark.parametrize("in_batch", [True, False])
def test_guide_masks_what_it_scores_above_the_positive(in_batch: bool) -> None:
    """GISTEmbed: a candidate the guide scores above the query's positive (less the margin)
    is not a negative; the positive itself always stays."""
    torch.manual_seed(6)
    group, n, margin = 2, 4, 0.1
    q, p = _unit(torch.randn(n, 8)), _unit(torch.randn(n * group, 8))
    gq, gp = _unit(torch.randn(n, 6)), _unit(torch.randn(n * group, 6))
    out = InfoNCELoss(0.05)(q, p, BatchLayout(group, in_batch_negatives=in_batch, guide=(gq, gp), guide_margin=margin))
    expected, masked = [], 0
    for i in range(n):
        cands = list(range(n * group)) if in_batch else list(range(i * group, (i + 1) * group))
        kept = [j for j in cands if j == i * group or gq[i] @ gp[j] <= gq[i] @ gp[i * group] - margin]
        masked += len(cands) - len(kept)
        logits = torch.stack([q[i] @ p[j] for j in kept]) / 0.05
        expected.append(-torch.log_softmax(logits, 0)[kept.index(i * group)])
    assert out.loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    assert int(out.masked) == masked > 0


# ----------------------------------------------------------------- Matryoshka
def test_matryoshka_equals_sentence_transformers() -> None:
    st = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    torch.manual_seed(2)
    tau, n, dims, weights = 0.05, 5, [16, 8, 4], [1.0, 0.5, 0.25]
    q, pos, neg = torch.randn(n, 16), torch.randn(n, 16), torch.randn(n, 16)
    grouped = torch.stack([pos, neg], dim=1).reshape(2 * n, 16)
    # ctem's encoder normalises the full embedding; the prefixes are normalised again.
    ours = MatryoshkaLoss(InfoNCELoss(tau), dims, weights)(_unit(q), _unit(grouped), BatchLayout(2)).loss
    model = _Fixed([_unit(q), _unit(pos), _unit(neg)])
    reference = st.MatryoshkaLoss(model, st.MultipleNegativesRankingLoss(model, scale=1 / tau), dims, weights)
    assert ours.item() == pytest.approx(float(reference(_columns(3), labels=None)), rel=1e-5)


def test_matryoshka_sorts_dims_and_refuses_bad_ones() -> None:
    loss = MatryoshkaLoss(InfoNCELoss(), [8, 32, 16], [1, 3, 2])
    assert loss.dims == [32, 16, 8] and loss.weights == [3.0, 2.0, 1.0]
    assert loss.facts().matryoshka_dims == (32, 16, 8) and loss.facts().temperature == 0.02
    with pytest.raises(ValueError, match="weights"):
        MatryoshkaLoss(InfoNCELoss(), [8, 4], [1.0])
    with pytest.raises(ValueError, match="exceeds"):
        MatryoshkaLoss(InfoNCELoss(), [64])(torch.randn(2, 8), torch.randn(2, 8), BatchLayout(1))


# ----------------------------------------------------------------- distillation
def test_kl_term_equals_sentence_transformers_distill_kl() -> None:
    st = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    torch.manual_seed(3)
    n, tau, tau_t = 6, 0.05, 0.5
    q, pos, negs = _unit(torch.randn(n, 12)), _unit(torch.randn(n, 12)), [_unit(torch.randn(n, 12)) for _ in range(2)]
    teacher = torch.randn(n, 3) * 3
    grouped = torch.stack([pos, *negs], dim=1).reshape(3 * n, 12)
    ours = DistillationLoss(tau, tau_t, kl_weight=tau**2, infonce_weight=0.0)
    got = ours(q, grouped, BatchLayout(3, teacher_scores=teacher)).loss
    model = _Fixed([q, pos, *negs])
    reference = st.DistillKLDivLoss(model, student_temperature=tau, teacher_temperature=tau_t)
    assert got.item() == pytest.approx(float(reference(_columns(4), teacher)), rel=1e-5)


def test_distillation_adds_kl_to_infonce() -> None:
    torch.manual_seed(4)
    q, p, teacher = _unit(torch.randn(4, 8)), _unit(torch.randn(8, 8)), torch.randn(4, 2)
    layout = BatchLayout(2, teacher_scores=teacher)
    nce = InfoNCELoss(0.05)(q, p, layout).loss
    kl_only = DistillationLoss(0.05, infonce_weight=0.0)(q, p, layout).loss
    both = DistillationLoss(0.05, kl_weight=2.0)(q, p, layout).loss
    assert both.item() == pytest.approx(nce.item() + 2 * kl_only.item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher scores"):
        DistillationLoss()(q, p, BatchLayout(2))


# ----------------------------------------------------------------- every criterion, blockwise
CRITERIA = {
    "infonce_masked": (InfoNCELoss(0.05), True),
    "matryoshka": (MatryoshkaLoss(InfoNCELoss(0.05), [8, 4, 2]), True),
    "distill": (DistillationLoss(0.05, teacher_temperature=0.1, kl_weight=0.5), True),
    "matryoshka_distill": (MatryoshkaLoss(DistillationLoss(0.05), [8, 4]), False),
}


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_blockwise_equals_full_for_every_criterion(name: str) -> None:
    """The gradient cache's blockwise loss and gradients equal the full matrix's, for any
    criterion, with a query offset (cross-device) and false-negative keys."""
    criterion, in_batch = CRITERIA[name]
    torch.manual_seed(5)
    q = _unit(torch.randn(10, 8)).requires_grad_(True)
    p = _unit(torch.randn(30 * 3, 8)).requires_grad_(True)
    keys = torch.arange(90)
    keys[(7 + 2) * 3 + 1] = keys[(7 + 5) * 3]  # a duplicate of a positive inside the blocks
    guide = (_unit(torch.randn(10, 4)), _unit(torch.randn(90, 4)))
    layout = BatchLayout(3, 7, in_batch, keys, torch.randn(10, 3), guide, guide_margin=0.3)
    full = criterion(q, p, layout)
    full.loss.backward()
    cached = blockwise_loss(criterion, q.detach(), p.detach(), layout, block_size=4)
    assert cached.loss.item() == pytest.approx(full.loss.item(), rel=1e-6)
    assert int(cached.masked) == int(full.masked)
    torch.testing.assert_close(cached.query_grad, q.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.passage_grad, p.grad, rtol=1e-5, atol=1e-6)
