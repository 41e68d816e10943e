"""Saliency maps from attributions (M23 §4.1): |IG| summed over channels, thresholded,
smoothed with a small Gaussian whose boundary handling commutes with the group action."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["BOUNDARIES", "boundary_for_group", "gaussian_kernel", "saliency_map"]

BOUNDARIES = ("symmetric", "circular", "reflect", "replicate", "zeros")


def boundary_for_group(group: object) -> str:
    """Padding mode whose smoothing commutes with ``group``'s action.

    Cyclic shifts (``t<n>``) wrap around, so they need ``circular`` padding; rotations by
    90° and flips map the border onto itself, so any mirror-symmetric padding commutes with
    them and ``symmetric`` (edge pixel repeated, like ``numpy.pad(mode='symmetric')``) is used.
    """
    name = str(getattr(group, "name", group)).lower()
    if name.startswith("t") and name[1:].isdigit():
        return "circular"
    return "symmetric"


def gaussian_kernel(
    kernel_size: int = 3, sigma: float = 1.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalized 2-D Gaussian ``[k, k]``: ``K_ij ∝ exp(−((i−c)² + (j−c)²) / 2σ²)``, ΣK = 1."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, found {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, found {sigma}")
    c = (kernel_size - 1) / 2
    t = torch.arange(kernel_size, dtype=torch.float64) - c
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(dtype)


def _pad_symmetric(x: torch.Tensor, p: int) -> torch.Tensor:
    """``numpy.pad(mode='symmetric')`` on the last two dims (edge included in the mirror)."""
    h, w = x.shape[-2], x.shape[-1]
    if p > h or p > w:
        raise ValueError(f"symmetric padding of {p} needs images of at least {p}x{p}")
    x = torch.cat([x[..., :p, :].flip(-2), x, x[..., h - p :, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :p].flip(-1), x, x[..., w - p :].flip(-1)], dim=-1)


def _smooth(m: torch.Tensor, kernel_size: int, sigma: float, boundary: str) -> torch.Tensor:
    k = gaussian_kernel(kernel_size, sigma, m.dtype).to(m.device)
    p = kernel_size // 2
    x = m.unsqueeze(1)  # [N, 1, H, W]
    if p:
        if boundary == "symmetric":
            x = _pad_symmetric(x, p)
        elif boundary == "zeros":
            x = F.pad(x, (p, p, p, p))
        else:
            x = F.pad(x, (p, p, p, p), mode=boundary)
    return F.conv2d(x, k.view(1, 1, kernel_size, kernel_size)).squeeze(1)


def saliency_map(
    attributions: torch.Tensor,
    ratio: float = 0.9,
    kernel_size: int = 3,
    sigma: float = 1.0,
    boundary: str = "symmetric",
) -> torch.Tensor:
    r"""Saliency map ``m`` of M23 §4.1 from attributions.

    .. math::
        a = \sum_c |A_c|, \qquad
        a' = a \cdot [a \ge \rho \max a], \qquad
        m = K_\sigma * a'

    where the max is per image and ``K_σ`` is a normalized ``kernel_size²`` Gaussian applied
    with ``boundary`` padding (``circular`` for cyclic shifts, ``symmetric`` for rotations
    and flips: see :func:`boundary_for_group`).

    Args:
        attributions: ``[N, C, H, W]`` (e.g. integrated gradients).
        ratio: threshold ``ρ`` relative to the per-image maximum (0 keeps everything).
        kernel_size: odd Gaussian kernel size.
        sigma: Gaussian standard deviation in pixels.
        boundary: one of ``symmetric``, ``circular``, ``reflect``, ``replicate``, ``zeros``.

    Returns:
        ``[N, H, W]`` non-negative maps.
    """
    if attributions.dim() != 4:
        raise ValueError(
            f"attributions must be [N, C, H, W], found shape {tuple(attributions.shape)}"
        )
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; valid: {', '.join(BOUNDARIES)}")
    if not (0.0 <= ratio <= 1.0) or math.isnan(ratio):
        raise ValueError(f"ratio must be in [0, 1], found {ratio}")
    a = attributions.abs().sum(1)
    thr = ratio * a.amax(dim=(-2, -1), keepdim=True)
    a = torch.where(a >= thr, a, torch.zeros_like(a))
    return _smooth(a, kernel_size, sigma, boundary)
