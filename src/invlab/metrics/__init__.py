"""Invariance metrics: a functional core (:mod:`invlab.metrics.functional`), accumulators
(:mod:`invlab.metrics.accumulators`), the metric registry
(:mod:`invlab.metrics.registry`, with one configurable :class:`Metric` dataclass per
metric: :mod:`invlab.metrics.options`) and the orbit engine :func:`measure`.

    >>> import torch
    >>> from invlab.metrics import measure
    >>> from invlab.models import create_model
    >>> m = measure(create_model("mlp5"), torch.randn(16, 1, 36, 36), transform="r4",
    ...             metrics=["kl", "LI", "EI"])
    >>> sorted(m.summary)
    ['effective_invariance', 'kl', 'logit_l2']
"""

from __future__ import annotations

from invlab.metrics import accumulators, functional
from invlab.metrics.engine import (
    ALIASES,
    DEFAULT_METRICS,
    METRICS,
    Measurement,
    measure,
    resolve_metrics,
)
from invlab.metrics.errors import MeasureError
from invlab.metrics.lie import lie_derivative
from invlab.metrics.options import MeasureOptions
from invlab.metrics.registry import (
    JS,
    KL,
    REGISTRY,
    Accuracy,
    Agreement,
    EffectiveInvariance,
    EquivarianceAlignment,
    FactorsOfVariation,
    LieDerivative,
    LogitL2,
    LogitL2Normalized,
    LogitL2NormalizedDetached,
    Metric,
    MetricSpec,
    RepresentationInvariance,
    SaliencySimilarity,
    Sensitivity,
    regularizer,
)

__all__ = [
    "ALIASES",
    "DEFAULT_METRICS",
    "JS",
    "KL",
    "METRICS",
    "REGISTRY",
    "Accuracy",
    "Agreement",
    "EffectiveInvariance",
    "EquivarianceAlignment",
    "FactorsOfVariation",
    "LieDerivative",
    "LogitL2",
    "LogitL2Normalized",
    "LogitL2NormalizedDetached",
    "MeasureError",
    "MeasureOptions",
    "Measurement",
    "Metric",
    "MetricSpec",
    "RepresentationInvariance",
    "SaliencySimilarity",
    "Sensitivity",
    "accumulators",
    "functional",
    "lie_derivative",
    "measure",
    "regularizer",
    "resolve_metrics",
]
