"""The metric registry: every metric declares what it needs, its formula and its reduction.

A :class:`MetricSpec` names the inputs a metric needs (``needs``, a subset of
:data:`NEEDS`), its per-sample function from :mod:`invlab.metrics.functional` (the single
copy of every formula), an optional ``stacked`` fast path that evaluates the same formula
from shared per-orbit intermediates (one ``log_softmax`` / ``softmax`` / ``argmax`` of the
stacked logits for all metrics; tested equal to ``fn``), its reduction and description.
:func:`invlab.metrics.measure` plans its single pass over the data from these
declarations, and the training regularizers look up the same entries (:func:`regularizer`).
Each metric also declares whether higher is better (``higher_is_better``; None for a
measure with no better direction), its range (``value_range``) and the statistic
:attr:`invlab.metrics.Measurement.summary` reports for it (``summary``: ``mean``, or
``median`` for B21's measures, which their paper and code summarize by percentiles);
``invlab metrics list`` prints them (:func:`metric_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as tF

from invlab.metrics.errors import MeasureError
from invlab.metrics.functional import output as out_fn
from invlab.metrics.functional.representation import (
    equivariance_alignment,
    representation_invariance,
)
from invlab.metrics.functional.saliency import saliency_similarity
from invlab.metrics.functional.sensitivity import jacobian_spectral_norm

__all__ = [
    "ALIASES",
    "DEFAULT_METRICS",
    "METRICS",
    "NEEDS",
    "REGISTRY",
    "MetricSpec",
    "StackedLogits",
    "metric_rows",
    "regularizer",
    "resolve_metrics",
    "summary_statistic",
]

NEEDS = ("logit_pairs", "labels", "features", "gradients", "invertible", "jacobian")
"""What a metric may need: ``logit_pairs`` (f(x), f(T x)), ``labels``, ``features`` (a
layer's activations on x and T x), ``gradients`` (integrated gradients), ``invertible`` (a
transform with an inverse and validity masks), ``jacobian`` (input-logit Jacobians)."""


class StackedLogits:
    """Stacked orbit logits ``[k+1, n, K]`` (row 0 is ``f(x)``) with cached intermediates.

    ``log_softmax``, ``softmax`` and ``argmax`` are computed once over all ``(k+1)·n`` rows
    and shared by every metric of the pass.
    """

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self._cache: dict[str, torch.Tensor] = {}

    def get(self, key: str) -> torch.Tensor:
        if key not in self._cache:
            z = self.logits
            self._cache[key] = {"log_softmax": lambda: tF.log_softmax(z, dim=-1),
                                "softmax": lambda: tF.softmax(z, dim=-1),
                                "argmax": lambda: z.argmax(-1)}[key]()
        return self._cache[key]


def _kl_stacked(s: StackedLogits) -> torch.Tensor:
    logp = s.get("log_softmax")
    return (logp[0].exp() * (logp[0] - logp[1:])).sum(-1)


def _ei_stacked(s: StackedLogits) -> torch.Tensor:
    conf, pred = s.get("softmax").max(-1)
    ei = torch.sqrt(conf[0] * conf[1:])
    return torch.where(pred[0] == pred[1:], ei, torch.zeros_like(ei))


def _agreement_stacked(s: StackedLogits) -> torch.Tensor:
    am = s.get("argmax")
    return (am[0] == am[1:]).to(s.logits.dtype)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what it needs, its formula, its reduction.

    Attributes:
        name: canonical name (the ``per_sample`` key).
        needs: subset of :data:`NEEDS`.
        fn: the per-sample function of :mod:`invlab.metrics.functional`.
        description: one line (shown by the CLI).
        stacked: optional fast path ``StackedLogits -> [k, n]``, equal to
            ``fn(logits[0], logits[1:])``.
        per_member: one value per transform member (``[N, k]``); else ``[N, 1]``.
        reduction: how per-sample values are pooled for the CIs (``mean``).
        differentiable: usable as a training regularizer.
        higher_is_better: True (more invariant when higher), False (when lower), None (no
            better direction: a descriptive measure).
        value_range: ``(low, high)`` of a per-sample value (``±inf`` when unbounded).
        summary: the statistic ``Measurement.summary`` reports: ``mean`` or ``median``.
    """

    name: str
    needs: frozenset[str]
    fn: Callable[..., torch.Tensor]
    description: str
    stacked: Callable[[StackedLogits], torch.Tensor] | None = None
    per_member: bool = True
    reduction: str = "mean"
    differentiable: bool = False
    higher_is_better: bool | None = None
    value_range: tuple[float, float] = (-math.inf, math.inf)
    summary: str = "mean"


_INF = math.inf


def _pair(name: str, fn: Callable[..., torch.Tensor], desc: str,
          stacked: Callable[[StackedLogits], torch.Tensor] | None = None,
          differentiable: bool = False, higher_is_better: bool | None = False,
          value_range: tuple[float, float] = (0.0, _INF)) -> MetricSpec:
    return MetricSpec(name, frozenset({"logit_pairs"}), fn, desc, stacked=stacked,
                      differentiable=differentiable, higher_is_better=higher_is_better,
                      value_range=value_range)


_SPECS = [
    MetricSpec("accuracy", frozenset({"logit_pairs", "labels"}), out_fn.accuracy,
               "argmax f(T·x) == y on the transformed copies (needs labels)",
               higher_is_better=True, value_range=(0.0, 1.0)),
    _pair("kl", out_fn.kl, "KL(softmax f(x) || softmax f(T·x)) (DI, M23 eq. 1)",
          _kl_stacked, differentiable=True),
    _pair("logit_l2", out_fn.logit_l2, "½‖f(x) − f(T·x)‖² (LI, M23 eq. 2)",
          differentiable=True),
    _pair("logit_l2_normalized", out_fn.logit_l2_normalized,
          "‖f(x) − f(T·x)‖² / ‖f(x)‖² (M23 §4.4)", differentiable=True),
    _pair("logit_l2_normalized_detached", out_fn.logit_l2_normalized_detached,
          "logit_l2_normalized's value with a stop-gradient ‖f(x)‖² (a training variant, "
          "not M23's)", differentiable=True),
    _pair("effective_invariance", out_fn.effective_invariance,
          "sqrt(p̂·p̂_t) if the predictions agree else 0 (EI, D22)", _ei_stacked,
          higher_is_better=True, value_range=(0.0, 1.0)),
    _pair("agreement", out_fn.agreement, "argmax f(x) == argmax f(T·x) (D22)",
          _agreement_stacked, higher_is_better=True, value_range=(0.0, 1.0)),
    _pair("js", out_fn.js, "Jensen–Shannon divergence, natural log", differentiable=True,
          value_range=(0.0, math.log(2))),
    MetricSpec("saliency_similarity", frozenset({"gradients", "invertible"}),
               saliency_similarity,
               "cos(M·m(x), M·T⁻¹m(T·x)) of integrated-gradient saliency maps, M the "
               "validity mask (SI, M23; needs an invertible transform)",
               higher_is_better=True, value_range=(-1.0, 1.0)),
    MetricSpec("sensitivity", frozenset({"jacobian"}), jacobian_spectral_norm,
               "σ_max of the input-logit Jacobian per sample (M23 §4.4; no transform)",
               per_member=False, higher_is_better=False, value_range=(0.0, _INF)),
    MetricSpec("representation_invariance", frozenset({"features"}),
               representation_invariance,
               "1 − d(z, z_T)/d(z, z_T∘π), π a derangement; penultimate features or "
               "layers=[...] (B21)", higher_is_better=True, value_range=(-_INF, 1.0),
               summary="median"),
    MetricSpec("equivariance_alignment", frozenset({"features"}), equivariance_alignment,
               "cos_dist(b_i, b_π(i)) − cos_dist(d_i, d_π(i)), d = z − z_T, b = d with "
               "each feature shuffled over samples (B21's alignment measure of "
               "equivariance); higher: T moves every sample the same way",
               higher_is_better=None, value_range=(-2.0, 2.0), summary="median"),
]

REGISTRY: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
"""Canonical name → :class:`MetricSpec`."""

METRICS: dict[str, str] = {s.name: s.description for s in _SPECS}
"""Metric names accepted by :func:`invlab.metrics.measure` and one-line descriptions."""

ALIASES: dict[str, str] = {
    "li": "logit_l2",
    "di": "kl",
    "si": "saliency_similarity",
    "ei": "effective_invariance",
    "acc": "accuracy",
    "ri": "representation_invariance",
    "align": "equivariance_alignment",
}
"""Case-insensitive short names."""

DEFAULT_METRICS = ("accuracy", "kl", "logit_l2", "effective_invariance")
"""Used when ``metrics`` is None (``accuracy`` only when labels are given)."""


def resolve_metrics(metrics: str | Iterable[str]) -> list[str]:
    """Canonical metric names from names/aliases (case-insensitive; a comma string is split).

    Raises:
        MeasureError: for an unknown name; the message lists the valid names and aliases.
    """
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    names: list[str] = []
    for m in metrics:
        key = str(m).strip().lower()
        if not key:
            continue
        key = ALIASES.get(key, key)
        if key not in REGISTRY:
            raise MeasureError(
                f"unknown metric {m!r}; valid metrics: {', '.join(METRICS)}; aliases: "
                + ", ".join(f"{a.upper()}={c}" for a, c in ALIASES.items())
            )
        if key not in names:
            names.append(key)
    if not names:
        raise MeasureError(f"no metric requested; valid metrics: {', '.join(METRICS)}")
    return names


def regularizer(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The differentiable pair function ``(logits, logits_t) -> [N]`` registered as ``name``
    (``logit_l2``, ``kl``, ``logit_l2_normalized``, ``logit_l2_normalized_detached``,
    ``js``; aliases accepted).

    Raises:
        ValueError: for a metric that is unknown or not differentiable.
    """
    key = ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    spec = REGISTRY.get(key)
    if spec is None or not spec.differentiable:
        valid = [s.name for s in _SPECS if s.differentiable]
        raise ValueError(f"unknown regularizer {name!r}; valid: {', '.join(valid)}")
    return spec.fn


def summary_statistic(key: str) -> str:
    """``mean`` or ``median``: the summary statistic of a ``per_sample`` key (derived keys
    such as ``representation_invariance_d_same@layer`` follow their metric;
    ``clean_accuracy`` and unknown keys: ``mean``)."""
    base = str(key).split("@", 1)[0]
    for suffix in ("_d_same", "_d_other"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    spec = REGISTRY.get(ALIASES.get(base.lower(), base))
    return spec.summary if spec is not None else "mean"


def _fmt_bound(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def metric_rows() -> list[dict[str, str]]:
    """One row per registered metric: name, aliases, higher is better, range, summary
    statistic, needs, per member, differentiable and description (``invlab metrics
    list``)."""
    rows = []
    for s in _SPECS:
        lo, hi = s.value_range
        hib = {True: "higher", False: "lower", None: "-"}[s.higher_is_better]
        rows.append({
            "name": s.name,
            "aliases": ",".join(a.upper() for a, c in ALIASES.items() if c == s.name) or "-",
            "better": hib,
            "range": (("(" if math.isinf(lo) else "[") + f"{_fmt_bound(lo)}, {_fmt_bound(hi)}"
                      + (")" if math.isinf(hi) else "]")),
            "summary": s.summary,
            "needs": ",".join(sorted(s.needs)),
            "per_member": "yes" if s.per_member else "no",
            "differentiable": "yes" if s.differentiable else "no",
            "description": s.description,
        })
    return rows
