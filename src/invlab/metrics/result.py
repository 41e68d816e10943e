"""The result of :func:`invlab.metrics.measure`: per-sample values and their statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from invlab.metrics.registry import ALIASES

__all__ = ["NO_MEMBER", "Measurement"]

NO_MEMBER = {"sensitivity", "clean_accuracy"}
"""Per-sample-only metrics (``[N, 1]``, no transform member)."""


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass
class Measurement:
    """Per-sample results of :func:`invlab.metrics.measure`.

    Attributes:
        per_sample: metric → ``[N, k]`` values over the ``k`` members measured (column ``j``
            is ``members[j]``: a group element, or a magnitude of a family).
            ``sensitivity`` has no member: ``[N, 1]``. ``accuracy`` is the accuracy of the
            transformed copies ``T·x``; the accuracy on the untransformed images is added as
            ``clean_accuracy`` ``[N, 1]`` whenever ``accuracy`` is requested.
            Representation invariance adds its two distances
            ``representation_invariance_d_same`` (``d(z, z_T)``) and ``..._d_other``
            (``d(z, z_T∘π)``); with ``layers=[...]`` every key gets the suffix ``@<layer>``.
        group: the transform's name (``r4``, ``rotate``, ``rotate:30`` ...).
        elements: the ``k`` members (columns); same list as :attr:`members`.
        n: number of samples.
        settings: the options used (for the record).
        kind: ``group``, ``family`` or ``fixed``.
    """

    per_sample: dict[str, torch.Tensor]
    group: str
    elements: list[Any]
    n: int
    settings: dict[str, Any] = field(default_factory=dict)
    kind: str = "group"

    @property
    def metrics(self) -> list[str]:
        return list(self.per_sample)

    @property
    def transform(self) -> str:
        return self.group

    @property
    def members(self) -> list[Any]:
        return list(self.elements)

    @property
    def magnitudes(self) -> list[Any] | None:
        """The magnitudes measured for a family (or fixed transform); None for a group."""
        return None if self.kind == "group" else list(self.elements)

    def _get(self, metric: str) -> torch.Tensor:
        key = ALIASES.get(metric.strip().lower(), metric.strip())
        if key not in self.per_sample:
            raise KeyError(f"{metric!r} was not measured; available: {', '.join(self.per_sample)}")
        return self.per_sample[key]

    def sample_means(self, metric: str) -> torch.Tensor:
        """``[N]``: each sample's value averaged over the members."""
        return self._get(metric).double().mean(1)

    @property
    def summary(self) -> dict[str, float]:
        """metric → mean over samples and members."""
        return {m: float(v.double().mean()) for m, v in self.per_sample.items()}

    def by_member(self, metric: str) -> dict[Any, float]:
        """member (element or magnitude) → mean over samples of ``metric``."""
        v = self._get(metric).double()
        if v.shape[1] != len(self.elements):
            raise KeyError(f"{metric!r} has no per-member values (shape {tuple(v.shape)})")
        return {e: float(c) for e, c in zip(self.elements, v.mean(0).tolist())}

    def summary_by_member(self) -> dict[str, dict[Any, float]]:
        """metric → {member → mean}, for every metric measured per member."""
        return {m: self.by_member(m) for m, v in self.per_sample.items()
                if m not in NO_MEMBER and v.shape[1] == len(self.elements)}

    summary_by_magnitude = summary_by_member

    def std(self, metric: str) -> float:
        """Sample standard deviation (ddof=1) of the per-sample means."""
        v = self.sample_means(metric)
        return float(v.std()) if v.numel() > 1 else float("nan")

    def ci(self, metric: str, level: float = 0.95) -> tuple[float, float]:
        r"""Student-t interval for the mean of the per-sample means ``s_i``.

        .. math:: \bar s \pm t_{(1+\ell)/2,\,N-1}\, \mathrm{sd}(s) / \sqrt{N}
        """
        return _t_interval(self.sample_means(metric), level)

    def to_frame(self) -> Any:
        """Long-format ``pandas.DataFrame``: ``metric, sample, element, value`` for a group,
        ``metric, sample, magnitude, value`` for a family / fixed transform (``<NA>`` /
        NaN for per-sample-only metrics such as ``sensitivity``)."""
        import numpy as np
        import pandas as pd

        col = "element" if self.kind == "group" else "magnitude"
        parts = []
        for m, v in self.per_sample.items():
            n, k = v.shape
            if self.kind == "group":
                el = (pd.array([pd.NA] * (n * k), dtype="Int64") if m in NO_MEMBER else
                      pd.array(np.tile(np.asarray(self.elements, dtype=np.int64), n),
                               dtype="Int64"))
            else:
                el = (np.full(n * k, np.nan) if m in NO_MEMBER else
                      np.tile(np.asarray(self.elements, dtype=np.float64), n))
            parts.append(pd.DataFrame({
                "metric": m, "sample": np.repeat(np.arange(n), k), col: el,
                "value": v.detach().cpu().double().numpy().reshape(-1),
            }))
        return pd.concat(parts, ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"metrics": {name: {"mean", "std", "ci95": [lo, hi]}}, "n", "group",
        "kind", "elements"}`` plus ``"by_member": {name: [mean per member]}`` for a family."""
        metrics = {}
        for m in self.per_sample:
            lo, hi = self.ci(m)
            metrics[m] = {"mean": _num(self.summary[m]), "std": _num(self.std(m)),
                          "ci95": [_num(lo), _num(hi)]}
        d: dict[str, Any] = {"metrics": metrics, "n": self.n, "group": self.group,
                             "kind": self.kind, "elements": list(self.elements)}
        if self.kind != "group":
            d["by_member"] = {m: [_num(x) for x in v.values()]
                              for m, v in self.summary_by_member().items()}
        return d

    def __repr__(self) -> str:
        s = ", ".join(f"{k}={v:.4g}" for k, v in self.summary.items())
        return f"Measurement(n={self.n}, group={self.group!r}, elements={self.elements}, {s})"


def _t_interval(v: torch.Tensor, level: float) -> tuple[float, float]:
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), found {level}")
    n = v.numel()
    if n < 2:
        return (float("nan"), float("nan"))
    mean = float(v.mean())
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(v.std()) / math.sqrt(n)
    return (mean - half, mean + half)
