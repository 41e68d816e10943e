"""What a report says about a metric — its short name, which way is better, its range — read
from the metric registry (:data:`invlab.metrics.registry.REGISTRY`), never decided from the
metric's name in a report.

Reports name metrics by the keys their stores hold: registry names and aliases (``kl``,
``ei``, ``si``), per-layer and derived keys (``representation_invariance@conv1``), the
generalization study's negated measures (``neg_kl`` = −KL: higher = more invariant) and a few
quantities computed from one metric (:data:`DERIVED`: ``sigma_max`` is the ``sensitivity``
metric's value, ``accuracy_ratio`` a ratio of accuracies). :func:`resolve` maps each to its
:class:`~invlab.metrics.registry.MetricSpec` and a sign (−1 for ``neg_``); every other
function here is built on it:

- :func:`higher_is_better`, :func:`arrow` (``↑``/``↓``), :func:`better` (``↑ better``),
  :func:`axis_label` — the direction a table column or a figure axis shows;
- :func:`value_range`, :func:`upper_bound` — the range a figure's axis spans;
- :func:`short_name` — ``DI``, ``LI``, ``SI``, ``EI``, ``RI`` (the registry's alias);
- :func:`meets`, :func:`comparison` — a threshold in the metric's better direction
  (``DI ≤ 0.05``, ``agreement ≥ 0.95``).
"""

from __future__ import annotations

import math

from invlab.metrics.registry import ALIASES, REGISTRY, MetricSpec, base_metric

__all__ = ["DERIVED", "arrow", "axis_label", "better", "column_label", "comparison",
           "higher_is_better", "meets", "resolve", "short_name", "upper_bound", "value_range"]

DERIVED = {"sigma_max": "sensitivity", "accuracy_ratio": "accuracy",
           "val_accuracy": "accuracy"}
"""Stored quantities that are one registered metric's value under another name (their
direction is the metric's): ``sigma_max`` (the spectral study's σ_max = ``sensitivity``),
``accuracy_ratio`` (drift: Acc(D(β)) / Acc(D1)), ``val_accuracy`` (validation accuracy)."""

NEGATED = "neg_"
"""Prefix of a negated measure (the generalization study's ``neg_kl`` = −KL)."""


def resolve(key: str) -> tuple[MetricSpec, int] | None:
    """``(spec, sign)`` of a stored metric key: its registered metric and +1, or −1 for a
    negated measure (``neg_kl``); None for a key of no registered metric (``confidence``,
    ``nu``)."""
    k, sign = str(key), 1
    if k.startswith(NEGATED):
        k, sign = k[len(NEGATED):], -1
    name = DERIVED.get(k) or base_metric(k)
    return None if name is None else (REGISTRY[name], sign)


def higher_is_better(key: str) -> bool | None:
    """True when a higher value of ``key`` is better (more invariant), False when lower is,
    None when the metric has no better direction or is not registered. A negated measure
    points the other way."""
    r = resolve(key)
    if r is None or r[0].higher_is_better is None:
        return None
    spec, sign = r
    return spec.higher_is_better if sign > 0 else not spec.higher_is_better


def arrow(key: str) -> str:
    """``↑`` (higher is better), ``↓`` (lower is better) or ``""``."""
    return {True: "↑", False: "↓", None: ""}[higher_is_better(key)]


def better(key: str) -> str:
    """``↑ better``, ``↓ better`` or ``""`` (no direction): the words a figure axis shows."""
    a = arrow(key)
    return f"{a} better" if a else ""


def axis_label(text: str, key: str) -> str:
    """A figure axis label ``text`` with the direction of ``key`` added: ``"DI = KL,
    ↓ better"`` (``text`` unchanged for a metric without a better direction)."""
    b = better(key)
    return f"{text}, {b}" if b else text


def column_label(key: str, text: str | None = None) -> str:
    """A table column header: ``text`` (default :func:`short_name`) and the arrow of ``key``:
    ``"LI ↓"``, ``"SI ↑"``."""
    a = arrow(key)
    text = short_name(key) if text is None else text
    return f"{text} {a}" if a else text


def short_name(key: str) -> str:
    """The short name reports print: the registry's alias in capitals (``kl`` → ``DI``,
    ``logit_l2`` → ``LI``, ``effective_invariance`` → ``EI``) or, for a metric without one,
    its name (``agreement``); an unregistered key as it is."""
    r = resolve(key)
    if r is None:
        return str(key)
    alias = next((a for a, c in ALIASES.items() if c == r[0].name), None)
    name = alias.upper() if alias else r[0].name
    return name if r[1] > 0 else f"−{name}"


def value_range(key: str) -> tuple[float, float]:
    """``(low, high)`` of a per-sample value of ``key`` (``±inf`` when unbounded; a negated
    measure's range is mirrored); ``(-inf, inf)`` for an unregistered key."""
    r = resolve(key)
    if r is None:
        return (-math.inf, math.inf)
    lo, hi = r[0].value_range
    return (lo, hi) if r[1] > 0 else (0.0 - hi, 0.0 - lo)  # 0.0 -: no -0.0


def upper_bound(keys: list[str] | tuple[str, ...], default: float) -> float:
    """The largest finite upper end of the ranges of ``keys`` (where an axis of scores of
    those metrics stops), ``default`` when none is finite."""
    highs = [value_range(k)[1] for k in keys]
    finite = [h for h in highs if math.isfinite(h)]
    return max(finite) if finite else default


def _direction(key: str) -> bool:
    hib = higher_is_better(key)
    if hib is None:
        raise ValueError(f"metric {key!r} has no better direction: a threshold on it means "
                         "nothing (see invlab metrics list)")
    return hib


def meets(key: str, value: float, threshold: float) -> bool:
    """``value`` is at least as good as ``threshold``: ``value ≥ threshold`` for a metric
    where higher is better, ``value ≤ threshold`` where lower is.

    Raises:
        ValueError: for a metric without a better direction.
    """
    return value >= threshold if _direction(key) else value <= threshold


def comparison(key: str, ascii: bool = False) -> str:
    """The comparison :func:`meets` applies: ``≥``/``≤`` (``>=``/``<=`` with ``ascii``)."""
    hib = _direction(key)
    if ascii:
        return ">=" if hib else "<="
    return "≥" if hib else "≤"
