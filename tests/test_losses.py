"""InfoNCELoss against a float64 reference and sentence-transformers' MNRL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctem.losses import BatchLayout, InfoNCELoss


def reference_loss(q: np.ndarray, p: np.ndarray, group: int, tau: float, in_batch: bool, offset: int = 0) -> float:
    """Direct float64 InfoNCE: -mean log softmax score of each query's positive."""
    total = 0.0
    for i in range(q.shape[0]):
        g = offset + i
        cands = range(p.shape[0]) if in_batch else range(g * group, (g + 1) * group)
        logits = np.array([q[i] @ p[j] / tau for j in cands])
        pos = list(cands).index(g * group)
        total += -(logits[pos] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
    return total / q.shape[0]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


@pytest.mark.parametrize(("group", "in_batch"), [(1, True), (3, True), (3, False)])
def test_matches_float64_reference(group: int, in_batch: bool) -> None:
    torch.manual_seed(0)
    q, p = _unit(torch.randn(6, 16)), _unit(torch.randn(6 * group, 16))
    out = InfoNCELoss(temperature=0.05)(q, p, BatchLayout(group, in_batch_negatives=in_batch))
    ref = reference_loss(q.double().numpy(), p.double().numpy(), group, 0.05, in_batch)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    assert out.scores.shape == ((6, 6 * group) if in_batch else (6, group))


def test_query_offset_selects_global_positives() -> None:
    torch.manual_seed(1)
    q, p = _unit(torch.randn(3, 8)), _unit(torch.randn(12 * 2, 8))
    out = InfoNCELoss(0.02)(q, p, BatchLayout(group_size=2, query_offset=5))
    assert out.targets.tolist() == [10, 12, 14]
    ref = reference_loss(q.double().numpy(), p.double().numpy(), 2, 0.02, True, offset=5)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)


def test_equals_sentence_transformers_mnrl() -> None:
    st_losses = pytest.importorskip("sentence_transformers.losses")
    torch.manual_seed(2)
    tau, n = 0.02, 5
    q, pos, neg = torch.randn(n, 12), torch.randn(n, 12), torch.randn(n, 12)
    # ctem: passages grouped per query, positive first; MNRL: all positives, then all negatives.
    grouped = torch.stack([pos, neg], dim=1).reshape(2 * n, 12)
    ours = InfoNCELoss(tau)(_unit(q), _unit(grouped), BatchLayout(group_size=2)).loss
    module_value = _mnrl_on_embeddings(st_losses, q, pos, neg, tau)
    assert ours.item() == pytest.approx(module_value, rel=1e-5)


def _mnrl_on_embeddings(st_losses, q, pos, neg, tau) -> float:
    """Run MultipleNegativesRankingLoss.forward with a stand-in model returning fixed embeddings."""
    class Fixed(torch.nn.Module):
        def __init__(self, tables):
            super().__init__()
            self.tables = tables

        def forward(self, features):
            return {"sentence_embedding": self.tables[features["which"]]}

    model = Fixed([q, pos, neg])
    loss = st_losses.MultipleNegativesRankingLoss(model, scale=1 / tau)
    features = [{"which": 0}, {"which": 1}, {"which": 2}]
    return float(loss(features, labels=None))


def test_rejects_bad_layout() -> None:
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match="groups of 2"):
        loss(torch.randn(2, 4), torch.randn(3, 4), BatchLayout(group_size=2))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)
