"""Saliency invariance similarity (SI, M23 eq. 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from invlab.attribution import DEFAULT_MEMORY_BUDGET, boundary_for_group, integrated_gradients
from invlab.attribution import saliency_map as _saliency_map
from invlab.metrics.transform import resolve_members, resolve_transform

__all__ = ["saliency_cosine", "saliency_similarity"]


def _invertible(transform: Any) -> Any:
    t = resolve_transform(transform)
    if not t.is_invertible:
        t.require(invertible=True, purpose="saliency similarity")
        raise ValueError(f"saliency similarity needs an invertible transform; {t.name} is not")
    return t


def saliency_cosine(
    maps: torch.Tensor, maps_t: torch.Tensor, group: Any, elements: Sequence[Any]
) -> torch.Tensor:
    r"""``cos(M·m(x), M·T⁻¹m(T·x))`` per sample and member from precomputed maps.

    ``M`` is the transform's validity mask (ones for an exact group, where this is
    ``cos(m(x), g⁻¹·m(g·x))``).

    Args:
        maps: ``m(x)``, ``[N, H, W]``.
        maps_t: ``m(T·x)`` for each member, ``[k, N, H, W]`` (order of ``elements``).
        group: an invertible transform (spec, group or TransformSet).
        elements: the ``k`` members ``T``.

    Returns:
        ``[N, k]``. A map that is identically zero has cosine 0; NaN where a map is NaN.
    """
    t = _invertible(group)
    if maps_t.shape[0] != len(elements) or maps_t.shape[1:] != maps.shape:
        raise ValueError(
            f"maps_t must be [k={len(elements)}, *maps.shape={tuple(maps.shape)}], "
            f"found {tuple(maps_t.shape)}"
        )
    back = t.invert_all(maps_t.unsqueeze(2), list(elements)).squeeze(2)  # [k, N, H, W]
    h, w = maps.shape[-2:]
    mask = t.validity_masks(list(elements), h, w).to(maps).reshape(len(elements), 1, h * w)
    return F.cosine_similarity(
        maps.flatten(1).unsqueeze(0) * mask, back.flatten(2) * mask, dim=-1, eps=1e-12
    ).T


def saliency_similarity(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    group: Any,
    elements: Sequence[Any] | None = None,
    labels: torch.Tensor | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    baselines: float | torch.Tensor = 0.0,
    ratio: float = 0.9,
    kernel_size: int = 3,
    sigma: float = 1.0,
    boundary: str | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    on_chunk: Callable[[int], None] | None = None,
) -> torch.Tensor:
    r"""Saliency invariance similarity (SI, M23 eq. 3), per sample and transform member.

    .. math:: \mathrm{SI}(x, T) = \cos\big(M \odot m(x),\ M \odot T^{-1} m(T x)\big)

    ``m`` is :func:`invlab.attribution.saliency_map` of the integrated gradients of the
    target logit (target = ``labels`` if given, else the prediction on ``x``; the same class
    for ``x`` and every ``T·x``); ``M`` is the transform's validity mask (the pixels its
    inverse recovers; all ones for an exact group, where ``T⁻¹ = g⁻¹``). ``x`` and all
    ``T·x`` are stacked into one batch of ``(k+1)·N`` images and their integrated gradients
    are computed together (steps × images in chunks bounded by ``memory_budget_bytes``). A
    tensor baseline is transformed with the image (``T·b`` for ``T·x``).

    Args:
        forward: model (or callable) ``[N, C, H, W] -> [N, K]``, in eval mode.
        images: ``[N, C, H, W]``.
        group: an invertible transform: group name (``r4``, ``t3``, ``flip``, ``d4``), spec
            (e.g. ``rotate:30``) or object.
        elements: the ``k`` members; default: the non-identity ones.
        labels: ``[N]`` targets; default: ``argmax forward(images)``.
        n_steps, method: integrated-gradients quadrature (Captum's names).
        baselines: scalar or ``[C, H, W]`` / ``[N, C, H, W]`` baseline.
        ratio, kernel_size, sigma: saliency-map threshold and smoothing.
        boundary: smoothing padding; default :func:`invlab.attribution.boundary_for_group`.
        memory_budget_bytes: chunk memory bound for integrated gradients.
        on_chunk: called with the number of interpolated rows after each IG chunk.

    Returns:
        ``[N, k]`` in ``[−1, 1]``; 1 for a model invariant by construction; NaN for a sample
        whose attributions (on ``x`` or on some ``T·x``) are NaN/inf.
    """
    t = _invertible(group)
    t.check_input(images)
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], found shape {tuple(images.shape)}")
    els = resolve_members(t, elements, False)
    n, k = images.shape[0], len(els)
    x = images.detach()
    if labels is None:
        with torch.no_grad():
            target = forward(x).argmax(-1)
    else:
        target = torch.as_tensor(labels, dtype=torch.long, device=x.device)
        if target.shape != (n,):
            raise ValueError(f"labels must have shape [{n}], found {tuple(target.shape)}")
    stacked = torch.cat([x, t.apply_all(x, els).flatten(0, 1)]) if k else x
    if isinstance(baselines, torch.Tensor):
        b = baselines.to(x.dtype).expand_as(x)
        baselines = torch.cat([b, t.apply_all(b, els).flatten(0, 1)]) if k else b
    attr = integrated_gradients(
        forward, stacked, target=target.repeat(k + 1), baselines=baselines, n_steps=n_steps,
        method=method, memory_budget_bytes=memory_budget_bytes, on_chunk=on_chunk,
    )
    assert isinstance(attr, torch.Tensor)
    bad = ~torch.isfinite(attr).flatten(1).all(1).view(k + 1, n)  # [k+1, N]
    maps = _saliency_map(
        attr, ratio=ratio, kernel_size=kernel_size, sigma=sigma,
        boundary=boundary or boundary_for_group(t),
    )
    cos = saliency_cosine(maps[:n], maps[n:].reshape(k, n, *maps.shape[1:]), t, els)
    bad_pair = (bad[0].unsqueeze(0) | bad[1:]).T  # [N, k]
    return torch.where(bad_pair, torch.full_like(cos, float("nan")), cos)
