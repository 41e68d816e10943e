"""Tuning IR's weight ν: the smallest ν whose validation SI ≥ target, to within ×1.3.

Search (documented, deterministic; :mod:`invlab.train.nu_search`): bracket on the
half-decade grid ``ν_k = 10^(k/2)`` (…, 0.316, 1, 3.16, 10, …) inside ``[nu_min, nu_max]``
starting at ``nu_start``, then refine in log-space until the bracket is within
``tolerance``. The answer is the smallest passing ν tried; if none passes, the ν with the
highest SI is returned with ``reached=False``, with every trial, so reports can show SI(ν)
and accuracy(ν). Each trial trains with the given config (seed and epochs as passed) and
measures SI on the first ``n_val_si`` validation images. The studies run the same search
with one cell per trial (:mod:`invlab.studies.tuning`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from torch import nn

from invlab.data import TransformingData
from invlab.metrics import measure
from invlab.train.loop import TrainConfig, evaluate_accuracy, train
from invlab.train.nu_search import search_nu

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

    val = data.val.subset(n)
    m = measure(model, val.images, labels=val.labels, transform=group,
                metrics=["saliency_similarity"], options={"n_si": None})  # n images chosen above
    return float(m.summary["saliency_similarity"])


def tune_nu(cfg: TrainConfig, data: TransformingData, target: float = 0.95,
            nu_start: float = 1.0, nu_min: float = 1e-2, nu_max: float = 1e3,
            n_val_si: int = 500, max_trials: int = 8, progress: bool = True,
            fit: Fit | None = None, tolerance: float = 1.3, parallel: int = 1) -> NuSearch:
    """Find the smallest ν with validation SI ≥ ``target`` (see module docstring): the
    in-process form of the studies' search (:func:`invlab.train.nu_search.search_nu`).

    ``fit(cfg) -> model`` trains (or loads a cached) model for one trial; default: ``train``.
    """

    if fit is None:
        def fit(c: TrainConfig) -> nn.Module:
            return train(c, data, progress=progress).model

    if cfg.method != "ir":
        raise ValueError(f"tune_nu needs method='ir', found {cfg.method!r}")
    models: dict[float, nn.Module] = {}

    def evaluate(nus: Sequence[float]) -> list[tuple[float, float]]:
        out = []
        for nu in nus:
            models[nu] = fit(replace(cfg, nu=nu))
            out.append((validation_si(models[nu], data, cfg.group, n_val_si),
                        evaluate_accuracy(models[nu], data.val)))
        return out

    s = search_nu(evaluate, target=target, nu_start=min(max(nu_start, nu_min), nu_max),
                  nu_min=nu_min, nu_max=nu_max, tolerance=tolerance, parallel=parallel,
                  max_trials=max_trials)
    trials = [{"nu": t.nu, "si": t.si, "accuracy": t.accuracy, "stage": t.stage}
              for t in s.trials]
    return NuSearch(s.nu, s.si, s.accuracy, s.reached, target, trials, models.get(s.nu))
