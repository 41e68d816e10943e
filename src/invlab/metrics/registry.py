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

Each metric also declares its **options** with their defaults: a small frozen dataclass
per metric (:class:`Metric` and its subclasses :class:`SaliencySimilarity`,
:class:`RepresentationInvariance`, ...; ``MetricSpec.config``). An instance is a configured
metric, accepted by ``measure(metrics=[SaliencySimilarity(n_steps=8)])``; the same names
are the keys of ``measure(options={"saliency_similarity": {"n_steps": 8}})``
(:mod:`invlab.metrics.options`).

**Every measure of invariance invlab computes has an entry here**, including the two that
are not columns of a per-sample, per-member table:

- ``lie_derivative`` (:class:`LieDerivative`: ``eps``, ``method``, ``at``, ``layer``) is a
  per-sample measure of one continuous family, so :func:`invlab.metrics.measure` computes
  it (need ``family_derivative``, one ``[N, 1]`` column: the derivative at ``m₀``, not one
  value per member): ``measure(model, x, transform="rotate",
  metrics=[LieDerivative(method="jvp")])`` equals
  ``invlab.metrics.lie_derivative(model, x, "rotate", method="jvp")``; both call the one
  formula :func:`invlab.metrics.functional.lie.lie_values`.
- ``factors_of_variation`` (:class:`FactorsOfVariation`: ``transforms``, ``n_pairs``,
  ``layer``) is B21's **dataset-level** analysis: per class, which of many families bring
  same-class pairs closer. It is not an invariance of one transform per sample, so it does
  not fit ``measure(transform=...)``'s one pass; its entry declares
  ``computed_by="invlab.factors.factors_of_variation"`` (a string: :mod:`invlab.factors`
  sits a layer above :mod:`invlab.metrics`), ``invlab metrics list`` shows it, and
  ``measure(metrics=["factors_of_variation"])`` raises one :class:`MeasureError` naming
  that function (:func:`check_measurable`). Its per-pair formula is
  :func:`invlab.metrics.functional.factors.factor_deltas` (``MetricSpec.fn``), and its
  options are the keyword arguments of ``factors_of_variation``:
  ``factors_of_variation(model, x, y, **FactorsOfVariation(n_pairs=50).options())``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as tF

from invlab.attribution import BOUNDARIES, SUPPORTED_METHODS
from invlab.metrics.errors import MeasureError
from invlab.metrics.functional import output as out_fn
from invlab.metrics.functional.factors import B21_FAMILIES, factor_deltas
from invlab.metrics.functional.lie import METHODS as LIE_METHODS
from invlab.metrics.functional.lie import lie_values
from invlab.metrics.functional.representation import (
    DISTANCES,
    equivariance_alignment,
    representation_invariance,
    ri_distances,
    shuffle_columns,
)
from invlab.metrics.functional.saliency import saliency_similarity
from invlab.metrics.functional.sensitivity import jacobian_spectral_norm

__all__ = [
    "ALIASES",
    "DEFAULT_METRICS",
    "METRICS",
    "NEEDS",
    "REGISTRY",
    "Accuracy",
    "Agreement",
    "EffectiveInvariance",
    "EquivarianceAlignment",
    "FactorsOfVariation",
    "JS",
    "KL",
    "LieDerivative",
    "LogitL2",
    "LogitL2Normalized",
    "LogitL2NormalizedDetached",
    "Metric",
    "MetricSpec",
    "RepresentationInvariance",
    "SaliencySimilarity",
    "Sensitivity",
    "StackedLogits",
    "base_metric",
    "canonical_name",
    "check_measurable",
    "measured_specs",
    "metric_rows",
    "no_member_keys",
    "regularizer",
    "regularizer_names",
    "resolve_metrics",
    "summary_statistic",
]

NEEDS = ("logit_pairs", "labels", "features", "gradients", "invertible", "jacobian",
         "family_derivative")
"""What a metric may need: ``logit_pairs`` (f(x), f(T x)), ``labels``, ``features`` (a
layer's activations on x and T x), ``gradients`` (integrated gradients), ``invertible`` (a
transform with an inverse and validity masks), ``jacobian`` (input-logit Jacobians),
``family_derivative`` (the outputs' derivative in the magnitude of a continuous family
with a numeric identity: ``f(T_{m₀±ε}x)`` or forward-mode AD)."""


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


def _bad(metric: str, option: str, value: Any, expected: str) -> MeasureError:
    return MeasureError(f"{metric} option {option}={value!r}: expected {expected}")


def _is_int(v: Any) -> bool:
    """An integer (``numpy`` integers too), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    """A real number (``numpy`` scalars too), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class Metric:
    """A metric with its options: the base of one small frozen dataclass per metric.

    The subclass's ``name`` (a class variable) is the metric's canonical name; its fields
    are the metric's options with their defaults (none for most metrics). Pass an instance
    where :func:`invlab.metrics.measure` takes metric names::

        measure(model, x, transform="r4",
                metrics=["kl", SaliencySimilarity(n_steps=8, ratio=0.5)])

    Invalid values raise :class:`MeasureError` when the object is made.
    """

    name: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        """``{option: value}`` in declaration order (empty for a metric without options)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The option names this metric declares."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{option: default}``."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def configure(cls, **options: Any) -> Metric:
        """The configured metric; an unknown option name raises :class:`MeasureError`
        listing the valid ones (where the constructor would raise ``TypeError``)."""
        unknown = [k for k in options if k not in cls.option_names()]
        if unknown:
            valid = ", ".join(cls.option_names()) or "none"
            raise MeasureError(f"unknown option {unknown[0]!r} for metric {cls.name}; "
                               f"valid options: {valid}")
        return cls(**options)

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the metric's function (``MetricSpec.fn``) for these options
        (the same names unless a subclass maps them)."""
        return self.options()


@dataclass(frozen=True)
class Accuracy(Metric):
    """``accuracy``: ``argmax f(T·x) == y`` (needs labels; adds ``clean_accuracy``)."""

    name: ClassVar[str] = "accuracy"


@dataclass(frozen=True)
class KL(Metric):
    """``kl`` (DI): ``KL(softmax f(x) || softmax f(T·x))``."""

    name: ClassVar[str] = "kl"


@dataclass(frozen=True)
class LogitL2(Metric):
    """``logit_l2`` (LI): ``½‖f(x) − f(T·x)‖²``."""

    name: ClassVar[str] = "logit_l2"


@dataclass(frozen=True)
class LogitL2Normalized(Metric):
    """``logit_l2_normalized``: ``‖f(x) − f(T·x)‖² / ‖f(x)‖²``."""

    name: ClassVar[str] = "logit_l2_normalized"


@dataclass(frozen=True)
class LogitL2NormalizedDetached(Metric):
    """``logit_l2_normalized_detached``: its value with a stop-gradient denominator."""

    name: ClassVar[str] = "logit_l2_normalized_detached"


@dataclass(frozen=True)
class EffectiveInvariance(Metric):
    """``effective_invariance`` (EI): ``sqrt(p̂·p̂_t)`` if the predictions agree, else 0."""

    name: ClassVar[str] = "effective_invariance"


@dataclass(frozen=True)
class Agreement(Metric):
    """``agreement``: ``argmax f(x) == argmax f(T·x)``."""

    name: ClassVar[str] = "agreement"


@dataclass(frozen=True)
class JS(Metric):
    """``js``: Jensen–Shannon divergence of the two softmax outputs (natural log)."""

    name: ClassVar[str] = "js"


@dataclass(frozen=True)
class SaliencySimilarity(Metric):
    """``saliency_similarity`` (SI, M23 eq. 3) and its options.

    Attributes:
        n_steps: integrated-gradient steps (quadrature points).
        ig_method: the quadrature (Captum's names: ``gausslegendre``, ``riemann_left``,
            ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``).
        baseline: the IG baseline (a scalar, or a ``[C, H, W]`` / ``[N, C, H, W]`` tensor
            transformed with the image).
        ratio: the saliency map keeps the pixels holding this share of the attribution mass.
        kernel_size, sigma: the Gaussian smoothing of the map (odd size, ``σ > 0``).
        boundary: the smoothing's padding; None: circular for ``t<n>``, symmetric otherwise.
    """

    name: ClassVar[str] = "saliency_similarity"
    n_steps: int = 50
    ig_method: str = "gausslegendre"
    baseline: float | torch.Tensor = 0.0
    ratio: float = 0.9
    kernel_size: int = 3
    sigma: float = 1.0
    boundary: str | None = None

    def __post_init__(self) -> None:
        n = self.name
        if not _is_int(self.n_steps) or self.n_steps < 1:
            raise _bad(n, "n_steps", self.n_steps, "a positive int")
        if self.ig_method not in SUPPORTED_METHODS:
            raise MeasureError(f"unknown ig_method {self.ig_method!r} ({n} option); valid: "
                               f"{', '.join(SUPPORTED_METHODS)}")
        if not (_is_real(self.baseline) or isinstance(self.baseline, torch.Tensor)):
            raise _bad(n, "baseline", self.baseline, "a number or a tensor")
        if not _is_real(self.ratio) or not 0.0 <= self.ratio <= 1.0:
            raise _bad(n, "ratio", self.ratio, "a number in [0, 1]")
        if not _is_int(self.kernel_size) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise _bad(n, "kernel_size", self.kernel_size, "a positive odd int")
        if not _is_real(self.sigma) or not self.sigma > 0:
            raise _bad(n, "sigma", self.sigma, "a number > 0")
        if self.boundary is not None and self.boundary not in BOUNDARIES:
            raise _bad(n, "boundary", self.boundary, f"None or one of {', '.join(BOUNDARIES)}")

    def call_kwargs(self) -> dict[str, Any]:
        """The keyword names of :func:`~invlab.metrics.functional.saliency.saliency_similarity`
        (``method``, ``baselines``)."""
        o = self.options()
        o["method"], o["baselines"] = o.pop("ig_method"), o.pop("baseline")
        return o


@dataclass(frozen=True)
class Sensitivity(Metric):
    """``sensitivity``: ``σ_max`` of the input-logit Jacobian per image."""

    name: ClassVar[str] = "sensitivity"


@dataclass(frozen=True)
class RepresentationInvariance(Metric):
    """``representation_invariance`` (RI, B21) and its option.

    Attributes:
        distance: ``cosine`` (``d = 1 − cos``) or ``l2`` (``‖a − b‖₂``).
    """

    name: ClassVar[str] = "representation_invariance"
    distance: str = "cosine"

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise MeasureError(f"{self.name} option distance must be cosine or l2, found "
                               f"{self.distance!r}")


@dataclass(frozen=True)
class EquivarianceAlignment(Metric):
    """``equivariance_alignment`` (B21's alignment measure of equivariance). No options:
    its distance is the cosine distance of B21's code."""

    name: ClassVar[str] = "equivariance_alignment"


@dataclass(frozen=True)
class LieDerivative(Metric):
    """``lie_derivative``: the outputs' rate of change along a continuous family at ``m₀``
    (:func:`invlab.metrics.lie_derivative`, whose keyword arguments these are).

    Attributes:
        eps: the central difference's half-width, in the family's unit (degrees, pixels,
            the factor, ...); unused by ``jvp``.
        method: ``central`` (``‖f(T_{m₀+ε}x) − f(T_{m₀−ε}x)‖₂ / 2ε`` on the logits or
            ``layer``) or ``jvp`` (Gruver et al.: forward-mode derivative of the
            probabilities, mean absolute value over classes).
        at: the magnitude ``m₀`` (None: the family's identity).
        layer: a submodule whose flattened output is differentiated (``central`` only);
            None: the logits.
    """

    name: ClassVar[str] = "lie_derivative"
    eps: float = 1e-2
    method: str = "central"
    at: float | None = None
    layer: str | None = None

    def __post_init__(self) -> None:
        n = self.name
        if not _is_real(self.eps) or not math.isfinite(self.eps) or not self.eps > 0:
            raise _bad(n, "eps", self.eps, "a number > 0 (in the family's unit)")
        if self.method not in LIE_METHODS:
            raise _bad(n, "method", self.method, f"one of {', '.join(LIE_METHODS)}")
        if self.at is not None and (not _is_real(self.at) or not math.isfinite(self.at)):
            raise _bad(n, "at", self.at, "None (the identity) or a finite magnitude")
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            raise _bad(n, "layer", self.layer, "None (the logits) or a submodule name")
        if self.method == "jvp" and self.layer is not None:
            raise MeasureError(f"{n} option method='jvp' is defined on the probabilities "
                               "(Gruver et al.); drop layer or use method='central'")

    def call_kwargs(self) -> dict[str, Any]:
        """``eps`` and ``method`` of :func:`~invlab.metrics.functional.lie.lie_values` (``at``
        gives its ``m0``, ``layer`` its ``forward``)."""
        return {"eps": self.eps, "method": self.method}


@dataclass(frozen=True)
class FactorsOfVariation(Metric):
    """``factors_of_variation`` (B21 §3): a dataset-level analysis computed by
    :func:`invlab.factors.factors_of_variation`, whose keyword arguments these are (not by
    :func:`~invlab.metrics.measure`).

    Attributes:
        transforms: the family names ranked per class (default B21's 13).
        n_pairs: same-class pairs per class.
        layer: the embedding layer (None: the penultimate features).
    """

    name: ClassVar[str] = "factors_of_variation"
    transforms: tuple[str, ...] = B21_FAMILIES
    n_pairs: int = 200
    layer: str | None = None

    def __post_init__(self) -> None:
        n = self.name
        ts = self.transforms
        if isinstance(ts, str) or not isinstance(ts, (list, tuple)) or not ts \
                or not all(isinstance(t, str) for t in ts):
            raise _bad(n, "transforms", ts, "a non-empty list of family names")
        object.__setattr__(self, "transforms", tuple(ts))
        if not _is_int(self.n_pairs) or self.n_pairs < 1:
            raise _bad(n, "n_pairs", self.n_pairs, "a positive int")
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            raise _bad(n, "layer", self.layer, "None (the penultimate features) or a "
                                                 "submodule name")


def _ri_features(z: torch.Tensor, z_t: torch.Tensor, perm: torch.Tensor,
                 generator: torch.Generator | None, cfg: Metric) -> dict[str, torch.Tensor]:
    """RI's score and its two distances from features ``z = φ(x)``, ``z_t = φ(T·x)``
    ``[k, n, D]`` (keys: the ``per_sample`` suffixes)."""
    d_same, d_other, score = ri_distances(z, z_t, perm, cfg.distance)  # type: ignore[attr-defined]
    return {"": score, "_d_same": d_same, "_d_other": d_other}


def _align_features(z: torch.Tensor, z_t: torch.Tensor, perm: torch.Tensor,
                    generator: torch.Generator | None, cfg: Metric) -> dict[str, torch.Tensor]:
    """B21's alignment from the same features and ``π`` (column shuffles drawn from
    ``generator`` after ``π``)."""
    return {"": equivariance_alignment(z, z_t, perm, shuffle_columns(z, generator))}


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
        config: the metric's :class:`Metric` dataclass: its options and their defaults
            (``config()`` is the metric with its default options).
        derived: suffixes of further ``per_sample`` keys the metric writes beside its own
            (representation invariance: its two distances ``_d_same``, ``_d_other``).
        from_features: for a ``features`` metric, ``(z, z_t, π, generator, config) ->
            {suffix: [k, n]}`` from one layer's features ``[k, n, D]`` (``""`` is the score).
        computed_by: the import path of the function that computes a measure
            :func:`~invlab.metrics.measure` does not (a dataset-level analysis:
            ``factors_of_variation``); None for every metric ``measure`` computes.
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
    config: type[Metric] = Metric
    derived: tuple[str, ...] = ()
    from_features: Callable[..., dict[str, torch.Tensor]] | None = None
    computed_by: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The metric's options and their defaults (``{}`` for most metrics)."""
        return self.config.defaults()


_INF = math.inf


def _pair(config: type[Metric], fn: Callable[..., torch.Tensor], desc: str,
          stacked: Callable[[StackedLogits], torch.Tensor] | None = None,
          differentiable: bool = False, higher_is_better: bool | None = False,
          value_range: tuple[float, float] = (0.0, _INF)) -> MetricSpec:
    return MetricSpec(config.name, frozenset({"logit_pairs"}), fn, desc, stacked=stacked,
                      differentiable=differentiable, higher_is_better=higher_is_better,
                      value_range=value_range, config=config)


_SPECS = [
    MetricSpec("accuracy", frozenset({"logit_pairs", "labels"}), out_fn.accuracy,
               "argmax f(T·x) == y on the transformed copies (needs labels)",
               higher_is_better=True, value_range=(0.0, 1.0), config=Accuracy),
    _pair(KL, out_fn.kl, "KL(softmax f(x) || softmax f(T·x)) (DI, M23 eq. 1)",
          _kl_stacked, differentiable=True),
    _pair(LogitL2, out_fn.logit_l2, "½‖f(x) − f(T·x)‖² (LI, M23 eq. 2)",
          differentiable=True),
    _pair(LogitL2Normalized, out_fn.logit_l2_normalized,
          "‖f(x) − f(T·x)‖² / ‖f(x)‖² (M23 §4.4)", differentiable=True),
    _pair(LogitL2NormalizedDetached, out_fn.logit_l2_normalized_detached,
          "logit_l2_normalized's value with a stop-gradient ‖f(x)‖² (a training variant, "
          "not M23's)", differentiable=True),
    _pair(EffectiveInvariance, out_fn.effective_invariance,
          "sqrt(p̂·p̂_t) if the predictions agree else 0 (EI, D22)", _ei_stacked,
          higher_is_better=True, value_range=(0.0, 1.0)),
    _pair(Agreement, out_fn.agreement, "argmax f(x) == argmax f(T·x) (D22)",
          _agreement_stacked, higher_is_better=True, value_range=(0.0, 1.0)),
    _pair(JS, out_fn.js, "Jensen–Shannon divergence, natural log", differentiable=True,
          value_range=(0.0, math.log(2))),
    MetricSpec("saliency_similarity", frozenset({"gradients", "invertible"}),
               saliency_similarity,
               "cos(M·m(x), M·T⁻¹m(T·x)) of integrated-gradient saliency maps, M the "
               "validity mask (SI, M23; needs an invertible transform)",
               higher_is_better=True, value_range=(-1.0, 1.0), config=SaliencySimilarity),
    MetricSpec("sensitivity", frozenset({"jacobian"}), jacobian_spectral_norm,
               "σ_max of the input-logit Jacobian per sample (M23 §4.4; no transform)",
               per_member=False, higher_is_better=False, value_range=(0.0, _INF),
               config=Sensitivity),
    MetricSpec("representation_invariance", frozenset({"features"}),
               representation_invariance,
               "1 − d(z, z_T)/d(z, z_T∘π), π a derangement; penultimate features or "
               "layers=[...] (B21)", higher_is_better=True, value_range=(-_INF, 1.0),
               summary="median", config=RepresentationInvariance,
               derived=("_d_same", "_d_other"), from_features=_ri_features),
    MetricSpec("equivariance_alignment", frozenset({"features"}), equivariance_alignment,
               "cos_dist(b_i, b_π(i)) − cos_dist(d_i, d_π(i)), d = z − z_T, b = d with "
               "each feature shuffled over samples (B21's alignment measure of "
               "equivariance); higher: T moves every sample the same way",
               higher_is_better=None, value_range=(-2.0, 2.0), summary="median",
               config=EquivarianceAlignment, from_features=_align_features),
    MetricSpec("lie_derivative", frozenset({"family_derivative"}), lie_values,
               "‖f(T_{m₀+ε}x) − f(T_{m₀−ε}x)‖₂ / 2ε per sample along a continuous family "
               "(rotate, translate_x, ...; method='jvp': Gruver et al.'s derivative of the "
               "probabilities), per unit of magnitude", per_member=False,
               higher_is_better=False, value_range=(0.0, _INF), config=LieDerivative),
    MetricSpec("factors_of_variation", frozenset({"features", "labels"}), factor_deltas,
               "share of same-class pairs (x1, x2) with cos(φ(x1), φ(T·x2)) > cos(φ(x1), "
               "φ(x2)), per class and family (B21 §3); a dataset-level analysis, not "
               "measure(): call invlab.factors.factors_of_variation(model, images, labels)",
               per_member=False, higher_is_better=None, value_range=(0.0, 1.0),
               config=FactorsOfVariation, computed_by="invlab.factors.factors_of_variation"),
]

REGISTRY: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
"""Canonical name → :class:`MetricSpec`."""
assert all(s.config.name == s.name for s in _SPECS), "a MetricSpec's config names another metric"

METRICS: dict[str, str] = {s.name: s.description for s in _SPECS}
"""Every registered metric's name and one-line description: the names
:func:`invlab.metrics.measure` accepts, and ``factors_of_variation``, which it refuses
(:func:`check_measurable`)."""

ALIASES: dict[str, str] = {
    "li": "logit_l2",
    "di": "kl",
    "si": "saliency_similarity",
    "ei": "effective_invariance",
    "acc": "accuracy",
    "ri": "representation_invariance",
    "align": "equivariance_alignment",
    "lie": "lie_derivative",
}
"""Case-insensitive short names."""

DEFAULT_METRICS = ("accuracy", "kl", "logit_l2", "effective_invariance")
"""Used when ``metrics`` is None (``accuracy`` only when labels are given)."""


def canonical_name(name: str) -> str | None:
    """The canonical name of a metric name or alias (case-insensitive), None if unknown."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    return key if key in REGISTRY else None


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


def check_measurable(name: str) -> None:
    """Raise one :class:`MeasureError` for a registered measure that
    :func:`~invlab.metrics.measure` does not compute (``MetricSpec.computed_by``), naming the
    function that does; nothing for the others."""
    spec = REGISTRY[name]
    if spec.computed_by is not None:
        raise MeasureError(
            f"{name} is a dataset-level analysis, not a per-sample measure of one transform: "
            f"measure() does not compute it; call {spec.computed_by}(model, images, labels, "
            f"...) with its options ({', '.join(spec.config.option_names())})")


def measured_specs() -> list[MetricSpec]:
    """The metrics :func:`~invlab.metrics.measure` computes (no ``computed_by``)."""
    return [s for s in _SPECS if s.computed_by is None]


def regularizer(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The differentiable pair function ``(logits, logits_t) -> [N]`` registered as ``name``
    (``logit_l2``, ``kl``, ``logit_l2_normalized``, ``logit_l2_normalized_detached``,
    ``js``; aliases accepted).

    Raises:
        ValueError: for a metric that is unknown or not differentiable.
    """
    key = ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in regularizer_names():
        raise ValueError(f"unknown regularizer {name!r}; valid: {', '.join(regularizer_names())}")
    return REGISTRY[key].fn


def regularizer_names() -> tuple[str, ...]:
    """The metrics usable as training regularizers: differentiable functions of the logit
    pair ``(f(x), f(T·x))`` alone (``invlab.train``'s ``REGULARIZERS``)."""
    return tuple(s.name for s in measured_specs()
                 if s.differentiable and s.needs == {"logit_pairs"})


def base_metric(key: str) -> str | None:
    """The metric a ``per_sample`` key belongs to: ``representation_invariance_d_same@conv1``
    → ``representation_invariance`` (layer suffix ``@...`` and derived suffixes stripped,
    aliases resolved); None for keys of no metric."""
    base = str(key).split("@", 1)[0]
    for s in _SPECS:
        for suffix in s.derived:
            if base.endswith(suffix) and base[: -len(suffix)] == s.name:
                return s.name
    return canonical_name(base)


def no_member_keys() -> frozenset[str]:
    """``per_sample`` keys without a transform member (``[N, 1]``): the metrics declared
    ``per_member=False`` and the clean counterpart ``clean_<name>`` of every metric that
    needs labels (``clean_accuracy``: the metric on the untransformed images)."""
    specs = measured_specs()
    return frozenset([s.name for s in specs if not s.per_member]
                     + [f"clean_{s.name}" for s in specs if "labels" in s.needs])


def summary_statistic(key: str) -> str:
    """``mean`` or ``median``: the summary statistic of a ``per_sample`` key (derived keys
    such as ``representation_invariance_d_same@layer`` follow their metric;
    ``clean_accuracy`` and unknown keys: ``mean``)."""
    base = base_metric(key)
    return REGISTRY[base].summary if base is not None else "mean"


def _fmt_bound(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def metric_rows() -> list[dict[str, str]]:
    """One row per registered metric: name, aliases, higher is better, range, summary
    statistic, needs, per member, differentiable, options with their defaults and
    description (``invlab metrics list``)."""
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
            "options": (",".join(f"{k}={v!r}" for k, v in s.options.items()) or "-")
                       + (f" (keyword arguments of {s.computed_by})" if s.computed_by else ""),
            "description": s.description,
        })
    return rows
