"""Factors of variation (B21 §3): statistics vs brute force, a constructed known answer,
class specificity, invariance gap and alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from invlab.factors import B21_FAMILIES, factors_of_variation
from invlab.metrics.functional.factors import (
    alignment,
    chance_alignment,
    class_specificity,
    factor_deltas,
    factor_stats,
    invariance_gap,
    rank_factors,
    same_class_pairs,
    top_k_iou,
)


class ShapeBrightness(nn.Module):
    """φ(x) = [(x − mean x)/‖x − mean x‖, mean x]: the pattern's shape (invariant to
    brightness and contrast) and its mean brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(28 * 28 + 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        m = f.mean(1, keepdim=True)
        c = f - m
        return torch.cat([c / c.norm(dim=1, keepdim=True).clamp_min(1e-8), m], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _brightness_class(n: int = 60) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pattern P at brightness b_i ~ U(0.4, 1): images differ only by brightness."""
    g = torch.Generator().manual_seed(0)
    pattern = 0.2 + 0.6 * torch.rand(1, 1, 28, 28, generator=g)
    b = 0.4 + 0.6 * torch.rand(n, generator=torch.Generator().manual_seed(2))
    return b.view(-1, 1, 1, 1) * pattern, torch.zeros(n, dtype=torch.long), b


def test_same_class_pairs_are_same_class_distinct_and_seeded() -> None:
    y = torch.tensor([0, 1, 0, 1, 2, 0, 1, 0, 3])
    p1 = same_class_pairs(y, 3, torch.Generator().manual_seed(5))
    p2 = same_class_pairs(y, 3, torch.Generator().manual_seed(5))
    assert set(p1) == {0, 1}  # classes 2 and 3 have a single image
    for c, (i1, i2) in p1.items():
        assert (y[i1] == c).all() and (y[i2] == c).all() and (i1 != i2).all()
        assert torch.equal(i1, p2[c][0]) and torch.equal(i2, p2[c][1])
    assert len(p1[0][0]) == 3
    with pytest.raises(ValueError, match="n_pairs must be >= 1"):
        same_class_pairs(y, 0)


def test_factor_stats_match_a_brute_force_loop() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    z2t = z2 + 0.7 * torch.randn(4, 30, 8, generator=g)
    s, delta = factor_deltas(z1, z2, z2t)
    st = factor_stats(s, delta)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    a1, a2, a2t = z1.double().numpy(), z2.double().numpy(), z2t.double().numpy()
    for m in range(4):
        d = [cos(a1[i], a2t[m, i]) - cos(a1[i], a2[i]) for i in range(30)]
        rel = [d[i] / cos(a1[i], a2[i]) for i in range(30)]
        assert st["proportion_boosted"][m] == pytest.approx(np.mean(np.array(d) > 1e-5))
        assert st["mean_delta"][m] == pytest.approx(np.mean(d), abs=1e-5)
        assert st["std_delta"][m] == pytest.approx(np.std(d, ddof=1), abs=1e-5)
        assert st["mean_relative"][m] == pytest.approx(np.mean(rel), rel=1e-3)


def test_float_noise_is_not_a_boost() -> None:
    z = torch.randn(10, 5)
    s, delta = factor_deltas(z, z.clone(), z.clone().unsqueeze(0))
    assert factor_stats(s, delta)["proportion_boosted"].item() == 0.0


def test_factor_deltas_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"expected z1, z2 \[P, D\]"):
        factor_deltas(torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(1, 3, 4))


def test_brightness_class_ranks_brightness_first_with_the_known_proportion() -> None:
    x, y, _ = _brightness_class()
    model = ShapeBrightness()
    fov = factors_of_variation(model, x, y, n_pairs=60, generator=torch.Generator().manual_seed(1))
    top = fov.top(2)[0]
    assert set(top) == {"brightness_up", "brightness_down"}, fov.scores
    geo = [fov.transforms.index(t) for t in B21_FAMILIES[:7]]
    assert fov.scores[0, geo].max() < 0.05  # moving the pattern never helps
    # known answer: brute force over the same pairs, brightness_up = clip(f·x) in pixels
    i1, i2 = same_class_pairs(y, 60, torch.Generator().manual_seed(1))[0]
    with torch.no_grad():
        z1, z2 = model.forward_features(x[i1]).double(), model.forward_features(x[i2]).double()
        j = fov.transforms.index("brightness_up")
        for mi, f in enumerate(fov.magnitudes[j]):
            zt = model.forward_features((x[i2] * f).clamp(0, 1)).double()
            boosted = [float(torch.cosine_similarity(z1[p], zt[p], 0)
                             - torch.cosine_similarity(z1[p], z2[p], 0)) > 1e-5
                       for p in range(len(i1))]
            assert fov.per_magnitude["proportion_boosted"][0, j, mi].item() == \
                pytest.approx(np.mean(boosted))


def test_rank_and_iou() -> None:
    s = torch.tensor([[0.1, 0.9, 0.5, 0.5]])
    assert rank_factors(s).tolist() == [[3, 0, 1, 2]]  # ties by index
    assert top_k_iou(torch.tensor([3.0, 2, 1, 0]), torch.tensor([0.0, 2, 1, 3]), 2) == 1 / 3


def test_class_specificity_matches_scipy() -> None:
    g = torch.Generator().manual_seed(3)
    sc = torch.rand(4, 13, generator=g)
    spec = class_specificity(sc, 5)
    assert spec["spearman"][1, 2] == pytest.approx(stats.spearmanr(sc[1], sc[2]).statistic)
    assert torch.allclose(spec["spearman"], spec["spearman"].T)
    assert spec["iou"].diagonal().eq(1).all()
    same = class_specificity(sc[:1].repeat(3, 1), 5)
    assert torch.allclose(same["spearman"], torch.ones(3, 3, dtype=torch.float64))


def test_invariance_gap_and_alignment() -> None:
    tr = torch.zeros(3, 10)
    un = torch.zeros(3, 10)
    tr[0, 3:8] = 0.5   # transform 0: gap 0.5 on magnitudes 3-7
    tr[1, :3] = 0.9    # transform 1: gap only outside 3-7 -> 0
    un[2] = 0.2        # transform 2: negative gap
    gap = invariance_gap(tr, un)
    assert gap.tolist() == pytest.approx([0.5, 0.0, -0.2])
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]])
    assert alignment(scores, gap, k=1).tolist() == [1.0, 0.0]
    assert alignment(scores, gap, k=2).tolist() == [0.5, 0.0]
    assert chance_alignment(gap) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="equal shape"):
        invariance_gap(tr, un[:2])
