"""Batched pixel-space augmentations for zoo training (one random draw per sample).

``x`` is ``[N, C, H, W]`` in [0, 1]; every function uses the given generator only, so a
model's augmentation stream is the same whether it trains alone or in a stack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from invlab.groups import create_group

MAX_SHIFT_PX = 2.0
MAX_ANGLE_DEG = 15.0
NOISE_STD = 0.1


def affine(x: torch.Tensor, angle_deg: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle_deg [N]`` about the centre, then translate by ``shift_px [N, 2]``
    (x, y in pixels); bilinear, zero fill."""
    n, _, h, w = x.shape
    a = angle_deg * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, 2] = -2.0 * shift_px[:, 0] / w
    theta[:, 1, 2] = -2.0 * shift_px[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``kind``: ``none``, ``translate`` (uniform ±2 px in x and y),
    ``rotate`` (uniform ±15°), ``r4`` (random multiple of 90°), ``noise`` (N(0, 0.1²), clipped)."""
    n = x.shape[0]
    if kind == "none":
        return x
    if kind == "translate":
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * MAX_SHIFT_PX
        return affine(x, torch.zeros(n), shift)
    if kind == "rotate":
        angle = (torch.rand(n, generator=gen) * 2 - 1) * MAX_ANGLE_DEG
        return affine(x, angle, torch.zeros(n, 2))
    if kind == "r4":
        return create_group("r4").act(x, torch.randint(0, 4, (n,), generator=gen))
    if kind == "noise":
        return (x + NOISE_STD * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    raise ValueError(f"unknown augmentation {kind!r}; valid: none, translate, rotate, r4, noise")
