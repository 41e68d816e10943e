"""Orbit averaging: makes any model invariant."""

from __future__ import annotations

import torch
from torch import nn

from invlab.groups import Group
from invlab.transforms import TransformSet, create_transform
from invlab.transforms.spec import require_group


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` registered in ``model`` (its head, for a plain classifier)."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


class GroupPooled(nn.Module):
    """``f̄(x) = 1/|G| Σ_g f(g·x)``: exactly invariant for any wrapped model.

    The orbit is evaluated as one stacked batch ``[|G|·N, C, H, W]``. ``forward_features``
    averages the wrapped model's features over the orbit: its ``forward_features`` when it
    has one, else the input of its last ``nn.Linear`` (any backbone, e.g. an
    ``nn.Sequential``). ``forward_head`` is the wrapped head (its ``forward_head``, else that
    last linear layer); for a linear head, ``forward_head(forward_features(x)) == forward(x)``
    because the mean commutes with an affine map.
    """

    def __init__(self, model: nn.Module, group: str | TransformSet) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"GroupPooled wraps a torch.nn.Module, found {type(model).__name__}")
        self.model = model
        self.group: Group = require_group(create_transform(group), "orbit pooling (GroupPooled)")
        if hasattr(model, "in_shape"):
            self.in_shape = model.in_shape

    def _orbit_mean(self, fn, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
        k, n = self.group.order, x.shape[0]
        out = fn(self.group.orbit(x).flatten(0, 1))
        return out.view(k, n, *out.shape[1:]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._orbit_mean(self.model, x)

    def _head(self) -> nn.Linear:
        head = last_linear(self.model)
        if head is None:
            raise AttributeError(f"{type(self.model).__name__} has no forward_features and no "
                                 "nn.Linear layer, so GroupPooled has no penultimate features; "
                                 "name a layer instead (measure(..., layers=[...]))")
        return head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, D]``: orbit mean of the backbone's penultimate features."""
        if hasattr(self.model, "forward_features"):
            return self._orbit_mean(self.model.forward_features, x)
        captured: list[torch.Tensor] = []
        hook = self._head().register_forward_hook(lambda m, i, o: captured.append(i[0]))
        try:
            self._orbit_mean(self.model, x)
        finally:
            hook.remove()
        z = captured[-1]
        return z.view(self.group.order, x.shape[0], *z.shape[1:]).mean(0)

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "forward_head"):
            return self.model.forward_head(z)
        return self._head()(z)
