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
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from invlab.groups import Group
from invlab.metrics.errors import MeasureError
from invlab.normalization import mean_std

__all__ = ["Normalized", "Orbit", "build_orbit", "chunks", "near_equal_chunks", "normalizer"]


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
    """``(mean [C], std [C])`` from ``{"mean": ..., "std": ...}`` (scalars or per channel):
    :func:`invlab.normalization.mean_std`, raising :class:`MeasureError`.

    Raises:
        MeasureError: not a mapping with mean/std, wrong length, or a std that is not > 0.
    """
    return mean_std(normalization, channels, dtype, device, MeasureError)


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


@dataclass
class Orbit:
    """The orbit of a chunk as forward-ready parts: ``parts[i]`` is ``[b_i·n, C, H, W]``
    (``b_i`` blocks of ``n`` images); block ``index[j]`` of their concatenation is ``T_j x``
    (``j = 0``: ``x``). Identity members reuse the block of ``x``."""

    parts: list[torch.Tensor]
    index: torch.Tensor
    n: int

    def gather(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """``[k+1, n, ...]`` from per-part outputs ``[b_i·n, ...]`` (in member order)."""
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        y = y.reshape(-1, self.n, *y.shape[1:])
        if self.index.numel() == y.shape[0] and bool(
                (self.index == torch.arange(y.shape[0])).all()):
            return y
        return y.index_select(0, self.index.to(y.device))


@torch.inference_mode()
def build_orbit(buf: torch.Tensor, t: Any, xb: torch.Tensor, members: Sequence[Any]) -> Orbit:
    """The :class:`Orbit` of ``xb`` for ``members``.

    Exact groups act element by element straight into ``buf`` (one part of ``(k+1)·n``
    rows, one forward); other transforms apply all non-identity members in one batched
    ``apply_all`` call, used as it is (parts ``[x, T x]``: no copy into a buffer).
    """
    k, nb = len(members), xb.shape[0]
    if isinstance(t, Group) or not k:
        orbit = buf[:(k + 1) * nb]
        ov = orbit.view(k + 1, nb, *xb.shape[1:])
        ov[0].copy_(xb)
        for j, e in enumerate(members):
            ov[j + 1].copy_(t.act(xb, e))  # type: ignore[union-attr]
        return Orbit([orbit], torch.arange(k + 1), nb)
    ident = [t.identity is not None and m == t.identity for m in members]
    moved = [m for m, i in zip(members, ident) if not i]
    index, pos = [0], 1
    for i in ident:
        index.append(0 if i else pos)
        pos += 0 if i else 1
    parts = [xb]
    if moved:
        y = t.apply_all(xb, moved)
        if tuple(y.shape) != (len(moved), *xb.shape):
            raise MeasureError(f"transform {t.name}: apply_all returned {tuple(y.shape)}, "
                               f"expected {(len(moved), *xb.shape)}")
        parts.append(y.reshape(-1, *xb.shape[1:]))
    return Orbit(parts, torch.tensor(index), nb)
