"""Attribution in Captum's shape: integrated gradients batched over steps × samples (and
group elements stacked into the batch), chunked by a memory budget; saliency maps."""

from __future__ import annotations

from invlab.attribution.integrated_gradients import (
    DEFAULT_MEMORY_BUDGET,
    SUPPORTED_METHODS,
    IntegratedGradients,
    integrated_gradients,
    quadrature,
)
from invlab.attribution.saliency import (
    BOUNDARIES,
    boundary_for_group,
    gaussian_kernel,
    saliency_map,
)

__all__ = [
    "BOUNDARIES",
    "DEFAULT_MEMORY_BUDGET",
    "SUPPORTED_METHODS",
    "IntegratedGradients",
    "boundary_for_group",
    "gaussian_kernel",
    "integrated_gradients",
    "quadrature",
    "saliency_map",
]
