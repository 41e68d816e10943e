"""The one resampling helper: affine warps with ``affine_grid`` + ``grid_sample``.

Convention (tested in ``tests/test_transforms.py``):

- pixel centres sit at integer indices; the warp is expressed in pixel coordinates relative
  to the image centre ``((W-1)/2, (H-1)/2)``, x to the right, y **down** (row 0 at top);
- a forward matrix ``A`` (2×2) and offset ``b`` (pixels) move content from ``p`` to
  ``A·p + b``; sampling reads the input at ``A⁻¹·(q − b)`` for each output pixel ``q``;
- bilinear interpolation, zero fill outside the canvas (``padding_mode="zeros"``),
  ``align_corners=False`` (normalized ±1 is the outer edge of the border pixels, so the
  pixel-to-normalized scale is ``W/2`` and ``H/2`` and non-square canvases are handled
  without distortion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGN_CORNERS = False


def _inv2(a: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of ``[B, 2, 2]`` matrices (no LAPACK call, no thread pool)."""
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    adj = torch.stack([torch.stack([a[:, 1, 1], -a[:, 0, 1]], -1),
                       torch.stack([-a[:, 1, 0], a[:, 0, 0]], -1)], 1)
    return adj / det[:, None, None]


def sampling_theta(forward: torch.Tensor, height: int, width: int,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``affine_grid`` thetas ``[B, 2, 3]`` from forward pixel-space affines ``[B, 2, 3]``.

    ``theta = [S⁻¹A⁻¹S | −S⁻¹A⁻¹b]`` with ``S = diag(W/2, H/2)`` (computed in float64).
    """
    f = forward.to(torch.float64)
    a_inv = _inv2(f[:, :, :2])
    s = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64)
    lin = a_inv * s[None, None, :] / s[None, :, None]
    off = -(a_inv @ f[:, :, 2:]).squeeze(-1) / s[None, :]
    return torch.cat([lin, off[:, :, None]], dim=2).to(dtype)


def inverse_affine(forward: torch.Tensor) -> torch.Tensor:
    """Forward pixel affines of the inverse maps: ``[A⁻¹ | −A⁻¹b]`` (``[B, 2, 3]``)."""
    f = forward.to(torch.float64)
    a_inv = _inv2(f[:, :, :2])
    return torch.cat([a_inv, -(a_inv @ f[:, :, 2:])], dim=2).to(forward.dtype)


def affine_grid(theta: torch.Tensor, height: int, width: int, dtype: torch.dtype,
                device: torch.device | str | None = None) -> torch.Tensor:
    """``F.affine_grid(theta, [B, 1, H, W], align_corners=False)`` as broadcast arithmetic
    in float64 (``[B, H, W, 2]``): small elementwise ops, no batched matmul."""
    t = theta.to(torch.float64)[:, :, :, None, None]  # [B, 2, 3, 1, 1]
    xs = ((2 * torch.arange(width, dtype=torch.float64) + 1) / width - 1)[None, :]
    ys = ((2 * torch.arange(height, dtype=torch.float64) + 1) / height - 1)[:, None]
    grid = t[:, :, 0] * xs + t[:, :, 1] * ys + t[:, :, 2]  # [B, 2, H, W]
    return grid.permute(0, 2, 3, 1).to(dtype=dtype, device=device).contiguous()


def _grid(theta: torch.Tensor, height: int, width: int, device: torch.device) -> torch.Tensor:
    return affine_grid(theta, height, width, theta.dtype, device)


def warp_all(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Every affine applied to every image in one ``grid_sample``: ``[N,C,H,W] -> [k,N,C,H,W]``.

    The batch is folded into channels (``[k, N·C, H, W]``, channels-last and expanded without
    a copy), so each of the ``k`` sampling grids and its bilinear weights are computed once
    and shared by all images, and the four neighbours of a grid point are contiguous rows.
    Returns a contiguous tensor.
    """
    n, c, h, w = x.shape
    k = forward.shape[0]
    grid = _grid(sampling_theta(forward, h, w, x.dtype), h, w, x.device)
    inp = x.reshape(1, n * c, h, w).contiguous(memory_format=torch.channels_last)
    out = F.grid_sample(inp.expand(k, n * c, h, w), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=ALIGN_CORNERS)
    return out.view(k, n, c, h, w).contiguous()


def warp_paired(y: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Affine ``j`` applied to ``y[j]`` in one ``grid_sample``: ``[k,N,C,H,W] -> same``."""
    k, n, c, h, w = y.shape
    grid = _grid(sampling_theta(forward, h, w, y.dtype), h, w, y.device)
    out = F.grid_sample(y.reshape(k, n * c, h, w), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=ALIGN_CORNERS)
    return out.view(k, n, c, h, w)


def warp_per_sample(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Affine ``i`` applied to image ``x[i]`` in one ``grid_sample``: ``[N,C,H,W] -> same``."""
    n, c, h, w = x.shape
    grid = _grid(sampling_theta(forward, h, w, x.dtype), h, w, x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=ALIGN_CORNERS)
