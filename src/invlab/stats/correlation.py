"""Correlation statistics for invariance ↔ accuracy (D22), with seeded bootstrap CIs.

For paired samples ``x, y`` (one point per model, or per test set):

- Pearson ``r = Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²)``;
- Spearman ``ρ`` = Pearson of average-tie ranks;
- Kendall ``τ_b = (C − D) / sqrt((n0 − n1)(n0 − n2))`` (``n0 = n(n−1)/2``, ``n1``, ``n2``
  tied pairs in x, y);
- least squares ``y ≈ slope·x + intercept`` with ``R² = r²``;
- percentile bootstrap 95 % CIs: resample the points with replacement ``n_boot`` times
  (seeded), recompute every statistic on ``[B, n]`` at once.

Optional probit scaling of accuracy: ``Φ⁻¹(clip(acc, 0.01, 0.99))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtri

STATISTICS = ("pearson", "spearman", "kendall", "slope", "intercept", "r2")


def probit(p: np.ndarray, clip: tuple[float, float] = (0.01, 0.99)) -> np.ndarray:
    """``Φ⁻¹(clip(p))``: the probit axis scaling D22 uses for accuracies."""
    return ndtri(np.clip(np.asarray(p, dtype=float), *clip))


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average-tie ranks (1-based) along the last axis. ``[..., n] -> [..., n]``."""
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, axis=-1, kind="mergesort")
    s = np.take_along_axis(a, order, -1)
    n = a.shape[-1]
    pos = np.broadcast_to(np.arange(1, n + 1, dtype=float), a.shape)
    # tie groups: start where the sorted value changes; each gets its mean position
    new = np.concatenate([np.ones(a.shape[:-1] + (1,), bool), s[..., 1:] != s[..., :-1]], -1)
    gid = np.cumsum(new, -1) - 1
    flat = (gid + np.arange(int(np.prod(a.shape[:-1]))).reshape(a.shape[:-1] + (1,)) * n).ravel()
    sums = np.bincount(flat, weights=pos.ravel(), minlength=flat.max() + 1)
    counts = np.bincount(flat, minlength=flat.max() + 1)
    ranks_sorted = (sums / np.maximum(counts, 1))[flat].reshape(a.shape)
    out = np.empty_like(ranks_sorted)
    np.put_along_axis(out, order, ranks_sorted, -1)
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc ** 2).sum(-1) * (yc ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1), np.nan)


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """τ_b over the last axis; pairwise signs ``[..., n, n]`` (fine for n ≲ 1000)."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    iu = np.triu_indices(x.shape[-1], 1)
    sx, sy = sx[..., iu[0], iu[1]], sy[..., iu[0], iu[1]]
    num = (sx * sy).sum(-1)
    den = np.sqrt((sx != 0).sum(-1) * (sy != 0).sum(-1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xc = x - x.mean(-1, keepdims=True)
    sxx = (xc ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > 0, (xc * (y - y.mean(-1, keepdims=True))).sum(-1)
                         / np.where(sxx > 0, sxx, 1), np.nan)
    return slope, y.mean(-1) - slope * x.mean(-1)


def statistics(x: np.ndarray, y: np.ndarray, kendall: bool = True) -> dict[str, np.ndarray]:
    """Every statistic of :data:`STATISTICS` over the last axis of ``x, y [..., n]``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    r = _pearson(x, y)
    slope, intercept = _line(x, y)
    out = {"pearson": r, "spearman": _pearson(rankdata(x), rankdata(y)),
           "slope": slope, "intercept": intercept, "r2": r ** 2}
    out["kendall"] = _kendall(x, y) if kendall else np.full(r.shape, np.nan)
    return out


def correlate(x: Any, y: Any, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
              probit_y: bool = False) -> dict[str, Any]:
    """Statistics of ``y`` (accuracy) against ``x`` (a measure) with bootstrap CIs.

    Args:
        x, y: ``[n]`` paired values (NaN pairs are dropped).
        n_boot: bootstrap resamples (0: no CIs).
        seed: bootstrap seed.
        level: CI coverage.
        probit_y: fit against ``probit(y)`` instead of ``y``.

    Returns:
        ``{"n": n, "<stat>": value, "<stat>_ci": [lo, hi], ...}`` for every statistic.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must pair up: shapes {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if probit_y:
        y = probit(y)
    n = len(x)
    if n < 3:
        raise ValueError(f"need at least 3 paired points for correlation statistics, found {n}")
    point = statistics(x, y)
    out: dict[str, Any] = {"n": n, **{k: float(v) for k, v in point.items()}}
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        boots = [statistics(x[idx[i:i + 250]], y[idx[i:i + 250]], kendall=n <= 400)
                 for i in range(0, n_boot, 250)]
        a = (1 - level) / 2
        for k in STATISTICS:
            vals = np.concatenate([b[k] for b in boots])
            vals = vals[np.isfinite(vals)]
            out[f"{k}_ci"] = ([float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))]
                              if len(vals) else [float("nan"), float("nan")])
    return out
