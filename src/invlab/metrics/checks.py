"""Input validation and non-finite checks of :func:`invlab.metrics.measure`.

No metric is ever returned as a silent ``0.0`` or ``nan``: non-finite images, weights,
logits, features, gradients or Jacobians raise :class:`MeasureError` naming the metric(s)
and the number of affected samples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from invlab.metrics.errors import MeasureError
from invlab.metrics.registry import REGISTRY, base_metric

__all__ = [
    "check_finite_images",
    "check_finite_results",
    "check_finite_weights",
    "check_images",
    "check_labels",
    "check_logits",
    "expected_shape",
]

_CAUSE = {
    "gradients": "integrated gradients / saliency maps",
    "jacobian": "the input-logit Jacobian",
    "features": "the features",
}
"""What a non-finite value of a metric with this need comes from (else the outputs)."""


def _cause(key: str) -> str:
    """The likely source of a non-finite value of the ``per_sample`` key ``key``."""
    base = base_metric(key)
    needs = REGISTRY[base].needs if base is not None else frozenset()
    return next((c for need, c in _CAUSE.items() if need in needs), "the model's outputs")


def expected_shape(model: Any) -> tuple[int, ...] | None:
    """``model.in_shape`` (or ``model.model.in_shape``) as a tuple, when the model has it."""
    for m in (model, getattr(model, "model", None)):
        shape = getattr(m, "in_shape", None)
        if shape is not None:
            try:
                return tuple(int(s) for s in shape)
            except (TypeError, ValueError):
                return None
    return None


def check_images(model: Any, images: Any) -> torch.Tensor:
    """``images`` must be a non-empty float ``[N, C, H, W]`` tensor of the model's shape."""
    if not callable(model):
        raise MeasureError(f"model must be callable (an nn.Module), found {type(model).__name__}")
    if not isinstance(images, torch.Tensor):
        raise MeasureError(f"images must be a torch.Tensor [N, C, H, W], found "
                           f"{type(images).__name__}")
    if images.dim() != 4:
        raise MeasureError(
            f"images must be 4-D [N, C, H, W], found shape {tuple(images.shape)}"
            + ("; add a channel dimension with images.unsqueeze(1)" if images.dim() == 3 else "")
        )
    if not images.is_floating_point():
        raise MeasureError(f"images must be floating point (preprocessed like the training "
                           f"data), found dtype {images.dtype}")
    expected = expected_shape(model)
    if expected is not None and tuple(images.shape[1:]) != expected:
        raise MeasureError(
            f"images have shape [C, H, W] = {list(images.shape[1:])} but the model expects "
            f"{list(expected)}; preprocess (pad/resize, channels) like the training data"
        )
    if images.shape[0] == 0:
        raise MeasureError("images is empty (N = 0)")
    return images


def _first(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten()[:5].tolist()


def check_finite_images(images: torch.Tensor) -> None:
    """Raise when any image has a NaN/inf pixel (naming how many samples)."""
    # per-image sums flag every NaN/inf image in O(N) memory (an isfinite of the whole
    # batch would allocate several copies of it); only flagged images are checked exactly
    # (a sum can also overflow to inf for huge finite pixels)
    bad = ~torch.isfinite(images.sum(dim=(1, 2, 3)))
    if bool(bad.any()):
        idx = bad.nonzero().flatten()
        bad[idx] = ~torch.isfinite(images[idx]).flatten(1).all(1)
    if bool(bad.any()):
        raise MeasureError(
            f"images contain NaN/inf pixels in {int(bad.sum())} of {images.shape[0]} samples "
            f"(first sample indices: {_first(bad)}); every metric of those samples would be "
            f"NaN or meaningless: drop or repair them")


def check_finite_weights(model: Any, names: list[str], n: int) -> None:
    """Raise when a floating parameter or buffer of ``model`` is NaN/inf."""
    if not isinstance(model, nn.Module):
        return
    bad = [k for k, t in [*model.named_parameters(), *model.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise MeasureError(
            f"the model has NaN/inf weights in {len(bad)} tensor(s) (first: {bad[0]!r}): "
            f"{', '.join(names)} would be NaN/inf for all {n} samples; check the checkpoint")


def check_labels(labels: Any, n: int, names: list[str]) -> torch.Tensor | None:
    """``[N]`` integer labels (long), or None; ``accuracy`` (each metric that needs
    ``labels``) requires them."""
    if labels is None:
        need = [m for m in names if "labels" in REGISTRY[m].needs]
        if need:
            raise MeasureError(f"metric {need[0]!r} needs labels; pass labels=[N] or drop it")
        return None
    lab = torch.as_tensor(labels)
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise MeasureError(f"labels must be integer class indices, found dtype {lab.dtype}")
    if lab.dim() != 1 or lab.shape[0] != n:
        raise MeasureError(f"labels must have shape [N] = [{n}] to match the images, found "
                           f"{tuple(lab.shape)}")
    return lab.long()


def check_logits(logits: Any, rows: int) -> torch.Tensor:
    """The model's output must be floating-point logits ``[rows, K]``."""
    if not isinstance(logits, torch.Tensor):
        raise MeasureError(f"the model must return a logits tensor [N, K], found "
                           f"{type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != rows:
        raise MeasureError(f"the model must return logits [N, K]; for {rows} images it "
                           f"returned shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise MeasureError(
            f"the model returned logits of dtype {logits.dtype}; measure needs floating-point "
            f"logits [N, K] (return the pre-softmax scores, e.g. .float(), not class indices)")
    return logits


def check_label_range(lab: torch.Tensor | None, k: int) -> None:
    if lab is None:
        return
    if int(lab.max()) >= k:
        raise MeasureError(f"labels go up to {int(lab.max())} but the model has {k} classes")
    if int(lab.min()) < 0:
        raise MeasureError(f"labels must be >= 0, found {int(lab.min())}")


def check_finite_results(per: dict[str, torch.Tensor], n: int) -> None:
    """Raise when any metric has a NaN/inf per-sample value (all metrics are listed)."""
    msgs = []
    for m, v in per.items():
        bad = ~torch.isfinite(v).all(1)
        if bool(bad.any()):
            cause = _cause(m)
            msgs.append(f"{m}: {int(bad.sum())} of {n} samples (first indices {_first(bad)}; "
                        f"non-finite {cause})")
    if msgs:
        raise MeasureError("NaN/inf values, not returned as numbers: " + "; ".join(msgs)
                           + ". Check the model (weights, operations like sqrt/log at 0) "
                             "and the inputs")
