"""Representation invariance (Bouchacourt et al. 2021) with a derangement baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DISTANCES", "derangement", "equivariance_alignment", "representation_invariance",
           "ri_distances", "shuffle_columns"]

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


def shuffle_columns(d: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices ``[..., N, D]`` that shuffle each feature (column) of ``d [..., N, D]``
    independently over the ``N`` samples (B21's baseline ``shuffle_d_matrix``):
    ``d.gather(-2, idx)[..., i, j] = d[..., idx[..., i, j], j]``."""
    r = torch.rand(d.shape, generator=generator, dtype=torch.float64)
    return r.argsort(dim=-2).to(d.device)


def equivariance_alignment(
    z: torch.Tensor,
    z_t: torch.Tensor,
    perm: torch.Tensor | None = None,
    col_perm: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""B21's alignment measure of equivariance (``embedding_alignments.py``), per sample.

    With the displacement :math:`d_i = z_i - z^t_i`, the baseline :math:`b` (each feature
    of :math:`d` shuffled independently over the samples) and a permutation :math:`\pi`:

    .. math:: \mathrm{align}_i = \big(1 - \cos(b_i, b_{\pi(i)})\big)
        - \big(1 - \cos(d_i, d_{\pi(i)})\big)

    (``cos`` is ``F.cosine_similarity`` with its default ``eps=1e-8``, as their code). It
    is > 0 when the transformation moves the samples' embeddings in more consistent
    directions than chance (equivariance as a shared direction), ≈ 0 when not, in
    ``[-2, 2]``. Bouchacourt et al. summarize it by percentiles (median).

    Args:
        z: ``φ(x)``, ``[..., N, D]``.
        z_t: ``φ(T x)``, same shape (leading dims, e.g. members ``[k, N, D]``, share ``π``
            and get their own column shuffles).
        perm: ``π`` as ``[N]`` indices (their code: ``torch.randperm``; invlab's engine
            passes the chunk's derangement, shared with representation invariance); drawn
            with :func:`derangement` and ``generator`` when None.
        col_perm: ``[..., N, D]`` column shuffles (:func:`shuffle_columns`); drawn with
            ``generator`` when None.
        generator: seeds ``π`` and the column shuffles.

    Returns:
        ``[..., N]``.
    """
    if z.shape != z_t.shape or z.dim() < 2:
        raise ValueError(
            f"equivariance_alignment: z and z_t must both be [..., N, D] with equal shapes; "
            f"found {tuple(z.shape)} and {tuple(z_t.shape)}")
    n = z.shape[-2]
    d = z - z_t
    if perm is None:
        perm = derangement(n, generator, device=z.device)
    perm = torch.as_tensor(perm, dtype=torch.long, device=z.device)
    if perm.shape != (n,):
        raise ValueError(f"perm must have shape [{n}], found {tuple(perm.shape)}")
    if col_perm is None:
        col_perm = shuffle_columns(d, generator)
    if col_perm.shape != d.shape:
        raise ValueError(f"col_perm must have the shape of z {tuple(d.shape)}, found "
                         f"{tuple(col_perm.shape)}")
    b = d.gather(-2, col_perm.to(device=d.device, dtype=torch.long))
    b_al = 1.0 - F.cosine_similarity(b, b[..., perm, :], dim=-1)
    d_al = 1.0 - F.cosine_similarity(d, d[..., perm, :], dim=-1)
    return b_al - d_al
