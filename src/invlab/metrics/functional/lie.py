r"""The Lie derivative's per-sample formula (the functional core of :mod:`invlab.metrics.lie`).

:func:`lie_values` evaluates, for a batch ``x`` and a continuous family ``T_m`` with
``m₀`` (in the family's own unit), either the central difference
``‖f(T_{m₀+ε}x) − f(T_{m₀−ε}x)‖₂ / 2ε`` (``method="central"``) or Gruver et al.'s
forward-mode derivative of the probabilities, mean absolute value over classes
(``method="jvp"``); ``f`` is a ``forward`` callable (the logits, or a layer's flattened
output for ``central``). :func:`invlab.metrics.lie.lie_derivative` validates the inputs and
batches them; :func:`invlab.metrics.measure` calls the same function per chunk
(``metrics=["lie_derivative"]``). The formulas, units and the bilinear warp's one-sided
derivative at the pixel grid are documented in :mod:`invlab.metrics.lie`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from invlab.metrics.errors import MeasureError
from invlab.transforms import sampling

__all__ = ["METHODS", "bilinear_warp", "lie_values"]

METHODS = ("central", "jvp")
"""``central``: the central difference; ``jvp``: Gruver et al.'s forward-mode derivative."""

Forward = Callable[[torch.Tensor], torch.Tensor]
"""``[R, C, H, W] -> [R, ...]``: the model's logits (or a layer's output), checked."""


def _op(t: Any) -> Any:
    """The family's op (:class:`invlab.transforms.ops.Op`) when it has one, else None."""
    op = getattr(t, "op", None)
    return op if op is not None and hasattr(op, "check") else None


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


def _prob_jvp(forward: Forward, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``∂ softmax(forward(y + s·v)) / ∂s`` at 0, ``[N, K]``: ``torch.func.jvp``, or two
    reverse passes (the double-vjp trick of Gruver et al.'s ``jvp``) when an op lacks
    forward AD. ``forward`` returns the (checked) logits ``[N, K]``."""
    def probs(z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(forward(z), dim=-1)

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


def _central(forward: Forward, t: Any, x: torch.Tensor, m0: float, eps: float) -> torch.Tensor:
    """``‖f(T_{m₀+ε}x) − f(T_{m₀−ε}x)‖₂ / 2ε`` ``[n]``: both sides built by one batched
    ``apply_all`` and evaluated in one forward pass."""
    with torch.no_grad():
        try:
            y = _apply_pm(t, x, [m0 + eps, m0 - eps]).flatten(0, 1)
        except ValueError as e:
            raise MeasureError(f"lie_derivative of {t.name} at {m0} ± {eps}: {e}; "
                               f"pass at= a magnitude with valid neighbours") from e
        z = forward(y).reshape(2, x.shape[0], -1)
        return (z[0] - z[1]).norm(dim=-1) / (2 * eps)


def lie_values(forward: Forward, t: Any, x: torch.Tensor, m0: float, eps: float = 1e-2,
               method: str = "central") -> torch.Tensor:
    r"""Per-sample Lie derivative ``[n]`` of ``forward`` along the family ``t`` at ``m₀``.

    Args:
        forward: the model's checked logits ``[R, K]`` (or, for ``central``, a layer's
            flattened output ``[R, D]``) of images ``[R, C, H, W]``; eval mode.
        t: a continuous family (a TransformSet with ``apply_all``, or its op).
        x: a batch ``[n, C, H, W]`` (pixel space; ``forward`` normalizes).
        m0: the magnitude to differentiate at (the family's unit).
        eps: the central difference's half-width (unused by ``jvp``).
        method: ``central`` — :math:`\|f(T_{m_0+\varepsilon}x) - f(T_{m_0-\varepsilon}x)
            \|_2 / 2\varepsilon`; ``jvp`` — :math:`\frac1K\sum_c|\partial_m
            \mathrm{softmax}(f(T_m x))_c|_{m_0}` by forward-mode AD.

    Returns:
        ``[n]`` non-negative values in ``x``'s dtype, per unit of magnitude.
    """
    if method == "jvp":
        y, v = _image_jvp(t, x, float(m0))
        return _prob_jvp(forward, y.detach(), v.detach()).abs().mean(-1).detach()
    return _central(forward, t, x, m0, eps)
