"""Geometric transformations as forward pixel-space affines (see :mod:`.sampling`).

Coordinates are pixels relative to the image centre, x right, y down. For magnitudes
``m`` (``[B]`` tensor) each function returns forward affines ``[B, 2, 3]``:

- ``rotate`` (degrees): ``A = [[cos m, sin m], [−sin m, cos m]]`` — positive angles turn the
  displayed image counter-clockwise (``rotate:90`` equals ``torch.rot90(x, 1, dims=(-2, -1))``,
  as PIL's and torchvision's ``rotate``);
- ``translate_x`` / ``translate_y`` (pixels): ``b = (m, 0)`` / ``(0, m)``; positive moves
  content right / down;
- ``shear_x`` / ``shear_y`` (degrees, torchvision's ``affine`` convention):
  ``A = [[1, −tan m], [0, 1]]`` / ``[[1, 0], [−tan m, 1]]``;
- ``zoom_in`` / ``zoom_out`` (scale factor): ``A = m·I`` about the centre (m > 1 magnifies).
"""

from __future__ import annotations

import math

import torch


def _affine(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, 2, 2]`` linear part and ``[B, 2]`` offset -> ``[B, 2, 3]``."""
    if b is None:
        b = torch.zeros(a.shape[0], 2, dtype=a.dtype)
    return torch.cat([a, b[:, :, None]], dim=2)


def rotate(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    t = torch.deg2rad(m.to(torch.float64))
    c, s = torch.cos(t), torch.sin(t)
    return _affine(torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1))


def translate_x(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    m = m.to(torch.float64)
    eye = torch.eye(2, dtype=torch.float64).expand(m.shape[0], 2, 2)
    return _affine(eye, torch.stack([m, torch.zeros_like(m)], -1))


def translate_y(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    m = m.to(torch.float64)
    eye = torch.eye(2, dtype=torch.float64).expand(m.shape[0], 2, 2)
    return _affine(eye, torch.stack([torch.zeros_like(m), m], -1))


def _shear(m: torch.Tensor, row: int) -> torch.Tensor:
    t = torch.tan(torch.deg2rad(m.to(torch.float64)))
    a = torch.eye(2, dtype=torch.float64).repeat(m.shape[0], 1, 1)
    a[:, row, 1 - row] = -t
    return _affine(a)


def shear_x(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return _shear(m, 0)


def shear_y(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return _shear(m, 1)


def zoom(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    m = m.to(torch.float64)
    return _affine(m[:, None, None] * torch.eye(2, dtype=torch.float64))


def shear_ok(m: float) -> bool:
    """Shear angles with a finite tangent (not ±90° mod 180°)."""
    return abs(math.cos(math.radians(m))) > 1e-6
