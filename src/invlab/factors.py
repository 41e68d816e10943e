"""Factors of variation of a dataset seen through a model's embedding (B21 §3).

:func:`factors_of_variation` draws seeded same-class pairs, embeds ``x1``, ``x2`` and every
``T x2`` (each family at each non-identity magnitude, one batched ``apply_all`` per family)
and returns the per-class statistics of :mod:`invlab.metrics.functional.factors`. Pixel-space
images ([0, 1]); the model's normalization is applied after the transformation.

Example::

    fov = factors_of_variation(model, images, labels, normalization={"mean": [0.29],
                               "std": [0.35]}, n_pairs=200, generator=torch.Generator().manual_seed(0))
    fov.top(k=5)            # {class: [family, ...]}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from invlab.metrics.features import FeatureCapture, resolve_layers
from invlab.metrics.functional.factors import (
    B21_FAMILIES,
    factor_deltas,
    factor_stats,
    rank_factors,
    same_class_pairs,
)
from invlab.metrics.orbit import normalizer
from invlab.transforms import Family, create_transform

__all__ = ["B21_FAMILIES", "FactorResult", "embed", "factors_of_variation"]

GEOMETRIC: frozenset[str] = frozenset(B21_FAMILIES[:7])

STATS = ("proportion_boosted", "mean_delta", "std_delta", "mean_relative")


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, normalization: dict[str, Any] | None = None,
          layer: str | None = None, batch_size: int = 2048) -> torch.Tensor:
    """``φ(x)``: features ``[N, D]`` of pixel-space images ``[N, C, H, W]`` at ``layer``
    (default the penultimate: ``forward_features`` or the input of the last ``nn.Linear``),
    with ``normalization`` applied first; eval mode, in chunks of ``batch_size``."""

    name = resolve_layers(model, None if layer is None else [layer])[0]
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else x.dtype
    dev = p.device if p is not None else x.device
    norm = normalizer(normalization, x.shape[1], dtype, dev)

    def pre(t: torch.Tensor) -> torch.Tensor:
        if norm is None:
            return t
        return (t - norm[0].view(1, -1, 1, 1)) / norm[1].view(1, -1, 1, 1)

    cap = FeatureCapture(model, [name], pre=pre)
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev, dtype)
            if cap.uses_forward_features:
                out.append(cap.forward_features(xb))
            else:
                with cap.hooks():
                    model(pre(xb))
                out.append(cap.out[name])
    finally:
        model.train(was)
    return torch.cat(out).float().cpu()


@dataclass
class FactorResult:
    """Per-class factor statistics.

    Attributes:
        classes: the ``K`` classes (label values).
        transforms: the ``T`` family names.
        magnitudes: per family, its ``M`` non-identity magnitudes.
        per_magnitude: stat → ``[K, T, M]`` (:data:`STATS`).
        n_pairs: ``[K]`` pairs per class.
        mean_s: ``[K]`` mean ``cos(φ(x1), φ(x2))`` of the class's pairs.
    """

    classes: list[int]
    transforms: list[str]
    magnitudes: list[list[float]]
    per_magnitude: dict[str, torch.Tensor]
    n_pairs: torch.Tensor
    mean_s: torch.Tensor

    @property
    def best_magnitude(self) -> torch.Tensor:
        """``[K, T]`` index (into ``magnitudes[t]``) with the largest ``proportion_boosted``."""
        return self.per_magnitude["proportion_boosted"].argmax(-1)

    def at_best(self, stat: str) -> torch.Tensor:
        """``[K, T]``: ``stat`` at each (class, family)'s best magnitude."""
        v = self.per_magnitude[stat]
        return v.gather(-1, self.best_magnitude.unsqueeze(-1)).squeeze(-1)

    @property
    def scores(self) -> torch.Tensor:
        """``[K, T]`` ``proportion_boosted`` of each family at its best magnitude."""
        return self.at_best("proportion_boosted")

    @property
    def ranks(self) -> torch.Tensor:
        """``[K, T]`` rank of each family within its class (0 = main factor)."""
        return rank_factors(self.scores)

    def top(self, k: int = 5) -> dict[int, list[str]]:
        """``{class: its top-k families}``."""
        order = self.ranks.argsort(-1)[:, :k]
        return {c: [self.transforms[j] for j in row] for c, row in zip(self.classes,
                                                                        order.tolist())}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready tables (per class and family; per magnitude for every stat)."""
        best = self.best_magnitude
        return {
            "classes": self.classes, "transforms": self.transforms,
            "magnitudes": self.magnitudes, "n_pairs": self.n_pairs.tolist(),
            "mean_s": [round(v, 5) for v in self.mean_s.tolist()],
            "best_magnitude_index": best.tolist(),
            **{f"{s}_at_best": _r(self.at_best(s)) for s in STATS},
            "rank": self.ranks.tolist(),
            "per_magnitude": {s: _r(v) for s, v in self.per_magnitude.items()},
        }


def _r(t: torch.Tensor) -> Any:
    return torch.round(t.double(), decimals=5).tolist()


def factors_of_variation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                         transforms: Sequence[str] = B21_FAMILIES,
                         normalization: dict[str, Any] | None = None, n_pairs: int = 200,
                         generator: torch.Generator | None = None, layer: str | None = None,
                         batch_size: int = 2048) -> FactorResult:
    """Rank each class's transformations by how often they bring same-class images closer.

    Args:
        model: the reference embedding (B21: a model trained without augmentation).
        images: pixel-space ``[N, C, H, W]`` in [0, 1].
        labels: ``[N]`` class indices.
        transforms: family names (each measured at its non-identity magnitudes).
        normalization: the model's per-channel ``mean``/``std``, applied after ``T``.
        n_pairs: same-class pairs per class.
        generator: seeds the pairs.
        layer: embedding layer (default the penultimate).
        batch_size: images per forward pass.

    Returns:
        :class:`FactorResult`.
    """

    pairs = same_class_pairs(labels, n_pairs, generator)
    if not pairs:
        raise ValueError("factors_of_variation: no class has 2 or more images")
    classes = sorted(pairs)
    i1 = torch.cat([pairs[c][0] for c in classes])
    i2 = torch.cat([pairs[c][1] for c in classes])
    sizes = [pairs[c][0].numel() for c in classes]
    z1 = embed(model, images[i1], normalization, layer, batch_size)
    z2 = embed(model, images[i2], normalization, layer, batch_size)
    per: dict[str, list[torch.Tensor]] = {s: [] for s in STATS}
    mags: list[list[float]] = []
    s = None
    for name in transforms:
        fam = create_transform(name)
        if not isinstance(fam, Family):
            raise ValueError(f"factors_of_variation: {name!r} is not a transformation family "
                             "(expected e.g. 'rotate', 'brightness_up')")
        members = list(fam.members[1:] if fam.identity is not None else fam.members)
        mags.append([float(m) for m in members])
        xt = fam.apply_all(images[i2], members)  # [M, P, C, H, W]
        zt = embed(model, xt.flatten(0, 1), normalization, layer, batch_size)
        s, delta = factor_deltas(z1, z2, zt.view(len(members), *z1.shape))  # [P], [M, P]
        for k, v in _per_class(s, delta, sizes).items():
            per[k].append(v)  # [K, M]
    assert s is not None
    m_max = max(len(m) for m in mags)
    if any(len(m) != m_max for m in mags):
        raise ValueError("factors_of_variation: every family must have the same number of "
                         f"magnitudes; found {[len(m) for m in mags]}")
    return FactorResult(classes, list(transforms), mags,
                        {k: torch.stack(v, 1) for k, v in per.items()},  # [K, T, M]
                        torch.tensor(sizes), torch.stack([c.mean() for c in s.split(sizes)]))


def _per_class(s: torch.Tensor, delta: torch.Tensor, sizes: list[int]) -> dict[str, torch.Tensor]:
    """Stats per class from the concatenated pairs: each ``[K, M]``."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in STATS}
    for sc, dc in zip(s.split(sizes), delta.split(sizes, dim=-1)):
        for k, v in factor_stats(sc, dc).items():
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}
