"""Lie derivative of a model along a continuous transformation family (central differences).

For a family ``T_m`` with identity magnitude ``m₀`` (0 degrees, factor 1, ...):

.. math:: L_i = \\frac{\\| f(T_{m_0+\\varepsilon} x_i) - f(T_{m_0-\\varepsilon} x_i) \\|_2}
    {2 \\varepsilon} \\approx \\Big\\| \\frac{\\partial}{\\partial m} f(T_m x_i)
    \\Big|_{m=m_0} \\Big\\|_2

on the logits, or on the flattened output of a named layer. Both ``T_{±ε} x`` of a chunk are
built by one batched ``apply_all`` and evaluated in one forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from invlab.metrics import checks
from invlab.metrics.errors import MeasureError
from invlab.metrics.features import FeatureCapture, resolve_layers
from invlab.metrics.orbit import Normalized, chunks, normalizer
from invlab.metrics.transform import resolve_transform

__all__ = ["lie_derivative"]


def _forward(net: Any, cap: FeatureCapture | None, layer: str | None,
             x: torch.Tensor) -> torch.Tensor:
    if cap is None:
        return checks.check_logits(net(x), x.shape[0])
    if cap.uses_forward_features:
        return cap.forward_features(x)
    with cap.hooks():
        net(x)
    return cap.out.pop(layer)  # type: ignore[arg-type]


@torch.no_grad()
def lie_derivative(
    model: Any,
    images: torch.Tensor,
    family: Any,
    eps: float = 1e-2,
    layer: str | None = None,
    normalization: dict[str, Any] | None = None,
    batch_size: int = 1024,
    at: float | None = None,
) -> torch.Tensor:
    r"""Per-sample norm of the derivative of ``f(T_m x)`` in the magnitude, ``[N]``.

    Args:
        model: ``[N, C, H, W] -> [N, K]`` (eval mode is set and restored).
        images: ``[N, C, H, W]`` (pixel space with ``normalization``).
        family: a continuous family spec (``"rotate"``, ``"brightness_up"``, ...) or
            object with ``identity`` (the identity magnitude) and ``apply_all``.
        eps: half-width of the central difference, in the family's magnitude unit (degrees,
            pixels, factor).
        layer: a submodule name (``"penultimate"`` for the default features); None: logits.
        normalization: per-channel ``mean``/``std`` applied after the transform.
        batch_size: images per forward (each runs ``2·batch_size`` rows).
        at: the magnitude ``m₀`` to differentiate at (default the identity); e.g.
            ``brightness_up`` only has factors ≥ 1, so differentiate it at 1.5.

    Returns:
        ``[N]`` non-negative.

    Raises:
        MeasureError: a family without a numeric identity magnitude, bad images, or NaN/inf
            outputs (naming the number of samples).
    """
    t = resolve_transform(family)
    m0 = getattr(t, "identity", None) if at is None else at
    if isinstance(m0, bool) or not isinstance(m0, (int, float)) or getattr(t, "kind", "") == "group":
        raise MeasureError(f"lie_derivative needs a continuous family with a numeric identity "
                           f"magnitude; {t.name} ({getattr(t, 'kind', '?')}) has identity {m0!r}")
    if not eps > 0:
        raise MeasureError(f"eps must be > 0, found {eps}")
    images = checks.check_images(model, images)
    checks.check_finite_images(images)
    checks.check_finite_weights(model, ["lie_derivative"], images.shape[0])
    norm = normalizer(normalization, images.shape[1], images.dtype, images.device)
    net = model if norm is None else Normalized(model, *norm)
    cap = None
    if layer is not None:
        (layer,) = resolve_layers(model, [layer])
        cap = FeatureCapture(model, [layer], pre=None if norm is None else net.normalize)
    was = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    out = images.new_empty(images.shape[0])
    try:
        for a, b in chunks(images.shape[0], batch_size):
            try:
                y = t.apply_all(images[a:b], [m0 + eps, m0 - eps]).flatten(0, 1)
            except ValueError as e:
                raise MeasureError(f"lie_derivative of {t.name} at {m0} ± {eps}: {e}; pass "
                                   f"at= a magnitude with valid neighbours") from e
            z = _forward(net, cap, layer, y).reshape(2, b - a, -1)
            out[a:b] = (z[0] - z[1]).norm(dim=-1) / (2 * eps)
    finally:
        if was is not None:
            model.train(was)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        raise MeasureError(f"lie_derivative: NaN/inf outputs for {int(bad.sum())} of "
                           f"{out.numel()} samples")
    return out
