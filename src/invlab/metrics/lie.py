r"""Lie derivative of a model along a continuous transformation family.

For a family ``T_m`` with identity magnitude ``m₀`` (0 degrees, 0 pixels, factor 1, ...),
in the family's own unit (**degrees** for rotate / shear, **pixels** for translate_x /
translate_y, the factor for zoom / brightness / contrast, ...), two definitions:

``method="central"`` (default): the central difference on the logits (or the flattened
output of a named layer), its L2 norm

.. math:: L_i = \frac{\| f(T_{m_0+\varepsilon} x_i) - f(T_{m_0-\varepsilon} x_i) \|_2}
    {2 \varepsilon}

Both ``T_{±ε} x`` of a chunk are built by one batched ``apply_all`` and evaluated in one
forward pass.

``method="jvp"``: Gruver et al. (2023)'s Lie derivative proper — the exact derivative
(forward-mode, ``torch.func.jvp``) of the resampled image at ``m₀`` pushed through the
model, on the **probabilities**, mean absolute value over the ``K`` classes:

.. math:: L_i = \frac{1}{K} \sum_c \Big| \frac{\partial}{\partial m}
    \mathrm{softmax}(f(T_m x_i))_c \Big|_{m=m_0} \Big|

For geometric families the resampling is invlab's bilinear warp (zero fill,
``align_corners=False``) written out so that it can be differentiated in ``m``; at a
sampling point exactly on the pixel grid (every pixel at ``m = m₀`` for a translation) the
derivative of bilinear interpolation is one-sided, and, as ``torch.nn.functional.grid_sample``
and Gruver et al.'s own ``grid_sample``, it takes the cell at ``floor`` (the difference
towards the next pixel). The central difference instead averages both sides, so the two
differ by the kink of bilinear interpolation at the grid (see ``docs/howto/measures.md``
for measured numbers). Units: per degree / per pixel (Gruver et al. differentiate in
radians and in fractions of the half-width: multiply by ``180/π`` for rotate, by
``(W−1)/2`` for translate to compare).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn

from invlab.metrics import checks
from invlab.metrics.errors import MeasureError
from invlab.metrics.features import FeatureCapture, resolve_layers
from invlab.metrics.functional.lie import METHODS, Forward, _op, bilinear_warp, lie_values
from invlab.metrics.functional.lie import _image_jvp as _image_jvp  # re-exported (tests)
from invlab.metrics.functional.lie import _positions as _positions  # re-exported (tests)
from invlab.metrics.orbit import Normalized, chunks, normalizer
from invlab.metrics.transform import resolve_transform

__all__ = ["METHODS", "bilinear_warp", "check_family", "check_in_measure", "lie_derivative",
           "lie_forward", "lie_values"]


def _forward(net: Any, cap: FeatureCapture | None, layer: str | None,
             x: torch.Tensor) -> torch.Tensor:
    if cap is None:
        return checks.check_logits(net(x), x.shape[0])
    if cap.uses_forward_features:
        return cap.forward_features(x)
    with cap.hooks():
        net(x)
    return cap.out.pop(layer)  # type: ignore[arg-type]


def lie_forward(net: Any, model: Any, layer: str | None) -> Forward:
    """The function the Lie derivative differentiates: ``net``'s checked logits, or (with
    ``layer``) the flattened output of ``model``'s submodule ``layer`` captured during
    ``net``'s forward (``net`` is ``model`` or :class:`~invlab.metrics.orbit.Normalized`
    around it, whose normalization runs first)."""
    if layer is None:
        return partial(_forward, net, None, None)
    (name,) = resolve_layers(model, [layer])
    pre = net.normalize if isinstance(net, Normalized) else None
    return partial(_forward, net, FeatureCapture(model, [name], pre=pre), name)


def _check_magnitudes(t: Any, m0: float, eps: float, images: torch.Tensor) -> None:
    """Refuse ``m₀ ± ε`` outside the family's valid magnitudes or moving the image out of
    the canvas (a translation by at least the canvas width / height)."""
    op = _op(t)
    if op is None:
        return
    h, w = images.shape[-2:]
    for m in (m0 - eps, m0 + eps):
        if getattr(op, "axis", None) is not None:
            extent = w if op.axis == "w" else h
            if abs(m) >= extent:
                raise MeasureError(
                    f"lie_derivative of {t.name}: {m0} ± {eps} px moves the image out of the "
                    f"{h}x{w} canvas (|shift| must be < {extent} px); eps and at are in "
                    f"pixels: pass eps of about 0.01 to 1")
        try:
            op.check(m, False)
        except ValueError as e:
            raise MeasureError(f"lie_derivative of {t.name} at {m0} ± {eps}: {e}; pass at= a "
                               f"magnitude with valid neighbours") from e


def check_family(family: Any, at: float | None = None) -> tuple[Any, float]:
    """``(t, m₀)``: the resolved family and the magnitude to differentiate at (``at``,
    default the family's identity).

    Raises:
        MeasureError: a group, a fixed transform or a family without a numeric identity.
    """
    t = resolve_transform(family)
    m0 = getattr(t, "identity", None) if at is None else at
    if isinstance(m0, bool) or not isinstance(m0, (int, float)) or getattr(t, "kind", "") == "group":
        raise MeasureError(f"lie_derivative needs a continuous family with a numeric identity "
                           f"magnitude; {t.name} ({getattr(t, 'kind', '?')}) has identity {m0!r}")
    return t, m0


def _check_args(family: Any, eps: float, layer: str | None, at: float | None,
                method: str) -> tuple[Any, float]:
    """The argument checks of :func:`lie_derivative`, in its order: ``(t, m₀)``."""
    if method not in METHODS:
        raise MeasureError(f"lie_derivative: unknown method {method!r}; valid: "
                           f"{', '.join(METHODS)}")
    t, m0 = check_family(family, at)
    if method == "jvp" and layer is not None:
        raise MeasureError("lie_derivative(method='jvp') is defined on the probabilities "
                           "(Gruver et al.); drop layer= or use method='central'")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise MeasureError(f"eps must be > 0 (in the family's unit: degrees, pixels, ...), "
                           f"found {eps!r}")
    return t, m0


def check_in_measure(model: Any, t: Any, images: torch.Tensor, eps: float, method: str,
                     at: float | None, layer: str | None) -> None:
    """Before :func:`invlab.metrics.measure` computes ``lie_derivative`` (options already
    validated by :class:`~invlab.metrics.registry.LieDerivative`): ``t`` is a continuous
    family, ``m₀ ± ε`` are valid magnitudes for ``images`` (central) and ``layer`` exists.

    Raises:
        MeasureError: as :func:`lie_derivative` for the same arguments.
    """
    _, m0 = check_family(t, at)
    if method == "central":
        _check_magnitudes(t, float(m0), float(eps), images)
    if layer is not None:
        resolve_layers(model, [layer])


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode inside the block; its previous mode restored after."""
    was = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if was is not None:
            model.train(was)


def lie_derivative(
    model: Any,
    images: torch.Tensor,
    family: Any,
    eps: float = 1e-2,
    layer: str | None = None,
    normalization: dict[str, Any] | None = None,
    batch_size: int = 1024,
    at: float | None = None,
    method: str = "central",
) -> torch.Tensor:
    r"""Per-sample Lie derivative of the model along a family, ``[N]``.

    Args:
        model: ``[N, C, H, W] -> [N, K]`` (eval mode is set and restored).
        images: ``[N, C, H, W]`` (pixel space with ``normalization``).
        family: a continuous family spec (``"rotate"``, ``"translate_x"``,
            ``"brightness_up"``, ...) or object with ``identity`` and ``apply_all``.
        eps: half-width of the central difference, in the family's own unit: **degrees**
            for rotate / shear, **pixels** for translate_x / translate_y (also for the
            ``translate_x`` family, whose grid is in fractions of the width), the factor for
            zoom / brightness / contrast. An ``eps`` that moves the image out of the canvas
            (a shift of at least the width / height) or outside the family's valid
            magnitudes is refused. Unused by ``method="jvp"``.
        layer: a submodule name (``"penultimate"`` for the default features); None: logits
            (``method="central"`` only).
        normalization: per-channel ``mean``/``std`` applied after the transform.
        batch_size: images per forward (each runs ``2·batch_size`` rows).
        at: the magnitude ``m₀`` to differentiate at, in the same unit as ``eps`` (default
            the identity); e.g. ``brightness_up`` only has factors ≥ 1, so differentiate it
            at 1.5.
        method: ``"central"`` — ``‖f(T_{m₀+ε}x) − f(T_{m₀−ε}x)‖₂ / 2ε`` on the logits or
            the layer; ``"jvp"`` — Gruver et al.'s definition and output convention: the
            exact derivative (forward-mode AD) of the resampling at ``m₀`` through the
            model, on the probabilities, mean absolute value over classes.

    Returns:
        ``[N]`` non-negative, per unit of magnitude (per degree, per pixel, ...).

    Raises:
        MeasureError: a family without a numeric identity magnitude, an unknown method, an
            ``eps`` out of range, bad images, or NaN/inf outputs (naming the number of
            samples).
    """
    t, m0 = _check_args(family, eps, layer, at, method)
    images = checks.check_images(model, images)
    checks.check_finite_images(images)
    checks.check_finite_weights(model, ["lie_derivative"], images.shape[0])
    if method == "central":
        _check_magnitudes(t, float(m0), float(eps), images)
    norm = normalizer(normalization, images.shape[1], images.dtype, images.device)
    net = model if norm is None else Normalized(model, *norm)
    forward = lie_forward(net, model, layer)
    out = images.new_empty(images.shape[0])
    with _eval_mode(model):
        for a, b in chunks(images.shape[0], batch_size):
            out[a:b] = lie_values(forward, t, images[a:b], m0, eps, method)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        raise MeasureError(f"lie_derivative: NaN/inf outputs for {int(bad.sum())} of "
                           f"{out.numel()} samples")
    return out
