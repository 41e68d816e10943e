"""One element of an exact group as a fixed :class:`Transform` (``group.at(g)``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from invlab.transforms.base import Transform

if TYPE_CHECKING:
    from invlab.groups import Group


class GroupElement(Transform):
    """``T(x) = g·x`` for one element ``g`` of an exact group; ``name`` is ``"<group>:<g>"``.

    Exact and invertible (inverse ``g⁻¹``, validity mask all ones). ``magnitude`` is the
    element (an int).
    """

    is_exact = True
    is_invertible = True

    def __init__(self, group: Group, element: int) -> None:
        self.group = group
        self.element = element
        self.magnitude = element  # type: ignore[assignment]
        self.name = f"{group.name}:{element}"

    @property
    def identity(self) -> Any:
        return self.element if self.element == self.group.identity else None

    def check_input(self, x: torch.Tensor) -> None:
        self.group.check_input(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.act(x, self.element)

    def inverse(self) -> GroupElement:
        return GroupElement(self.group, self.group.inverse(self.element))

    def validity_masks(self, members: Any, height: int, width: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
        return torch.ones(len(self._members(members)), 1, height, width, device=device)
