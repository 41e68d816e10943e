"""Saliency invariance similarity (SI, M23 eq. 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from invlab.attribution import DEFAULT_MEMORY_BUDGET, boundary_for_group, integrated_gradients
from invlab.attribution import saliency_map as _saliency_map
from invlab.groups import Group, create_group

__all__ = ["saliency_cosine", "saliency_similarity"]


def saliency_cosine(
    maps: torch.Tensor, maps_t: torch.Tensor, group: str | Group, elements: Sequence[int]
) -> torch.Tensor:
    r"""``cos(m(x), g⁻¹·m(g·x))`` per sample and element from precomputed maps.

    Args:
        maps: ``m(x)``, ``[N, H, W]``.
        maps_t: ``m(g·x)`` for each element, ``[k, N, H, W]`` (order of ``elements``).
        group: the group (or its name).
        elements: the ``k`` elements ``g``.

    Returns:
        ``[N, k]``. A map that is identically zero has cosine 0.
    """
    g = create_group(group)
    if maps_t.shape[0] != len(elements) or maps_t.shape[1:] != maps.shape:
        raise ValueError(
            f"maps_t must be [k={len(elements)}, *maps.shape={tuple(maps.shape)}], "
            f"found {tuple(maps_t.shape)}"
        )
    back = torch.stack([g.act(maps_t[j], g.inverse(e)) for j, e in enumerate(elements)])
    return F.cosine_similarity(
        maps.flatten(1).unsqueeze(0), back.flatten(2), dim=-1, eps=1e-12
    ).T


def saliency_similarity(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    group: str | Group,
    elements: Sequence[int] | None = None,
    labels: torch.Tensor | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    baselines: float | torch.Tensor = 0.0,
    ratio: float = 0.9,
    kernel_size: int = 3,
    sigma: float = 1.0,
    boundary: str | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor:
    r"""Saliency invariance similarity (SI, M23 eq. 3), per sample and group element.

    .. math:: \mathrm{SI}(x, g) = \cos\big(m(x),\ g^{-1}\cdot m(g\cdot x)\big)

    ``m`` is :func:`invlab.attribution.saliency_map` of the integrated gradients of the
    target logit (target = ``labels`` if given, else the prediction on ``x``; the same class
    for ``x`` and every ``g·x``). ``x`` and all ``g·x`` are stacked into one batch of
    ``(k+1)·N`` images and their integrated gradients are computed together (steps × images
    in chunks bounded by ``memory_budget_bytes``). A tensor baseline is transformed with the
    image (``g·b`` for ``g·x``).

    Args:
        forward: model (or callable) ``[N, C, H, W] -> [N, K]``, in eval mode.
        images: ``[N, C, H, W]``.
        group: group or name (``r4``, ``t3``, ``flip``, ``d4``).
        elements: the ``k`` elements; default: the non-identity ones.
        labels: ``[N]`` targets; default: ``argmax forward(images)``.
        n_steps, method: integrated-gradients quadrature (Captum's names).
        baselines: scalar or ``[C, H, W]`` / ``[N, C, H, W]`` baseline.
        ratio, kernel_size, sigma: saliency-map threshold and smoothing.
        boundary: smoothing padding; default :func:`invlab.attribution.boundary_for_group`.
        memory_budget_bytes: chunk memory bound for integrated gradients.

    Returns:
        ``[N, k]`` in ``[−1, 1]``; 1 for a model invariant by construction.
    """
    g = create_group(group)
    g.check_input(images)
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], found shape {tuple(images.shape)}")
    els = list(g.non_identity if elements is None else [g.check_element(e) for e in elements])
    n, k = images.shape[0], len(els)
    x = images.detach()
    if labels is None:
        with torch.no_grad():
            target = forward(x).argmax(-1)
    else:
        target = torch.as_tensor(labels, dtype=torch.long, device=x.device)
        if target.shape != (n,):
            raise ValueError(f"labels must have shape [{n}], found {tuple(target.shape)}")
    stacked = torch.cat([x, g.orbit(x, els).flatten(0, 1)]) if k else x
    if isinstance(baselines, torch.Tensor):
        b = baselines.to(x.dtype).expand_as(x)
        baselines = torch.cat([b, g.orbit(b, els).flatten(0, 1)]) if k else b
    attr = integrated_gradients(
        forward, stacked, target=target.repeat(k + 1), baselines=baselines, n_steps=n_steps,
        method=method, memory_budget_bytes=memory_budget_bytes,
    )
    assert isinstance(attr, torch.Tensor)
    maps = _saliency_map(
        attr, ratio=ratio, kernel_size=kernel_size, sigma=sigma,
        boundary=boundary or boundary_for_group(g),
    )
    return saliency_cosine(maps[:n], maps[n:].reshape(k, n, *maps.shape[1:]), g, els)
