"""Finite transformation groups acting on image batches ``[N, C, H, W]``.

A group is an object with an explicit algebra (after escnn, slimmed down)::

    >>> from invlab.groups import create_group
    >>> g = create_group("r4")
    >>> g.elements, g.identity, g.order
    ([0, 1, 2, 3], 0, 4)
    >>> g.compose(1, 3), g.inverse(1)
    (0, 3)

Elements are small integers ``0 .. order-1``. ``act(x, g)`` applies one element to the
whole batch, or one element per sample when ``g`` is a ``[N]`` integer tensor. Every group
here is exact: the action is a permutation of pixels (``rot90``, ``roll``, ``flip``), so a
model pooled over the orbit is invariant to float precision.
"""

from __future__ import annotations

from invlab.groups.base import Group, GroupError
from invlab.groups.finite import CyclicShift, Dihedral4, HorizontalFlip, Rotation90

__all__ = [
    "Group",
    "GroupError",
    "Rotation90",
    "CyclicShift",
    "HorizontalFlip",
    "Dihedral4",
    "create_group",
    "list_groups",
]

_REGISTRY: dict[str, tuple[type[Group], str]] = {
    "r4": (Rotation90, "rotations by multiples of 90 degrees (C4), exact rot90"),
    "t<n>": (CyclicShift, "cyclic x-translations by multiples of W/n, exact roll (e.g. t3)"),
    "flip": (HorizontalFlip, "horizontal flip (Z2)"),
    "d4": (Dihedral4, "rotations by 90 degrees and flips (D4, order 8)"),
}


def list_groups() -> dict[str, str]:
    """Registered group names (``t<n>`` stands for any n >= 1) and one-line descriptions."""
    return {name: desc for name, (_, desc) in _REGISTRY.items()}


def create_group(name: str | Group) -> Group:
    """Create a group by name: ``r4``, ``t3`` (any ``t<n>``), ``flip``, ``d4``.

    Raises:
        GroupError: for an unknown name; the message lists the valid ones.
    """
    if isinstance(name, Group):
        return name
    key = str(name).strip().lower()
    if key == "r4":
        return Rotation90()
    if key == "flip":
        return HorizontalFlip()
    if key == "d4":
        return Dihedral4()
    if key.startswith("t") and key[1:].isdigit() and int(key[1:]) >= 1:
        return CyclicShift(int(key[1:]))
    raise GroupError(
        f"unknown group {name!r}; valid names: r4, t<n> (e.g. t3), flip, d4"
    )
