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

from typing import Any

import torch
from torch import nn

from invlab.metrics import checks
from invlab.metrics.errors import MeasureError
from invlab.metrics.features import FeatureCapture, resolve_layers
from invlab.metrics.orbit import Normalized, chunks, normalizer
from invlab.metrics.transform import resolve_transform
from invlab.transforms import sampling

__all__ = ["METHODS", "bilinear_warp", "lie_derivative"]

METHODS = ("central", "jvp")


def _forward(net: Any, cap: FeatureCapture | None, layer: str | None,
             x: torch.Tensor) -> torch.Tensor:
    if cap is None:
        return checks.check_logits(net(x), x.shape[0])
    if cap.uses_forward_features:
        return cap.forward_features(x)
    with cap.hooks():
        net(x)
    return cap.out.pop(layer)  # type: ignore[arg-type]


def _op(t: Any) -> Any:
    """The family's op (:class:`invlab.transforms.ops.Op`) when it has one, else None."""
    op = getattr(t, "op", None)
    return op if op is not None and hasattr(op, "check") else None


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


def _apply_pm(t: Any, x: torch.Tensor, ms: list[float]) -> torch.Tensor:
    """``T_m x`` for magnitudes in the op's own unit (pixels for translate, even for the
    family whose grid is in fractions of the canvas): ``[k, N, C, H, W]``."""
    op = _op(t)
    if op is not None:
        op.check_input(t.name, x)
        return op.apply_all(x, torch.tensor(ms, dtype=torch.float64), False)
    return t.apply_all(x, ms)


def _positions(op: Any, m: torch.Tensor, height: int, width: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling positions ``(ix, iy)`` ``[H, W]`` in pixel indices (float64) of the warp at
    magnitude ``m`` (0-dim, op unit): the input is read at ``A⁻¹(q − b)`` for output pixel
    ``q`` (:mod:`invlab.transforms.sampling`); differentiable in ``m``."""

    fw = op.geometric(m.reshape(1).to(torch.float64), height, width)
    theta = sampling.sampling_theta(fw, height, width, torch.float64)
    grid = sampling.affine_grid(theta, height, width, torch.float64)[0]  # [H, W, 2]
    ix = ((grid[..., 0] + 1) * width - 1) / 2
    iy = ((grid[..., 1] + 1) * height - 1) / 2
    return ix, iy


def bilinear_warp(x: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``x [N, C, H, W]`` at pixel positions ``ix, iy`` ``[H', W']``
    with zero fill, differentiable (forward and reverse mode) in the positions.

    Equal to ``F.grid_sample(..., mode="bilinear", padding_mode="zeros",
    align_corners=False)`` at the same positions. A position within ``1e-6`` of a pixel
    index is snapped to it before ``floor``, so at the pixel grid the derivative is
    deterministically the one towards the next pixel (``x[j+1] − x[j]``), as grid_sample's
    with exact arithmetic.
    """
    h, w = x.shape[-2:]

    def base(p: torch.Tensor) -> torch.Tensor:
        p = p.detach()
        r = p.round()
        return torch.floor(torch.where((p - r).abs() < 1e-6, r, p))

    fx, fy = base(ix), base(iy)
    ax, ay = ix - fx, iy - fy
    x0, y0 = fx.long(), fy.long()
    flat = x.flatten(-2)
    out = None
    for dy, wy in ((0, 1 - ay), (1, ay)):
        for dx, wx in ((0, 1 - ax), (1, ax)):
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(-1)
            val = flat.index_select(-1, idx).reshape(*x.shape[:-2], *ix.shape)
            term = val * (wx * wy * valid).to(x.dtype)
            out = term if out is None else out + term
    return out  # type: ignore[return-value]


def _image_jvp(t: Any, x: torch.Tensor, m0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T_{m₀} x, ∂/∂m T_m x |_{m₀})``, each ``[N, C, H, W]``, by forward-mode AD."""
    op = _op(t)
    h, w = x.shape[-2:]
    m = torch.tensor(float(m0), dtype=torch.float64)
    one = torch.ones((), dtype=torch.float64)
    if op is not None and op.geometric is not None:
        def warp(mm: torch.Tensor) -> torch.Tensor:
            return bilinear_warp(x, *_positions(op, mm, h, w))
        return torch.func.jvp(warp, (m,), (one,))
    if op is not None and op.pixel is not None and not op.seeded and not op.integer:
        def pix(mm: torch.Tensor) -> torch.Tensor:
            return op.pixel(x, mm.to(x.dtype).view(1, 1, 1, 1))
        try:
            return torch.func.jvp(pix, (m,), (one,))
        except (RuntimeError, NotImplementedError) as e:
            raise MeasureError(f"lie_derivative(method='jvp'): {t.name} cannot be "
                               f"differentiated in its magnitude ({e}); use "
                               f"method='central'") from e
    raise MeasureError(f"lie_derivative(method='jvp') needs a geometric family (rotate, "
                       f"translate_x, ...) or a differentiable photometric one (brightness, "
                       f"contrast); {t.name} has none: use method='central'")


def _prob_jvp(net: Any, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``∂ softmax(net(y + s·v)) / ∂s`` at 0, ``[N, K]``: ``torch.func.jvp``, or two reverse
    passes (the double-vjp trick of Gruver et al.'s ``jvp``) when an op lacks forward AD."""
    def probs(z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(checks.check_logits(net(z), z.shape[0]), dim=-1)

    try:
        return torch.func.jvp(probs, (y,), (v,))[1]
    except (RuntimeError, NotImplementedError):
        with torch.enable_grad():
            yy = y.detach().requires_grad_(True)
            p = probs(yy)
            u = torch.zeros_like(p, requires_grad=True)
            (g,) = torch.autograd.grad(p, yy, u, create_graph=True)
            (jv,) = torch.autograd.grad(g, u, v)
        return jv.detach()


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
    if method not in METHODS:
        raise MeasureError(f"lie_derivative: unknown method {method!r}; valid: "
                           f"{', '.join(METHODS)}")
    t = resolve_transform(family)
    m0 = getattr(t, "identity", None) if at is None else at
    if isinstance(m0, bool) or not isinstance(m0, (int, float)) or getattr(t, "kind", "") == "group":
        raise MeasureError(f"lie_derivative needs a continuous family with a numeric identity "
                           f"magnitude; {t.name} ({getattr(t, 'kind', '?')}) has identity {m0!r}")
    if method == "jvp" and layer is not None:
        raise MeasureError("lie_derivative(method='jvp') is defined on the probabilities "
                           "(Gruver et al.); drop layer= or use method='central'")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise MeasureError(f"eps must be > 0 (in the family's unit: degrees, pixels, ...), "
                           f"found {eps!r}")
    images = checks.check_images(model, images)
    checks.check_finite_images(images)
    checks.check_finite_weights(model, ["lie_derivative"], images.shape[0])
    if method == "central":
        _check_magnitudes(t, float(m0), float(eps), images)
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
            x = images[a:b]
            if method == "jvp":
                y, v = _image_jvp(t, x, float(m0))
                out[a:b] = _prob_jvp(net, y.detach(), v.detach()).abs().mean(-1).detach()
                continue
            with torch.no_grad():
                try:
                    y = _apply_pm(t, x, [m0 + eps, m0 - eps]).flatten(0, 1)
                except ValueError as e:
                    raise MeasureError(f"lie_derivative of {t.name} at {m0} ± {eps}: {e}; "
                                       f"pass at= a magnitude with valid neighbours") from e
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
