"""The result of :func:`invlab.metrics.measure`: per-sample values and their statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from invlab.metrics.registry import ALIASES, no_member_keys, summary_statistic

__all__ = ["NO_MEMBER", "Measurement"]

NO_MEMBER = set(no_member_keys())
"""Per-sample-only metrics (``[N, 1]``, no transform member): ``sensitivity``,
``clean_accuracy`` (from the registry's declarations)."""


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
        settings: the options used (for the record; ``n_si`` is the cap on the images
            SI / sensitivity were computed on).
        kind: ``group``, ``family`` or ``fixed``.
        indices: metric → ``[n_m]`` indices of the images its rows belong to, for the
            metrics computed on a subset (SI and sensitivity beyond ``n_si`` images);
            absent metrics have one row per image.
    """

    per_sample: dict[str, torch.Tensor]
    group: str
    elements: list[Any]
    n: int
    settings: dict[str, Any] = field(default_factory=dict)
    kind: str = "group"
    indices: dict[str, torch.Tensor] = field(default_factory=dict)

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
        """metric → its summary statistic over samples and members: the **median** for
        ``representation_invariance`` (its distances) and ``equivariance_alignment`` (as
        Bouchacourt et al. report them), the **mean** for every other metric.
        :attr:`statistics` says which; :meth:`quartiles` and :attr:`means` give the rest."""
        return {m: (self.quartiles(m)[1] if self.statistic(m) == "median"
                    else float(v.double().mean())) for m, v in self.per_sample.items()}

    @property
    def means(self) -> dict[str, float]:
        """metric → mean over samples and members (whatever its summary statistic)."""
        return {m: float(v.double().mean()) for m, v in self.per_sample.items()}

    @property
    def statistics(self) -> dict[str, str]:
        """metric → the statistic :attr:`summary` reports (``mean`` or ``median``)."""
        return {m: self.statistic(m) for m in self.per_sample}

    @staticmethod
    def statistic(metric: str) -> str:
        """``mean`` or ``median``: the summary statistic declared in the registry."""
        return summary_statistic(metric)

    def quartiles(self, metric: str) -> tuple[float, float, float]:
        """``(q1, median, q3)`` over all samples and members (``numpy.quantile``, linear
        interpolation: the median of an even count is the mean of the middle two)."""
        v = self._get(metric).detach().cpu().double().numpy().reshape(-1)
        if v.size == 0:
            return (float("nan"),) * 3  # type: ignore[return-value]
        q = np.quantile(v, [0.25, 0.5, 0.75])
        return (float(q[0]), float(q[1]), float(q[2]))

    def by_member(self, metric: str, statistic: str | None = None) -> dict[Any, float]:
        """member (element or magnitude) → the metric's summary statistic over samples
        (``statistic``: ``mean`` or ``median``; default :meth:`statistic`, the median for
        representation invariance, as B21's per-magnitude profiles)."""
        v = self._get(metric).double()
        if v.shape[1] != len(self.elements):
            raise KeyError(f"{metric!r} has no per-member values (shape {tuple(v.shape)})")
        stat = statistic or self.statistic(metric)
        if stat not in ("mean", "median"):
            raise ValueError(f"statistic must be mean or median, found {statistic!r}")
        if stat == "median":
            col = np.quantile(v.cpu().numpy(), 0.5, axis=0).tolist() if v.shape[0] else \
                [float("nan")] * v.shape[1]
        else:
            col = v.mean(0).tolist()
        return {e: float(c) for e, c in zip(self.elements, col)}

    def summary_by_member(self) -> dict[str, dict[Any, float]]:
        """metric → {member → its summary statistic (:meth:`by_member`)}, for every metric
        measured per member."""
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
        import pandas as pd  # lazy: ~0.3 s to import; `import invlab` does not need pandas

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
            rows = (self.indices[m].cpu().numpy() if m in self.indices else np.arange(n))
            parts.append(pd.DataFrame({
                "metric": m, "sample": np.repeat(rows, k), col: el,
                "value": v.detach().cpu().double().numpy().reshape(-1),
            }))
        return pd.concat(parts, ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"metrics": {name: {"mean", "std", "ci95": [lo, hi], "median",
        "q1", "q3", "statistic", "n"}}, "n", "group", "kind", "elements"}`` plus
        ``"by_member": {name: [summary statistic per member]}`` for a family. ``statistic``
        names the
        metric's summary statistic (``median`` for representation invariance), ``n`` the
        images it was computed on (``n_si`` for SI / sensitivity when capped)."""
        metrics = {}
        means = self.means
        for m in self.per_sample:
            lo, hi = self.ci(m)
            q1, med, q3 = self.quartiles(m)
            metrics[m] = {"mean": _num(means[m]), "std": _num(self.std(m)),
                          "ci95": [_num(lo), _num(hi)], "median": _num(med), "q1": _num(q1),
                          "q3": _num(q3), "statistic": self.statistic(m),
                          "n": int(self.per_sample[m].shape[0])}
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
    from scipy import stats  # lazy: ~0.8 s to import; `import invlab` does not need scipy

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), found {level}")
    n = v.numel()
    if n < 2:
        return (float("nan"), float("nan"))
    mean = float(v.mean())
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(v.std()) / math.sqrt(n)
    return (mean - half, mean + half)
