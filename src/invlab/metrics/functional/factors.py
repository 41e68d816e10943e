"""Factors of variation (Bouchacourt et al. 2021 §3): which transformations bring same-class
images closer in a model's embedding, per class, and how that aligns with learned invariance.

For same-class pairs ``(x1, x2)`` and a transformation ``T`` at one magnitude:
``s = cos(φ(x1), φ(x2))``, ``s' = cos(φ(x1), φ(T x2))``, ``Δ = s' − s``. Per class and
``T``: ``proportion_boosted = #(Δ > tol) / #pairs` (tol = 1e-5, float noise)`, the mean and std of ``Δ`` and the mean of
``Δ / s``. A family (``rotate``, ...) is scored at its best magnitude (the one with the
largest ``proportion_boosted``; ties go to the smaller magnitude index). Classes rank the
families by that score; the top-k are the class's factors of variation.

Everything here is pure tensor math on embeddings; :mod:`invlab.factors` computes the
embeddings of a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["B21_FAMILIES", "alignment", "chance_alignment", "class_specificity", "factor_deltas",
           "factor_stats", "invariance_gap", "rank_factors", "same_class_pairs", "spearman",
           "top_k_iou"]

B21_FAMILIES: tuple[str, ...] = (
    "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "zoom_in", "zoom_out",
    "posterize", "solarize", "brightness_up", "brightness_down", "contrast_up", "contrast_down")
"""B21's 13 transformations (invlab family names), geometric first (also
:data:`invlab.factors.B21_FAMILIES`; the default of the registry's
:class:`~invlab.metrics.registry.FactorsOfVariation`)."""


def same_class_pairs(labels: torch.Tensor, n_pairs: int, generator: torch.Generator | None = None
                     ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Seeded same-class pairs ``(i1, i2)``, ``i1 ≠ i2``, up to ``n_pairs`` per class.

    Pair ``j`` of a class pairs its ``j``-th image of a random order with the next one
    (cyclically), so every image appears at most twice and no image is paired with itself.

    Args:
        labels: ``[N]`` class indices.
        n_pairs: pairs per class (fewer when the class has fewer images).
        generator: seeds the order.

    Returns:
        ``{class: (i1 [P], i2 [P])}`` for every class with at least 2 images.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, found {n_pairs}")
    labels = torch.as_tensor(labels).long()
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < 2:
            continue
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        p = min(n_pairs, idx.numel())
        i1 = idx[:p]
        i2 = idx[(torch.arange(p) + 1) % idx.numel()]
        out[int(c)] = (i1, i2)
    return out


def factor_deltas(z1: torch.Tensor, z2: torch.Tensor, z2t: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(s, Δ)``: :math:`s = \cos(z_1, z_2)` ``[P]`` and
    :math:`Δ = \cos(z_1, z^T_2) - s` ``[..., P]``.

    Args:
        z1: ``φ(x1)``, ``[P, D]``.
        z2: ``φ(x2)``, ``[P, D]``.
        z2t: ``φ(T x2)`` for one or more transforms/magnitudes, ``[..., P, D]``.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z2t.shape[-2:] != z1.shape:
        raise ValueError(f"factor_deltas: expected z1, z2 [P, D] and z2t [..., P, D]; found "
                         f"{tuple(z1.shape)}, {tuple(z2.shape)}, {tuple(z2t.shape)}")
    s = F.cosine_similarity(z1, z2, dim=-1, eps=1e-12)
    s_t = F.cosine_similarity(z1.expand_as(z2t), z2t, dim=-1, eps=1e-12)
    return s, s_t - s


def factor_stats(s: torch.Tensor, delta: torch.Tensor, eps: float = 1e-12, tol: float = 1e-5
                 ) -> dict[str, torch.Tensor]:
    r"""Per-transform statistics of ``Δ`` over the pairs (last dim).

    A pair counts as boosted when ``Δ > tol``: float32 cosines of (nearly) unchanged
    embeddings differ by ~1e-7, which must not count as a boost.

    Returns ``{"proportion_boosted": #(Δ>tol)/P, "mean_delta", "std_delta" (ddof=1, 0 for one
    pair), "mean_relative": mean(Δ / s)}``, each ``delta.shape[:-1]``; pairs with
    ``|s| < eps`` are left out of ``mean_relative``.
    """
    p = delta.shape[-1]
    if p < 1:
        raise ValueError("factor_stats needs at least one pair")
    d, sd = delta.double(), s.double()
    ok = sd.abs() >= eps
    rel = torch.where(ok, d / torch.where(ok, sd, torch.ones_like(sd)), torch.zeros_like(d))
    n_ok = ok.sum().clamp_min(1)
    return {"proportion_boosted": (d > tol).double().mean(-1),
            "mean_delta": d.mean(-1),
            "std_delta": d.std(-1) if p > 1 else torch.zeros(d.shape[:-1], dtype=d.dtype),
            "mean_relative": rel.sum(-1) / n_ok}


def rank_factors(scores: torch.Tensor) -> torch.Tensor:
    """``[..., T]`` scores → ``[..., T]`` ranks (0 = highest score; ties by index)."""
    order = torch.sort(-scores.double(), dim=-1, stable=True).indices
    return torch.argsort(order, dim=-1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation of two score vectors ``[T]`` (average ranks for ties)."""
    from scipy import stats  # lazy: scipy.stats takes ~0.8 s to import; the registry imports this module

    r = stats.spearmanr(a.double().numpy(), b.double().numpy()).statistic
    return float(r) if r == r else float("nan")


def top_k_iou(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """IoU of the top-``k`` index sets of two score vectors ``[T]`` (ties by index)."""
    ta = set(rank_factors(a).argsort()[:k].tolist())
    tb = set(rank_factors(b).argsort()[:k].tolist())
    return len(ta & tb) / len(ta | tb)


def class_specificity(scores: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
    """Class × class Spearman correlation and top-``k`` IoU of factor scores ``[K, T]``.

    Returns ``{"spearman": [K, K], "iou": [K, K]}`` (diagonals 1); a low off-diagonal
    mean means class-specific factors of variation.
    """
    n = scores.shape[0]
    rho = torch.ones(n, n, dtype=torch.float64)
    iou = torch.ones(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            rho[i, j] = rho[j, i] = spearman(scores[i], scores[j])
            iou[i, j] = iou[j, i] = top_k_iou(scores[i], scores[j], k)
    return {"spearman": rho, "iou": iou}


def invariance_gap(trained: torch.Tensor, untrained: torch.Tensor,
                   magnitudes: Sequence[int] = (3, 4, 5, 6, 7)) -> torch.Tensor:
    """Median invariance(trained) − median invariance(untrained), averaged over magnitude
    indices ``magnitudes``: ``[T, M]`` medians each → ``[T]``."""
    if trained.shape != untrained.shape or trained.dim() != 2:
        raise ValueError(f"invariance_gap: expected two [T, M] median tables of equal shape; "
                         f"found {tuple(trained.shape)} and {tuple(untrained.shape)}")
    idx = torch.as_tensor(list(magnitudes))
    if int(idx.max()) >= trained.shape[1]:
        raise ValueError(f"magnitude index {int(idx.max())} out of range for "
                         f"{trained.shape[1]} magnitudes")
    return (trained.double()[:, idx] - untrained.double()[:, idx]).mean(1)


def alignment(scores: torch.Tensor, gap: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Share of each class's top-``k`` factors whose invariance gap is positive.

    Args:
        scores: ``[K, T]`` factor scores (``proportion_boosted``) per class.
        gap: ``[T]`` invariance gap per transform.

    Returns:
        ``[K]`` in [0, 1].
    """
    if scores.shape[-1] != gap.shape[-1]:
        raise ValueError(f"alignment: scores have {scores.shape[-1]} transforms, gap has "
                         f"{gap.shape[-1]}")
    k = min(k, scores.shape[-1])
    top = rank_factors(scores).argsort(-1)[:, :k]  # [K, k] transform indices
    return (gap[top] > 0).double().mean(-1)


def chance_alignment(gap: torch.Tensor) -> float:
    """Alignment expected from a random top-k set: the share of transforms with gap > 0."""
    return float((gap > 0).double().mean()) if gap.numel() else math.nan
