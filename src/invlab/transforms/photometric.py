"""Photometric transformations of pixel-space images in ``[0, 1]``.

Each function takes images ``x`` ``[..., C, H, W]`` and magnitudes ``m`` broadcastable to
``x`` with singleton ``C, H, W`` dims (``[k, 1, 1, 1, 1]`` for all members of a family,
``[N, 1, 1, 1]`` per sample). Formulas follow torchvision's functional definitions on float
images:

- ``brightness(x, f) = clip(f·x, 0, 1)``;
- ``contrast(x, f) = clip(μ + f·(x − μ), 0, 1)``, ``μ`` = mean over the image of its gray
  level (``0.299 R + 0.587 G + 0.114 B`` for 3 channels, the pixel value for 1 channel);
- ``posterize(x, b)``: quantize to 8 bits ``u = round(255·x)`` and keep the top ``b`` bits,
  ``(u >> (8−b) << (8−b)) / 255``; ``b = 8`` returns ``x`` unchanged (no 8-bit rounding),
  ``b = 0`` gives all zeros;
- ``solarize(x, t) = 1 − x where x > t else x`` (strictly above, so ``t = 1`` is the
  identity; PIL inverts ``x ≥ t``);
- ``grayscale(x)``: luminance ``0.299 R + 0.587 G + 0.114 B`` replicated to 3 channels;
- ``invert(x) = 1 − x``;
- ``blur(x, σ)``: separable Gaussian with weights ``∝ exp(−t²/2σ²)``, ``|t| ≤ ceil(3σ)``,
  reflect padding; ``σ = 0`` is the identity;
- ``noise(x, σ, z) = clip(x + σ·z, 0, 1)`` for standard normal ``z``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)


def brightness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * m).clamp(0.0, 1.0)


def gray(x: torch.Tensor) -> torch.Tensor:
    """``[..., C, H, W] -> [..., 1, H, W]`` luminance (identity for one channel)."""
    if x.shape[-3] == 1:
        return x
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(-3, keepdim=True)


def contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    mu = gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (mu + m * (x - mu)).clamp(0.0, 1.0)


def posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    u = (x.clamp(0.0, 1.0) * 255).round().to(torch.int32)
    shift = (8 - m).to(torch.int32)
    q = ((u >> shift) << shift).to(x.dtype) / 255
    return torch.where(m >= 8, x, q)


def solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(x > m, 1.0 - x, x)


def grayscale(x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
    return gray(x).expand_as(x).clone()


def invert(x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
    return 1.0 - x


def _kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """``[..., 2r+1]`` normalized Gaussian taps per sigma (a delta for ``σ = 0``)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    s = sigma.to(torch.float64)[..., None]
    logits = -(t**2) / (2 * s.clamp_min(1e-12) ** 2)
    k = torch.exp(logits - logits.amax(-1, keepdim=True))
    k = k * (t.abs() <= torch.ceil(3 * s))  # each sigma keeps its own support
    k = torch.where(s > 0, k, (t == 0).to(k.dtype).expand_as(k))
    return k / k.sum(-1, keepdim=True)


def _conv1d(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """``x [B, C, H, W]`` convolved along ``dim`` with per-image taps ``[B, 2r+1]``
    (reflect padding); loops over taps, never over images."""
    r = (taps.shape[-1] - 1) // 2
    if r == 0:
        return x
    xp = F.pad(x, (r, r, 0, 0) if dim == -1 else (0, 0, r, r), mode="reflect")
    size = x.shape[dim]
    out = torch.zeros_like(x)
    for j in range(2 * r + 1):
        out += taps[:, j, None, None, None] * xp.narrow(dim, j, size)
    return out


def blur(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Gaussian blur, sigma ``m`` per image (``[..., 1, 1, 1]``); output shape is the
    broadcast of ``x`` and ``m``."""
    shape = torch.broadcast_shapes(x.shape, m.shape)
    c, h, w = shape[-3:]
    sigma = m.expand(*shape[:-3], 1, 1, 1).reshape(-1)
    s_max = float(sigma.max()) if sigma.numel() else 0.0
    radius = max(0, min(math.ceil(3 * s_max), h - 1, w - 1))
    taps = _kernels(sigma, radius).to(x.dtype)
    flat = x.expand(shape).reshape(-1, c, h, w)
    return _conv1d(_conv1d(flat, taps, -1), taps, -2).view(shape)


def noise(x: torch.Tensor, m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``clip(x + σ·z, 0, 1)`` with unit noise ``z`` broadcastable to ``x``."""
    return (x + m * z).clamp(0.0, 1.0)
