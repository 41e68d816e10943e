"""Per (model, test set) measures of the generalization study (D22).

For pixel images ``x [N, C, H, W]`` in [0, 1], labels ``y`` and a model with per-channel
normalization ``(mean, std)`` applied after every pixel-space transform:

- ``accuracy``: ``mean(argmax f(x) == y)``; ``confidence``: ``mean max softmax f(x)``;
- rotation (``r4``, 90°/180°/270°, averaged): ``ei`` (effective invariance), ``agreement``,
  ``neg_js``, ``neg_kl``, ``neg_li`` (negated so that higher = more invariant for every
  measure);
- ``ei_<spec>`` for any extra fixed transform spec of :mod:`invlab.transforms`
  (``grayscale``, ``rotate:30``, ``translate_x:2``, ...);
  ``grayscale`` is for colour inputs: on images with C != 3 it has no ``ei_grayscale``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from invlab.devices import study_device
from invlab.metrics import functional as fm
from invlab.metrics import measure
from invlab.metrics.memory_format import channels_last_convs
from invlab.metrics.slicing import rows_per_call
from invlab.transforms import create_transform

ROTATION_MEASURES = {"ei": "effective_invariance", "agreement": "agreement", "neg_js": "js",
                     "neg_kl": "kl", "neg_li": "logit_l2"}
MEASURES = ("ei", "agreement", "neg_js", "neg_kl", "neg_li", "confidence")
COLOUR_ONLY = ("grayscale",)
"""Transforms of 3-channel images; skipped (no ``ei_<spec>``) on other inputs."""


def applies(spec: str, x: torch.Tensor) -> bool:
    """Whether transform ``spec`` is measured on images ``x [N, C, H, W]``."""
    return x.shape[1] == 3 or spec.strip().lower().partition(":")[0] not in COLOUR_ONLY


def pixel_transform(spec: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A pixel-space transform ``[N, C, H, W] -> [N, C, H, W]`` from an
    :mod:`invlab.transforms` spec (a fixed transform: ``rotate:30``, ``grayscale``, ...)."""

    t = create_transform(spec)
    if not callable(t):
        raise ValueError(f"transform spec {spec!r} is a group or a family of magnitudes, not "
                         "one fixed transform; give a magnitude (e.g. rotate:30, translate_x:2, "
                         "grayscale). EI over the rotations 90/180/270 is always measured (ei)")
    return t


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat(list(map(model, x.split(rows))))


def measure_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: Sequence[float],
                  std: Sequence[float], transforms: Sequence[str] = ()) -> dict[str, float]:
    """Every measure of this module for one model on one test set (pixel images ``x``)."""
    dev = study_device()  # invlab study --device (the CPU by default)
    model.to(dev)
    x, y = x.to(dev), y.to(dev)
    m = torch.tensor(list(mean), dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    norm = lambda t: (t - m) / s  # noqa: E731
    model.eval()
    xn = norm(x.float())
    with channels_last_convs(model, model, xn[:2]):  # oneDNN's fast conv layout, when it works
        return _measure_model(model, x, xn, y, norm, transforms)


def _measure_model(model: nn.Module, x: torch.Tensor, xn: torch.Tensor, y: torch.Tensor,
                   norm: Callable[[torch.Tensor], torch.Tensor],
                   transforms: Sequence[str]) -> dict[str, float]:
    rows = rows_per_call(model, model, xn[:1], len(xn))  # once for every pass of this model
    lg = _logits(model, xn, rows)
    out = {"accuracy": float((lg.argmax(1) == y).float().mean()),
           "confidence": float(torch.softmax(lg, 1).amax(1).mean())}
    if x.shape[-1] == x.shape[-2]:  # rot90 keeps the shape (per-channel normalization commutes)
        res = measure(model, xn, labels=y, transform="r4",
                      metrics=list(ROTATION_MEASURES.values()))
        for k, metric in ROTATION_MEASURES.items():
            v = float(res.per_sample[metric].mean())
            out[k] = -v if k.startswith("neg_") else v
    for spec in (t for t in transforms if applies(t, x)):
        lt = _logits(model, norm(pixel_transform(spec)(x.float())), rows)
        out[f"ei_{spec}"] = float(fm.effective_invariance(lg, lt).mean())
    return out
