"""Functional core: pure metric functions returning per-sample values (torchmetrics-style).

Output-level metrics take logits ``f(x)`` and ``f(g·x)`` (``[..., K]``, broadcastable) and
return ``[...]``; the saliency and sensitivity metrics take the model, the Lie derivative
(:func:`lie_values`) a forward function and a continuous family. ``kl``, ``js``,
``logit_l2`` and ``logit_l2_normalized`` are differentiable and double as training
regularizers.
"""

from __future__ import annotations

from invlab.attribution import integrated_gradients, saliency_map
from invlab.metrics.functional.lie import lie_values
from invlab.metrics.functional.output import (
    accuracy,
    agreement,
    effective_invariance,
    js,
    kl,
    logit_l2,
    logit_l2_normalized,
    logit_l2_normalized_detached,
)
from invlab.metrics.functional.representation import (
    derangement,
    equivariance_alignment,
    representation_invariance,
)
from invlab.metrics.functional.saliency import saliency_cosine, saliency_similarity
from invlab.metrics.functional.sensitivity import jacobian_spectral_norm

__all__ = [
    "accuracy",
    "agreement",
    "derangement",
    "effective_invariance",
    "integrated_gradients",
    "jacobian_spectral_norm",
    "js",
    "kl",
    "lie_values",
    "logit_l2",
    "logit_l2_normalized",
    "logit_l2_normalized_detached",
    "representation_invariance",
    "equivariance_alignment",
    "saliency_cosine",
    "saliency_map",
    "saliency_similarity",
]
