"""The engine's view of a transformation: resolve ``transform=`` / ``group=`` to a TransformSet.

A TransformSet (``invlab.transforms``) has ``name``, ``kind`` (``"group"``, ``"family"`` or
``"fixed"``), ``is_exact``, ``is_invertible``, ``is_group``, ``members`` (identity first),
``identity``, ``check_input(x)``, ``apply_all(x, members) -> [k, N, C, H, W]``,
``invert_all(y, members)``, ``validity_masks(members, H, W) -> [k, 1, H, W]`` and
``require(...)``. When :mod:`invlab.transforms` is not importable, exact groups are wrapped
by :class:`GroupTransform`, which has the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from invlab.groups import Group, GroupError, create_group
from invlab.metrics.errors import MeasureError

__all__ = ["GroupTransform", "resolve_members", "resolve_transform"]


class GroupTransform:
    """An exact finite group seen as a TransformSet of kind ``"group"``."""

    kind = "group"
    is_exact = True
    is_invertible = True
    is_group = True

    def __init__(self, group: Group) -> None:
        self.group = group
        self.name = group.name
        self.members = list(group.elements)
        self.identity = group.identity

    def check_input(self, x: torch.Tensor) -> None:
        self.group.check_input(x)

    def check_member(self, m: Any) -> Any:
        return self.group.check_element(m)

    def apply_all(self, x: torch.Tensor, members: Sequence[Any]) -> torch.Tensor:
        """``[k, N, C, H, W]``: ``g·x`` for each member."""
        return self.group.orbit(x, list(members))

    def invert_all(self, y: torch.Tensor, members: Sequence[Any]) -> torch.Tensor:
        """``[k, N, C, H, W]``: ``g_j⁻¹·y_j``."""
        return torch.stack([self.group.act(y[j], self.group.inverse(e))
                            for j, e in enumerate(members)])

    def validity_masks(self, members: Sequence[Any], h: int, w: int) -> torch.Tensor:
        """All ones ``[k, 1, H, W]`` (a pixel permutation loses no pixel)."""
        return torch.ones(len(members), 1, h, w)

    def require(self, exact: bool = False, invertible: bool = False, group: bool = False,
                purpose: str = "") -> GroupTransform:
        return self


def resolve_transform(transform: Any = None, group: Any = None) -> Any:
    """The TransformSet for ``transform=`` (any spec or object) or ``group=`` (default r4).

    Raises:
        MeasureError: both given, or an unknown / malformed spec (the message of the
            underlying error, which lists the valid names).
    """
    if transform is not None and group is not None:
        raise MeasureError("pass either transform= or group= (group= is an alias), not both")
    spec = transform if transform is not None else (group if group is not None else "r4")
    if hasattr(spec, "apply_all") and hasattr(spec, "kind"):
        return spec  # already a TransformSet (or an object with its interface)
    try:
        from invlab.transforms import create_transform  # type: ignore[import-not-found]
    except ImportError:
        create_transform = None
    try:
        if create_transform is not None:
            return create_transform(spec)
        return GroupTransform(create_group(spec))
    except (GroupError, ValueError, TypeError) as e:
        raise MeasureError(str(e)) from e


def _check_member(t: Any, m: Any) -> Any:
    if isinstance(t, GroupTransform) or isinstance(getattr(t, "group", None), Group):
        g = t.group
        return g.check_element(m)
    if hasattr(t, "check_member"):
        return t.check_member(m)
    for ok in t.members:
        if ok == m or (isinstance(ok, float) and isinstance(m, (int, float))
                       and abs(ok - float(m)) < 1e-9):
            return ok
    raise MeasureError(f"{m!r} is not a member of {t.name} (members: {list(t.members)})")


def resolve_members(t: Any, members: Any, include_identity: bool) -> list[Any]:
    """The ``k`` members measured: default the non-identity ones (all with
    ``include_identity``); explicit ones are validated and the identity is put first when
    ``include_identity``."""
    if members is None:
        out = [m for m in t.members if include_identity or m != t.identity]
        if include_identity and t.identity not in out:
            out.insert(0, t.identity)
        return out
    if isinstance(members, torch.Tensor):
        members = members.reshape(-1).tolist()
    elif isinstance(members, (int, float)) and not isinstance(members, bool):
        members = [members]
    out = []
    for m in members:
        try:
            out.append(_check_member(t, m))
        except (GroupError, ValueError) as e:
            raise MeasureError(str(e)) from e
    if include_identity and t.identity not in out:
        out.insert(0, t.identity)
    return out
