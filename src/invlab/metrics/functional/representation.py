"""Representation invariance (Bouchacourt et al. 2021) with a derangement baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DISTANCES", "derangement", "representation_invariance", "ri_distances"]

DISTANCES = ("cosine", "l2")


def derangement(n: int, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """A uniformly random permutation of ``0..n-1`` with no fixed points, ``[n]`` long.

    Rejection sampling (accepts with probability ≈ 1/e per draw), so it is seeded entirely
    by ``generator``.

    Raises:
        ValueError: for ``n < 2`` (no derangement exists).
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 samples, found {n}")
    ar = torch.arange(n)
    while True:
        p = torch.randperm(n, generator=generator)
        if not bool((p == ar).any()):
            return p.to(device) if device is not None else p


def _distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-12)
    if distance == "l2":
        return (a - b).norm(dim=-1)
    raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")


def representation_invariance(
    z: torch.Tensor,
    z_t: torch.Tensor,
    perm: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    distance: str = "cosine",
    eps: float = 1e-12,
) -> torch.Tensor:
    r"""Representation invariance of B21 with a derangement baseline.

    .. math:: \mathrm{inv}_i = 1 - \frac{d(z_i, z^t_i)}{d(z_i, z^t_{\pi(i)})}

    with ``d(a, b) = 1 − cos(a, b)`` (``distance='cosine'``) or ``‖a − b‖₂`` (``'l2'``) and
    ``π`` a derangement of the batch. 1 = unchanged, 0 = as far as another transformed image,
    < 0 = farther.

    Args:
        z: ``φ(x)``, ``[..., N, D]``.
        z_t: ``φ(T x)``, same shape (leading dims, e.g. group elements ``[k, N, D]``,
            share one ``π``).
        perm: ``π`` as ``[N]`` indices; drawn with :func:`derangement` and ``generator``
            when None.
        generator: seeds ``π``.
        distance: ``cosine`` or ``l2``.
        eps: floor of the denominator.

    Returns:
        ``[..., N]``.
    """
    if z.shape != z_t.shape or z.dim() < 2:
        raise ValueError(
            f"representation_invariance: z and z_t must both be [..., N, D] with equal shapes; "
            f"found {tuple(z.shape)} and {tuple(z_t.shape)}"
        )
    n = z.shape[-2]
    if perm is None:
        perm = derangement(n, generator, device=z.device)
    perm = torch.as_tensor(perm, dtype=torch.long, device=z.device)
    if perm.shape != (n,):
        raise ValueError(f"perm must have shape [{n}], found {tuple(perm.shape)}")
    return ri_distances(z, z_t, perm, distance, eps)[2]


def ri_distances(z: torch.Tensor, z_t: torch.Tensor, perm: torch.Tensor, distance: str = "cosine",
                 eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(d_same, d_other, score)``, each ``[..., N]``: :math:`d(z_i, z^t_i)`,
    :math:`d(z_i, z^t_{\pi(i)})` and :math:`1 - d_\text{same} / \max(d_\text{other}, \varepsilon)`
    (the formula of :func:`representation_invariance`, which returns ``score``)."""
    d_same = _distance(z, z_t, distance)
    d_other = _distance(z, z_t[..., perm, :], distance)
    return d_same, d_other, 1.0 - d_same / d_other.clamp_min(eps)
