"""Orbits and chunking: ``[x, T₁x, …, T_k x]`` as one stacked batch per chunk of images.

The orbit of a chunk of ``n`` images is written into one preallocated buffer
``[(k+1)·n, C, H, W]`` reused by every chunk (row block 0 is ``x``, block ``j`` is ``T_j x``),
so that peak memory does not depend on ``N``. With a ``normalization``, transforms act on
pixel-space images and the normalization is applied afterwards, by :class:`Normalized`
wrapping the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from invlab.groups import Group
from invlab.metrics.errors import MeasureError

__all__ = ["Normalized", "build_orbit", "chunks", "near_equal_chunks", "normalizer"]


class Normalized(nn.Module):
    """``model((x − mean) / std)`` with per-channel ``mean``/``std`` (``[C]`` or scalars).

    ``forward_features`` is forwarded (normalizing first) when the model has it.
    """

    def __init__(self, model: Any, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        if hasattr(model, "in_shape"):
            self.in_shape = model.in_shape

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def normalizer(normalization: Any, channels: int, dtype: torch.dtype,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean [C], std [C])`` from ``{"mean": ..., "std": ...}`` (scalars or per channel).

    Raises:
        MeasureError: not a mapping with mean/std, wrong length, or a std that is not > 0.
    """
    if normalization is None:
        return None
    if not isinstance(normalization, dict) or not {"mean", "std"} <= set(normalization):
        raise MeasureError(f"normalization must be {{'mean': [...], 'std': [...]}} per channel, "
                           f"found {normalization!r}")
    out = []
    for key in ("mean", "std"):
        v = torch.as_tensor(normalization[key], dtype=torch.float64).reshape(-1)
        if v.numel() == 1:
            v = v.expand(channels)
        if v.numel() != channels or not bool(torch.isfinite(v).all()):
            raise MeasureError(f"normalization[{key!r}] must be finite with 1 or C = {channels} "
                               f"values, found {normalization[key]!r}")
        out.append(v.to(dtype=dtype, device=device))
    if bool((out[1] <= 0).any()):
        raise MeasureError(f"normalization['std'] must be > 0, found {normalization['std']!r}")
    return out[0], out[1]


def near_equal_chunks(n: int, size: int) -> list[tuple[int, int]]:
    """Near-equal contiguous chunks of at most ``size`` (each ≥ 2 when ``n ≥ 2``).

    Used with representation invariance, whose derangement is drawn per chunk: this keeps
    its values (for a given ``batch_size`` and ``generator``) as before.
    """
    m = max(1, math.ceil(n / size))
    base, extra = divmod(n, m)
    out, a = [], 0
    for i in range(m):
        b = a + base + (1 if i < extra else 0)
        out.append((a, b))
        a = b
    return out


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """Contiguous chunks of ``size`` (the last one shorter), each ≥ 2 when ``n ≥ 2``.

    Fixed-size chunks keep the peak memory of one chunk independent of ``n``.
    """
    size = max(1, size)
    out = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(out) >= 2 and out[-1][1] - out[-1][0] < 2:
        (a0, _), (_, b1) = out[-2], out[-1]
        mid = b1 - (b1 - a0) // 2
        out[-2:] = [(a0, mid), (mid, b1)]
    return out


@torch.inference_mode()
def build_orbit(buf: torch.Tensor, t: Any, xb: torch.Tensor, members: Sequence[Any]) -> torch.Tensor:
    """Write ``[x, T_1 x, …, T_k x]`` into ``buf`` and return the ``[(k+1)·n, C, H, W]`` view.

    Exact groups act element by element straight into the buffer; other transforms are
    applied in one batched ``apply_all`` call.
    """
    k, nb = len(members), xb.shape[0]
    orbit = buf[:(k + 1) * nb]
    ov = orbit.view(k + 1, nb, *xb.shape[1:])
    ov[0].copy_(xb)
    if not k:
        return orbit
    if isinstance(t, Group):  # exact: element by element straight into the buffer
        for j, e in enumerate(members):
            ov[j + 1].copy_(t.act(xb, e))
    else:
        y = t.apply_all(xb, list(members))
        if tuple(y.shape) != (k, *xb.shape):
            raise MeasureError(f"transform {t.name}: apply_all returned {tuple(y.shape)}, "
                               f"expected {(k, *xb.shape)}")
        ov[1:].copy_(y)
    return orbit
