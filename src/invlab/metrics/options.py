"""The options of :func:`invlab.metrics.measure`: measure-wide ones, each metric's own, and
the deprecated keyword arguments they replace.

Every metric declares its options with their defaults in the registry
(:mod:`invlab.metrics.registry`: ``SaliencySimilarity.n_steps = 50``,
``RepresentationInvariance.distance = "cosine"``, ...). A measurement sets them in one of
three ways, which may be combined:

- a **configured metric** in ``metrics``: ``metrics=["kl", SaliencySimilarity(n_steps=8)]``;
- a **per-metric section** of ``options``, keyed by the metric's name or alias:
  ``options={"saliency_similarity": {"n_steps": 8}}`` (or ``{"SI": {...}}``);
- a **flat option** of ``options``: ``options={"n_steps": 8}`` sets ``n_steps`` of every
  metric that declares it (today only SI).

``options`` also holds the **measure-wide** options (:class:`MeasureOptions`): ``members``,
``include_identity``, ``n_si``, ``num_workers``, ``memory_budget_bytes``.

Precedence: the registry's default < a flat option < a per-metric section. A configured
metric object is complete: options that set one of its options to another value raise
:class:`MeasureError` (configure a metric in one place). Options of a metric that is not
requested are validated and otherwise ignored, so one ``options`` dict serves many calls.
An unknown name raises :class:`MeasureError` with one line listing the valid ones; so does a
measure ``measure`` does not compute (``factors_of_variation``, a dataset-level analysis:
the message names :func:`invlab.factors.factors_of_variation`).

The keyword arguments these replace (``group=``, ``n_steps=``, ``saliency_ratio=``,
``n_si=``, ...; :data:`LEGACY`) keep working for one release with a ``DeprecationWarning``
that spells the call the new way; they map onto exactly the same options, so the results
are bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from invlab.attribution import DEFAULT_MEMORY_BUDGET
from invlab.metrics.errors import MeasureError
from invlab.metrics.registry import (
    DEFAULT_METRICS,
    REGISTRY,
    Metric,
    canonical_name,
    check_measurable,
    measured_specs,
    resolve_metrics,
)

__all__ = ["DEFAULT_N_SI", "LEGACY", "MEASURE", "MeasureOptions", "Request", "check_legacy",
           "deprecation_message", "legacy_settings", "resolve_request"]

DEFAULT_N_SI = 100
"""Images SI and sensitivity are computed on by default (``n_si``), as ``invlab audit``."""

MEASURE = "measure"
"""The target of the measure-wide options in :data:`LEGACY`."""


@dataclass(frozen=True)
class MeasureOptions:
    """Options of the whole measurement (keys of ``measure(options=...)``).

    Attributes:
        members: the transform members measured (group elements or a family's
            magnitudes); None: all but the identity.
        include_identity: also measure the identity member.
        n_si: the number of images SI and ``sensitivity`` are computed on (evenly spaced,
            ``round(linspace(0, N−1, n_si))``); None: all. One subset serves both metrics,
            so it is one option of the measurement rather than one per metric.
        num_workers: DataLoader workers decoding a Dataset's images (0: in this process).
        memory_budget_bytes: bound for one chunk of gradient computations (SI,
            sensitivity) and, with ``batch_size=None``, for the orbit buffer (a quarter).
    """

    members: Sequence[Any] | None = None
    include_identity: bool = False
    n_si: int | None = DEFAULT_N_SI
    num_workers: int = 0
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self) -> None:
        n_si = self.n_si
        if n_si is not None and (isinstance(n_si, bool) or not isinstance(n_si, int) or n_si < 1):
            raise MeasureError(f"n_si must be a positive int (images for SI / sensitivity) or "
                               f"None (all images), found {n_si!r}")
        nw = self.num_workers
        if isinstance(nw, bool) or not isinstance(nw, int) or nw < 0:
            raise MeasureError(f"num_workers must be an int >= 0, found {nw!r}")
        mb = self.memory_budget_bytes
        if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1:
            raise MeasureError(f"memory_budget_bytes must be a positive int, found {mb!r}")
        if not isinstance(self.include_identity, bool):
            raise MeasureError(f"include_identity must be True or False, found "
                               f"{self.include_identity!r}")


_MEASURE_KEYS = tuple(f.name for f in fields(MeasureOptions))

LEGACY: dict[str, tuple[str, str]] = {
    "members": (MEASURE, "members"),
    "elements": (MEASURE, "members"),
    "include_identity": (MEASURE, "include_identity"),
    "n_si": (MEASURE, "n_si"),
    "num_workers": (MEASURE, "num_workers"),
    "memory_budget_bytes": (MEASURE, "memory_budget_bytes"),
    "n_steps": ("saliency_similarity", "n_steps"),
    "ig_method": ("saliency_similarity", "ig_method"),
    "baseline": ("saliency_similarity", "baseline"),
    "saliency_ratio": ("saliency_similarity", "ratio"),
    "kernel_size": ("saliency_similarity", "kernel_size"),
    "sigma": ("saliency_similarity", "sigma"),
    "boundary": ("saliency_similarity", "boundary"),
    "representation_distance": ("representation_invariance", "distance"),
}
"""Deprecated keyword argument of ``measure`` → ``(target, option)``: the option it sets,
of the measurement (:data:`MEASURE`) or of a metric. (``group=`` became ``transform=``
and ``images=`` the positional ``data``; ``measure`` handles those two.)"""

_SETTINGS_KEYS = ("n_steps", "ig_method", "baseline", "saliency_ratio", "kernel_size", "sigma",
                  "boundary", "representation_distance", "memory_budget_bytes", "n_si")
"""The flat keys ``Measurement.settings`` has always recorded (kept for the record)."""


@dataclass(frozen=True)
class Request:
    """What a ``measure`` call asks for, resolved.

    Attributes:
        metrics: the requested metrics' canonical names, in the order given.
        configs: every registered metric → its configured :class:`Metric` (the requested
            ones as asked; the others with the options given, else their defaults).
        common: the measure-wide options.
        default_metrics: ``metrics`` was None (:data:`DEFAULT_METRICS`; those needing
            labels are dropped for unlabelled data).
    """

    metrics: list[str]
    configs: dict[str, Metric]
    common: MeasureOptions
    default_metrics: bool


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b)))
    try:
        return bool(type(a) is type(b) and a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


def _declared() -> dict[str, list[str]]:
    """Option name → the metrics that declare it."""
    out: dict[str, list[str]] = {}
    for spec in measured_specs():
        for opt in spec.config.option_names():
            out.setdefault(opt, []).append(spec.name)
    return out


def _valid_line() -> str:
    per = "; ".join(f"{s.name}: {', '.join(s.config.option_names())}"
                    for s in measured_specs() if s.config.option_names())
    return (f"valid: measure-wide {', '.join(_MEASURE_KEYS)}; per metric ({per}), flat or "
            f"under the metric's name, e.g. {{'saliency_similarity': {{'n_steps': 8}}}}")


def _parse_metrics(metrics: Any) -> tuple[list[str], dict[str, Metric]]:
    """Canonical names (order kept, duplicates dropped) and the configured objects."""
    if metrics is None:
        return list(DEFAULT_METRICS), {}
    if isinstance(metrics, (str, Metric)) or (isinstance(metrics, type)
                                              and issubclass(metrics, Metric)):
        metrics = [metrics]
    names: list[str] = []
    objects: dict[str, Metric] = {}
    for m in metrics:
        if isinstance(m, type) and issubclass(m, Metric) and m.name:
            m = m.name
        if isinstance(m, Metric):
            if not m.name:
                raise MeasureError("metrics: a bare Metric() names no metric; use a subclass "
                                   "such as SaliencySimilarity(n_steps=8)")
            prev = objects.get(m.name)
            if prev is not None and prev != m:
                raise MeasureError(f"metrics: {m.name} is configured twice, as {prev} and {m}")
            objects[m.name] = m
            if m.name not in names:
                names.append(m.name)
        elif isinstance(m, str):
            names += [n for n in resolve_metrics(m) if n not in names] if m.strip() else []
        else:
            raise MeasureError(f"metrics: each entry must be a metric name or a configured metric "
                               f"such as SaliencySimilarity(n_steps=8), found {type(m).__name__}")
    if not names:
        resolve_metrics([])  # raises "no metric requested", listing the valid names
    for name in names:
        check_measurable(name)  # factors_of_variation: names the function that computes it
    return names, objects


class _Assignments:
    """Option values collected from the flat options, the per-metric sections and the
    deprecated keywords, with where each came from (for conflict messages)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, tuple[Any, str, int]]] = {}

    def set(self, target: str, option: str, value: Any, source: str, level: int) -> None:
        d = self.values.setdefault(target, {})
        prev = d.get(option)
        if prev is None or level > prev[2]:
            d[option] = (value, source, level)
        elif level == prev[2] and not _same(prev[0], value):
            raise MeasureError(f"{target} option {option} is given twice with different values: "
                               f"{prev[1]} and {source}; give it once")

    def of(self, target: str) -> dict[str, tuple[Any, str, int]]:
        return self.values.get(target, {})


_FLAT, _SECTION = 1, 2


def _parse_options(options: Any, acc: _Assignments) -> None:
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise MeasureError(f"options must be a dict (e.g. {{'n_si': 500, 'saliency_similarity': "
                           f"{{'n_steps': 8}}}}), found {type(options).__name__}")
    declared = _declared()
    for key, value in options.items():
        k = str(key)
        if k in _MEASURE_KEYS:
            acc.set(MEASURE, k, value, f"options[{k!r}]", _SECTION)
            continue
        metric = canonical_name(k)
        if metric is not None:
            check_measurable(metric)
            cfg = REGISTRY[metric].config
            if isinstance(value, Metric):
                if value.name != metric:
                    raise MeasureError(f"options[{k!r}] is a {type(value).__name__}, not a "
                                       f"{cfg.__name__}")
                value = value.options()
            if not isinstance(value, Mapping):
                raise MeasureError(f"options[{k!r}] must be a dict of {metric}'s options "
                                   f"({', '.join(cfg.option_names()) or 'it has none'}), found "
                                   f"{type(value).__name__}")
            for opt, v in value.items():
                if opt not in cfg.option_names():
                    raise MeasureError(f"unknown option {opt!r} for metric {metric} in "
                                       f"options[{k!r}]; valid options: "
                                       f"{', '.join(cfg.option_names()) or 'none'}")
                acc.set(metric, opt, v, f"options[{k!r}][{opt!r}]", _SECTION)
            continue
        if k in declared:
            for metric in declared[k]:
                acc.set(metric, k, value, f"options[{k!r}]", _FLAT)
            continue
        raise MeasureError(f"unknown option {k!r} in measure(options=...); {_valid_line()}")


def _parse_legacy(legacy: Mapping[str, Any], acc: _Assignments) -> None:
    for key, value in legacy.items():
        target, opt = LEGACY[key]
        acc.set(target, opt, value, f"the deprecated {key}=", _SECTION)


def check_legacy(legacy: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` (as Python does for a misspelt keyword) for a keyword that is
    neither a parameter of ``measure`` nor a deprecated one, naming the valid ones."""
    unknown = [k for k in legacy if k not in LEGACY]
    if unknown:
        raise TypeError(f"measure() got an unexpected keyword argument {unknown[0]!r}; "
                        f"metric and measurement options go in options= ({_valid_line()})")


def resolve_request(metrics: Any, options: Mapping[str, Any] | None,
                    legacy: Mapping[str, Any] | None = None) -> Request:
    """Resolve ``metrics`` (names, aliases, comma strings or configured metrics),
    ``options`` and the deprecated keywords ``legacy`` (:data:`LEGACY`) to a
    :class:`Request`.

    Raises:
        MeasureError: unknown metric or option names (one line listing the valid ones),
            invalid values, or one option given two different values.
    """
    names, objects = _parse_metrics(metrics)
    acc = _Assignments()
    _parse_options(options, acc)
    _parse_legacy(legacy or {}, acc)
    configs: dict[str, Metric] = {}
    for name, spec in REGISTRY.items():
        given = acc.of(name)
        obj = objects.get(name)
        if obj is None:
            configs[name] = spec.config.configure(**{o: v[0] for o, v in given.items()})
            continue
        for opt, (value, source, _) in given.items():
            if not _same(getattr(obj, opt), value):
                raise MeasureError(f"{name} is configured twice: {obj} in metrics and {source} "
                                   f"= {value!r}; configure it in one place")
        configs[name] = obj
    common = MeasureOptions(**{o: v[0] for o, v in acc.of(MEASURE).items()})
    return Request(metrics=names, configs=configs, common=common,
                   default_metrics=metrics is None)


def legacy_settings(req: Request) -> dict[str, Any]:
    """The flat option keys ``Measurement.settings`` has always recorded (``n_steps``,
    ``saliency_ratio``, ``representation_distance``, ..., ``n_si``), read from ``req``."""
    out: dict[str, Any] = {}
    for key in _SETTINGS_KEYS:
        target, opt = LEGACY[key]
        out[key] = getattr(req.common if target == MEASURE else req.configs[target], opt)
    return out


def deprecation_message(old: Sequence[str], legacy: Mapping[str, Any],
                        renamed: Mapping[str, tuple[str, Any]]) -> str:
    """One message for the deprecated keywords ``old`` of a call, with the new spelling:
    ``renamed`` maps an old keyword to ``(new keyword, value)`` (``group`` → ``transform``),
    ``legacy`` holds the values of the ones that became options (:data:`LEGACY`)."""
    parts = [f"{new}={v!r}" for new, v in renamed.values()]
    opts: dict[str, Any] = {}
    for key, value in legacy.items():
        target, opt = LEGACY[key]
        if target == MEASURE:
            opts[opt] = value
        else:
            opts.setdefault(target, {})[opt] = value
    if opts:
        parts.append(f"options={opts!r}")
    return (f"measure({', '.join(f'{k}=' for k in old)}) is deprecated and will be removed in "
            f"invlab 0.3; write measure(..., {', '.join(parts)})")
