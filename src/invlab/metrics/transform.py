"""The engine's view of a transformation: resolve ``transform=`` / ``group=`` to a TransformSet.

A TransformSet (:mod:`invlab.transforms`; exact groups are TransformSets of kind
``"group"``) has ``name``, ``kind`` (``"group"``, ``"family"`` or ``"fixed"``),
``is_exact``, ``is_invertible``, ``is_group``, ``members`` (identity first), ``identity``,
``check_input(x)``, ``apply_all(x, members) -> [k, N, C, H, W]``, ``invert_all``,
``validity_masks(members, H, W) -> [k, 1, H, W]`` and ``require(...)``.
"""

from __future__ import annotations

from typing import Any

import torch

from invlab.groups import create_group
from invlab.metrics.errors import MeasureError
from invlab.transforms import TransformError, create_transform

__all__ = ["resolve_members", "resolve_transform"]


def resolve_transform(transform: Any = None, group: Any = None) -> Any:
    """The TransformSet for ``transform=`` (any spec or object) or ``group=`` (default r4).

    An object with the TransformSet interface (``apply_all`` and ``kind``) passes through.

    Raises:
        MeasureError: both given, or an unknown / malformed spec (the message of the
            underlying error, which lists the valid names).
    """
    if transform is not None and group is not None:
        raise MeasureError("pass either transform= or group= (group= is an alias), not both")
    spec = transform if transform is not None else (group if group is not None else "r4")
    if hasattr(spec, "apply_all") and hasattr(spec, "kind"):
        return spec
    try:
        if transform is None and isinstance(spec, str):
            return create_group(spec)  # group= names groups only (its error lists them)
        return create_transform(spec)
    except (TransformError, ValueError, TypeError) as e:
        raise MeasureError(str(e)) from e


def _is_identity(t: Any, m: Any) -> bool:
    return t.identity is not None and m == t.identity


def resolve_members(t: Any, members: Any, include_identity: bool) -> list[Any]:
    """The ``k`` members measured: default the non-identity ones (all with
    ``include_identity``), for a family in ascending order of magnitude (rotate:
    −135, −108, …, 180; groups keep their element order); explicit ones keep the order given,
    are validated (``t.check_member``) and the identity is put first when
    ``include_identity``."""
    if members is None:
        out = [m for m in t.members if include_identity or not _is_identity(t, m)]
        if getattr(t, "kind", "group") == "family":
            out = sorted(out)
        return out
    else:
        if isinstance(members, torch.Tensor):
            members = members.reshape(-1).tolist()
        elif isinstance(members, (int, float)) and not isinstance(members, bool):
            members = [members]
        out = []
        for m in members:
            try:
                out.append(t.check_member(m) if hasattr(t, "check_member") else m)
            except (TransformError, ValueError) as e:
                raise MeasureError(str(e)) from e
    if include_identity and t.identity is not None and t.identity not in out:
        out.insert(0, t.identity)
    return out
