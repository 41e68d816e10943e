"""Orbit averaging: makes any model invariant."""

from __future__ import annotations

import torch
from torch import nn

from invlab.groups import Group
from invlab.transforms import TransformSet, create_transform
from invlab.transforms.spec import require_group


class GroupPooled(nn.Module):
    """``f̄(x) = 1/|G| Σ_g f(g·x)``: exactly invariant for any wrapped model.

    The orbit is evaluated as one stacked batch ``[|G|·N, C, H, W]``. ``forward_features``
    averages the wrapped model's features over the orbit; ``forward_head`` is the wrapped
    head (for a linear head, ``forward_head(forward_features(x)) == forward(x)``).
    """

    def __init__(self, model: nn.Module, group: str | TransformSet) -> None:
        super().__init__()
        self.model = model
        self.group: Group = require_group(create_transform(group), "orbit pooling (GroupPooled)")

    def _orbit_mean(self, fn, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
        k, n = self.group.order, x.shape[0]
        out = fn(self.group.orbit(x).flatten(0, 1))
        return out.view(k, n, *out.shape[1:]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._orbit_mean(self.model, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._orbit_mean(self.model.forward_features, x)

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(z)
