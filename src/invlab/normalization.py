"""Per-channel normalization ``(x - mean) / std`` given as ``{"mean": ..., "std": ...}``.

A low layer (torch only): the measurement engine (:func:`invlab.metrics.orbit.normalizer`),
the data readers (checkpoint-matched external test sets) and ``invlab.factors`` all parse the
same mapping here.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["mean_std"]


def mean_std(normalization: Any, channels: int, dtype: torch.dtype, device: torch.device,
             error: type[Exception] = ValueError) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean [C], std [C])`` from ``{"mean": ..., "std": ...}`` (scalars or per channel);
    ``None`` for ``None``.

    Args:
        normalization: ``None`` or a dict with ``mean`` and ``std``, each a scalar or ``C``
            values.
        channels: ``C``, the images' channel count.
        dtype, device: of the returned tensors.
        error: the exception class raised on bad input (the engine passes ``MeasureError``).

    Raises:
        error: not a mapping with mean/std, wrong length, a non-finite value, or a std that
            is not > 0 (one line: expected vs found).
    """
    if normalization is None:
        return None
    if not isinstance(normalization, dict) or not {"mean", "std"} <= set(normalization):
        raise error(f"normalization must be {{'mean': [...], 'std': [...]}} per channel, "
                    f"found {normalization!r}")
    out = []
    for key in ("mean", "std"):
        v = torch.as_tensor(normalization[key], dtype=torch.float64).reshape(-1)
        if v.numel() == 1:
            v = v.expand(channels)
        if v.numel() != channels or not bool(torch.isfinite(v).all()):
            raise error(f"normalization[{key!r}] must be finite with 1 or C = {channels} "
                        f"values, found {normalization[key]!r}")
        out.append(v.to(dtype=dtype, device=device))
    if bool((out[1] <= 0).any()):
        raise error(f"normalization['std'] must be > 0, found {normalization['std']!r}")
    return out[0], out[1]
