"""Tuning IR's weight ν: the smallest ν on a half-decade grid whose validation SI ≥ target.

Search (documented, deterministic): the grid is ``ν_k = 10^(k/2)`` (…, 0.1, 0.316, 1, 3.16,
10, …) clipped to ``[nu_min, nu_max]``. Start at ``nu_start``; if the trained model's
validation SI reaches ``target``, step down the grid until it fails (or ``nu_min``); otherwise
step up until it passes (or ``nu_max``). The answer is the smallest passing ν seen; if none
passes, the ν with the highest SI is returned with ``reached=False`` and every trial, so
reports can show SI(ν) and accuracy(ν). Each trial trains with the given config (seed and
epochs as passed) and measures SI on the first ``n_val_si`` validation images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from torch import nn

from invlab.data import TransformingData
from invlab.train.loop import TrainConfig, evaluate_accuracy, train

Fit = Callable[[TrainConfig], nn.Module]


@dataclass
class NuSearch:
    nu: float
    si: float
    accuracy: float
    reached: bool
    target: float
    trials: list[dict[str, float]] = field(default_factory=list)
    best: nn.Module | None = None


def validation_si(model: nn.Module, data: TransformingData, group: str, n: int) -> float:
    """Mean saliency invariance similarity on the first ``n`` validation images."""
    from invlab.metrics import measure

    val = data.val.subset(n)
    m = measure(model, val.images, labels=val.labels, group=group,
                metrics=["saliency_similarity"])
    return float(m.summary["saliency_similarity"])


def tune_nu(cfg: TrainConfig, data: TransformingData, target: float = 0.95,
            nu_start: float = 1.0, nu_min: float = 1e-2, nu_max: float = 1e3,
            n_val_si: int = 500, max_trials: int = 8, progress: bool = True,
            fit: Fit | None = None) -> NuSearch:
    """Find the smallest grid ν with validation SI ≥ ``target`` (see module docstring).

    ``fit(cfg) -> model`` trains (or loads a cached) model for one trial; default: ``train``.
    """
    if fit is None:
        def fit(c: TrainConfig) -> nn.Module:
            return train(c, data, progress=progress).model

    if cfg.method != "ir":
        raise ValueError(f"tune_nu needs method='ir', found {cfg.method!r}")
    k = round(2 * math.log10(nu_start))
    k_min, k_max = math.ceil(2 * math.log10(nu_min)), math.floor(2 * math.log10(nu_max))
    k = min(max(k, k_min), k_max)
    seen: dict[int, tuple[float, float, nn.Module]] = {}
    direction = 0
    while len(seen) < max_trials and k not in seen:
        nu = 10 ** (k / 2)
        model = fit(replace(cfg, nu=nu))
        si = validation_si(model, data, cfg.group, n_val_si)
        seen[k] = (si, evaluate_accuracy(model, data.val), model)
        passed = si >= target
        if direction == 0:
            direction = -1 if passed else 1
        if direction == -1 and not passed:
            break
        if direction == 1 and passed:
            break
        k += direction
        if not k_min <= k <= k_max:
            break
    trials = [{"nu": 10 ** (kk / 2), "si": v[0], "accuracy": v[1]} for kk, v in sorted(seen.items())]
    passing = [kk for kk, v in seen.items() if v[0] >= target]
    if passing:
        kb, reached = min(passing), True
    else:
        kb, reached = max(seen, key=lambda kk: seen[kk][0]), False
    si, acc, res = seen[kb]
    return NuSearch(10 ** (kb / 2), si, acc, reached, target, trials, res)
