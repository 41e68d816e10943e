"""Training augmentations of the origins study (B21 §4), pixel space, batched per sample.

Regimes (:data:`REGIMES`):

- ``none``: no augmentation;
- ``translate``: shift by ``U(−t, t)`` of the canvas width and height (``translate_x`` and
  ``translate_y`` of :mod:`invlab.transforms` at once);
- ``zoom``: scale ``s = exp(U(log z_min, log z_max))`` about the centre (``zoom_in`` for
  ``s > 1``, ``zoom_out`` for ``s < 1``);
- ``translate_zoom``: both (the "standard" augmentation, a random-resized-crop analogue),
  zoom then shift, composed into one affine so the image is resampled once;
- ``rrc``: random-resized-crop-like: a crop of area ``a ~ U(a_min, 1)`` and aspect ratio
  ``r ~ logU(3/4, 4/3)`` at a uniform position inside the image, resized to the full canvas
  (one ``affine_grid`` + ``grid_sample``, bilinear);
- ``mix13``: each sample gets one of B21's 13 families, uniformly, at a uniform grid magnitude
  (identity included), via ``Family.sample``.

:func:`make_augment` returns ``augment(x, generator)`` for the training loop's ``augment=``
hook; the loop's images are normalized, so the callable maps them back to pixel space,
augments there (zero fill = black) and normalizes again. The three shift/scale regimes are
one ``grid_sample`` per batch (bilinear, the conventions of :mod:`invlab.transforms.sampling`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from invlab.factors import B21_FAMILIES
from invlab.transforms import create_transform
from invlab.transforms.sampling import warp_per_sample

__all__ = ["AugConfig", "REGIMES", "augment_pixels", "make_augment"]

REGIMES = ("none", "translate", "zoom", "translate_zoom", "rrc", "mix13")


@dataclass(frozen=True)
class AugConfig:
    """Augmentation strengths (fractions of the canvas / scale factors)."""

    translate: float = 0.15
    zoom_min: float = 0.8
    zoom_max: float = 1.25
    rrc_min_area: float = 0.35


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _shift_scale(x: torch.Tensor, cfg: AugConfig, gen: torch.Generator, *, zoom: bool,
                 translate: bool) -> torch.Tensor:
    """Zoom by ``s`` about the centre, then translate by ``(t_x W, t_y H)``, as one forward
    affine ``[[s, 0, t_x W], [0, s, t_y H]]`` and one bilinear ``grid_sample`` per batch.
    Draws ``s``, then ``t_x``, then ``t_y`` (``n`` values each) from ``gen``."""

    n, _, h, w = x.shape
    fwd = torch.zeros(n, 2, 3, dtype=torch.float64)
    fwd[:, 0, 0] = fwd[:, 1, 1] = (
        torch.exp(_uniform(n, math.log(cfg.zoom_min), math.log(cfg.zoom_max), gen))
        if zoom else 1.0)
    if translate:
        fwd[:, 0, 2] = _uniform(n, -cfg.translate, cfg.translate, gen) * w
        fwd[:, 1, 2] = _uniform(n, -cfg.translate, cfg.translate, gen) * h
    return warp_per_sample(x, fwd)


def _rrc(x: torch.Tensor, cfg: AugConfig, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    area = _uniform(n, cfg.rrc_min_area, 1.0, gen)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), gen))
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / canvas width
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1)  # centre in [-1, 1]
    cy = (1 - h) * (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _mix13(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    pick = torch.randint(0, len(B21_FAMILIES), (x.shape[0],), generator=gen)
    out = x.clone()
    for j, name in enumerate(B21_FAMILIES):
        idx = (pick == j).nonzero().flatten()
        if idx.numel():
            out[idx] = create_transform(name).sample(x[idx], generator=gen)
    return out


def augment_pixels(x: torch.Tensor, regime: str, cfg: AugConfig, gen: torch.Generator
                   ) -> torch.Tensor:
    """Augment pixel-space images ``[N, C, H, W]`` per ``regime`` (a fresh draw per sample)."""
    if regime == "none":
        return x
    if regime in ("translate", "zoom", "translate_zoom"):
        return _shift_scale(x, cfg, gen, zoom="zoom" in regime, translate="translate" in regime)
    if regime == "rrc":
        return _rrc(x, cfg, gen)
    if regime == "mix13":
        return _mix13(x, gen)
    raise ValueError(f"unknown augmentation regime {regime!r}; valid: {', '.join(REGIMES)}")


def make_augment(regime: str, cfg: AugConfig, mean: float, std: float
                 ) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """``augment(x_normalized, gen)`` for :func:`invlab.train.train` (None for ``none``)."""
    if regime not in REGIMES:
        raise ValueError(f"unknown augmentation regime {regime!r}; valid: {', '.join(REGIMES)}")
    if regime == "none":
        return None

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        pix = (x * std + mean).clamp(0.0, 1.0)
        return (augment_pixels(pix, regime, cfg, gen) - mean) / std

    return augment
