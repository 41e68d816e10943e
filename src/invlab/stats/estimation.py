"""Label-free use of a measure (D22): accuracy estimation and model selection.

Leave-one-shift-out estimation: for each held-out test set ``s``, fit the least-squares line
``acc ≈ a·score + b`` on the (model, test set) points of every *other* test set (the ID set
and the remaining shifts), predict every model's accuracy on ``s`` from its score there and
report ``MAE_s = mean_m |â_{m,s} − a_{m,s}|``. With ``probit=True`` the line is fitted to
``probit(acc)`` and predictions are mapped back with ``Φ``.

Model selection: on an unlabelled test set pick ``argmax_m score_m``;
``regret = max_m acc_m − acc_{chosen}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import ndtr

from invlab.stats.correlation import probit as _probit


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``y ≈ slope·x + intercept``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc = x - x.mean()
    sxx = float((xc ** 2).sum())
    slope = float((xc * (y - y.mean())).sum() / sxx) if sxx > 0 else 0.0
    return slope, float(y.mean() - slope * x.mean())


def leave_one_shift_out(scores: Mapping[str, Sequence[float]], acc: Mapping[str, Sequence[float]],
                        held_out: Sequence[str] | None = None, probit: bool = False
                        ) -> dict[str, Any]:
    """Leave-one-shift-out accuracy estimation from a label-free score.

    Args:
        scores, acc: ``{test_set: [n_models]}`` with the same models in the same order.
        held_out: test sets to predict (default: every test set except the first).
        probit: fit on the probit scale.

    Returns:
        ``{"per_set": {s: {"mae", "slope", "intercept"}}, "mae": mean over held-out sets}``.
    """
    names = list(scores)
    if set(names) != set(acc):
        raise ValueError(f"scores and acc must cover the same test sets: {sorted(scores)} vs "
                         f"{sorted(acc)}")
    if len(names) < 2:
        raise ValueError(f"leave-one-shift-out needs >= 2 test sets, found {len(names)}")
    held = list(held_out) if held_out is not None else names[1:]
    per: dict[str, dict[str, float]] = {}
    for s in held:
        train = [t for t in names if t != s]
        x = np.concatenate([np.asarray(scores[t], float) for t in train])
        y = np.concatenate([np.asarray(acc[t], float) for t in train])
        slope, icpt = fit_line(x, _probit(y) if probit else y)
        pred = slope * np.asarray(scores[s], float) + icpt
        pred = ndtr(pred) if probit else np.clip(pred, 0.0, 1.0)
        per[s] = {"mae": float(np.mean(np.abs(pred - np.asarray(acc[s], float)))),
                  "slope": slope, "intercept": icpt}
    return {"per_set": per, "mae": float(np.mean([v["mae"] for v in per.values()]))}


def selection_regret(score: Sequence[float], acc: Sequence[float]) -> dict[str, Any]:
    """Pick the model with the highest score; ``regret = best accuracy − its accuracy``."""
    s, a = np.asarray(score, float), np.asarray(acc, float)
    if s.shape != a.shape or s.size == 0:
        raise ValueError(f"score and acc must be equal-length and non-empty, found {s.shape}, "
                         f"{a.shape}")
    chosen = int(np.nanargmax(s))
    return {"chosen": chosen, "chosen_accuracy": float(a[chosen]), "best_accuracy": float(a.max()),
            "regret": float(a.max() - a[chosen])}
