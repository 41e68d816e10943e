"""Input sensitivity (M23 §4.4): spectral norm of the per-sample input-output Jacobian."""

from __future__ import annotations

from collections.abc import Callable

import torch

from invlab.attribution.integrated_gradients import (
    DEFAULT_MEMORY_BUDGET,
    _bytes_per_row,
    _weighted_grad,
)

__all__ = ["jacobian_spectral_norm"]


def _exact(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, k: int,
           rows: int) -> torch.Tensor:
    """σ_max from the full Jacobian ``[N, K, D]``: one batched backward per chunk, the ``K``
    class gradients stacked along the batch (``x`` repeated ``K`` times)."""
    n = x.shape[0]
    per = max(1, rows // k)
    out = x.new_empty(n)
    with torch.enable_grad():
        for a in range(0, n, per):
            xb = x[a:a + per]
            m = xb.shape[0]
            rep = xb.repeat(k, *([1] * (x.dim() - 1))).requires_grad_(True)  # class-major
            y = forward(rep).view(k, m, k)
            sel = torch.diagonal(y, dim1=0, dim2=2)  # [m, K]: y[c, i, c]
            grad = _weighted_grad(sel.sum(), rep)  # zero if y does not depend on x
            jac = grad.reshape(k, m, -1).transpose(0, 1)  # [m, K, D]
            bad = ~torch.isfinite(jac).flatten(1).all(1)  # an SVD of NaN would raise
            jac = torch.where(bad.view(-1, 1, 1), torch.zeros_like(jac), jac)
            sig = torch.linalg.matrix_norm(jac, ord=2)
            out[a:a + m] = torch.where(bad, torch.full_like(sig, float("nan")), sig)
    return out


def _power(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_iter: int,
           generator: torch.Generator | None, rows: int) -> torch.Tensor:
    """σ_max by power iteration on ``JᵀJ`` with ``torch.func`` jvp/vjp, batched over samples."""
    n = x.shape[0]
    out = x.new_empty(n)
    per = max(1, rows)
    for a in range(0, n, per):
        xb = x[a:a + per]
        m = xb.shape[0]
        v = torch.randn(xb.shape, generator=generator, dtype=xb.dtype).to(xb.device)
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (x.dim() - 1)))
        with torch.enable_grad():
            _, vjp_fn = torch.func.vjp(forward, xb)
            sigma = xb.new_zeros(m)
            for _ in range(n_iter):
                _, u = torch.func.jvp(forward, (xb,), (v,))
                sigma = u.norm(dim=1)
                (w,) = vjp_fn(u)
                w = w.detach()
                v = w / w.flatten(1).norm(dim=1).clamp_min(1e-30).view(
                    -1, *([1] * (x.dim() - 1)))
            _, u = torch.func.jvp(forward, (xb,), (v,))
            sigma = u.norm(dim=1)
        out[a:a + m] = sigma.detach()
    return out


def jacobian_spectral_norm(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    exact_max_classes: int = 32,
    n_iter: int = 100,
    generator: torch.Generator | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor:
    r"""Per-sample largest singular value of the Jacobian of the logits w.r.t. the input.

    .. math:: \sigma_{\max}(J_i),\qquad J_i = \frac{\partial f(x_i)}{\partial x_i}
        \in \mathbb{R}^{K \times (C H W)}

    With ``K ≤ exact_max_classes`` the exact Jacobian is built (one backward per class, all
    classes and samples of a chunk in one batched pass) and
    ``torch.linalg.matrix_norm(J, ord=2)`` is taken; beyond, ``n_iter`` steps of power
    iteration on ``JᵀJ`` (``torch.func.jvp``/``vjp``), batched over samples.

    Args:
        model: callable ``[N, C, H, W] -> [N, K]`` with independent rows (eval mode).
        x: ``[N, C, H, W]`` (any ``[N, *D]``).
        exact_max_classes: largest ``K`` for the exact method.
        n_iter: power-iteration steps (only for ``K > exact_max_classes``).
        generator: seeds the power iteration's start vectors.
        memory_budget_bytes: chunk memory bound.

    Returns:
        ``[N]`` non-negative; NaN for a sample whose Jacobian is NaN/inf (never a
        ``torch.linalg`` error).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor [N, ...]")
    x = x.detach()
    if x.shape[0] == 0:
        return x.new_zeros(0)
    with torch.no_grad():
        k = model(x[:1]).shape[-1]
    rows = max(1, int(memory_budget_bytes // max(_bytes_per_row(model, x), 1)))
    if k <= exact_max_classes:
        return _exact(model, x, k, rows)
    return _power(model, x, n_iter, generator, rows)
