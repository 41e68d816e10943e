"""How many images to feed the model per call in no-grad passes (CPU speed).

A chunk's orbit part can hold thousands of images. Fed to a small CNN in one call, every
layer's activation is far larger than the CPU caches and the memory-bound layers (ReLU,
pooling) dominate; fed in slices whose largest activation fits a cache-sized budget, the
same work runs faster. For matmul-bound models (MLPs, small ViTs) larger slices are better.
:func:`rows_per_call` picks the slice from the model's own largest activation per image,
measured with forward hooks on a one-image probe:

    rows = clamp(2^floor(log2(ACTIVATION_BYTES / largest_activation_bytes_per_image)),
                 MIN_ROWS, MAX_ROWS)

Measured on 2 cores (B21 profile of 2,000 images × 13 × 10 magnitudes at 28×28, as in
``benchmarks/bench_origins.py``, two interleaved runs per size, channels-last convs):
``cnn_medium`` (largest activation 8×28×28 floats, 256 rows) 9.6–10.4 s vs 17.0–18.4 s in
1,024-row slices; ``cnn_small`` (128 rows) 15.8–18.8 s vs 34.6–36.6 s; ``mlp5`` and
``vit_tiny`` keep 1,024 rows (256 rows was ~15 % slower for ``mlp5``). Slicing changes no value: every image
is computed the same way in any slice (up to the backend's float rounding across batch
sizes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ACTIVATION_BYTES = 8 << 20
"""Budget for the largest activation of one model call (8 MiB)."""
MIN_ROWS = 2
"""Smallest slice. 224-px ImageNet models have activations of several MB per image; on 2
cores EfficientNet-Lite0 forwards 77 images/s in 2-image calls, 65 in 1-image calls, 34
in 8-image calls and 22 in 32-image calls (it was clamped to 64 rows before)."""
MAX_ROWS = 1024


def _largest_output_bytes(model: nn.Module, forward: Callable[[torch.Tensor], Any],
                          probe: torch.Tensor) -> int:
    """Bytes of the largest tensor output of any leaf module during ``forward(probe)``."""
    largest = [0]

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size())

    handles = []
    try:
        for m in model.modules():
            if next(m.children(), None) is None:
                handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            forward(probe)
    finally:
        for h in handles:
            h.remove()
    return largest[0]


def rows_per_call(model: object, forward: Callable[[torch.Tensor], Any] | None = None,
                  probe: torch.Tensor | None = None, largest_call: int | None = None) -> int:
    """Images per model call for ``model`` (see the module docstring).

    ``forward`` (default ``model``) is called once on ``probe`` (one or a few images
    ``[n, C, H, W]``), unless ``largest_call`` (the most images the caller will feed at
    once) is at most :data:`MIN_ROWS`, when no slice could split it. A model that is not an
    ``nn.Module``, or whose probe fails, gets :data:`MAX_ROWS` (the failure itself is
    reported by the measurement that follows)."""
    if not isinstance(model, nn.Module) or probe is None or probe.shape[0] < 1:
        return MAX_ROWS
    if largest_call is not None and largest_call <= MIN_ROWS:
        return MAX_ROWS
    try:
        per_image = _largest_output_bytes(model, forward or model, probe) / probe.shape[0]
    except Exception:  # noqa: BLE001 - the measurement itself reports a failing model
        return MAX_ROWS
    if per_image <= 0:
        return MAX_ROWS
    rows = ACTIVATION_BYTES / per_image
    if rows < MIN_ROWS:
        return MIN_ROWS
    return min(MAX_ROWS, 1 << (int(rows).bit_length() - 1))


__all__ = ["rows_per_call", "ACTIVATION_BYTES", "MIN_ROWS", "MAX_ROWS"]
