"""The transform interface: :class:`TransformSet` (what ``measure`` iterates over),
:class:`Transform` (one fixed transformation) and :class:`Family` (a magnitude grid).

Every transform acts on **pixel-space** images ``[N, C, H, W]`` in ``[0, 1]``; the model's
normalization is applied afterwards. Exact groups (:class:`invlab.groups.Group`) are
``TransformSet`` objects of kind ``"group"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from invlab.errors import InvlabError


class TransformError(InvlabError, ValueError):
    """A transform cannot be built or applied: bad spec, bad magnitude, bad input, or a
    transform lacking a property (exact, invertible, group) that a caller requires."""


class TransformSet(ABC):
    """A set of ``k`` transformations of pixel-space images ``[N, C, H, W]``.

    Attributes:
        name: canonical spec string (``"r4"``, ``"rotate"``, ``"rotate:30"``, ``"grayscale"``).
        kind: ``"group"`` | ``"family"`` | ``"fixed"``.
        is_exact: every member permutes pixels (no interpolation, clipping or fill).
        is_invertible: every member has an inverse (possibly with a validity mask).
        is_group: the members form a group under composition (exact groups only).
        members: group elements (ints) | magnitudes (floats) | ``[magnitude]`` for a fixed
            transform; the identity first where there is one.
        identity: the identity member, or ``None`` (a fixed non-identity transform).
    """

    name: str = "transform"
    kind: str = "fixed"
    is_exact: bool = False
    is_invertible: bool = False
    is_group: bool = False

    @property
    @abstractmethod
    def members(self) -> list[Any]: ...

    @property
    def identity(self) -> Any:
        return None

    @property
    def non_identity(self) -> list[Any]:
        """``members`` without the identity (all members when there is none)."""
        ident = self.identity
        return [m for m in self.members if ident is None or m != ident]

    def __len__(self) -> int:
        return len(self.members)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`TransformError` unless ``x`` is a float ``[N, C, H, W]`` batch."""
        if not isinstance(x, torch.Tensor):
            raise TransformError(f"{self.name}: expected a torch.Tensor, found {type(x).__name__}")
        if x.dim() != 4 or not x.is_floating_point():
            raise TransformError(
                f"{self.name}: expected float images [N, C, H, W], found shape "
                f"{tuple(x.shape)} dtype {x.dtype}"
            )

    def _members(self, members: Sequence[Any] | None) -> list[Any]:
        """Validate a member list (default: all members)."""
        if members is None:
            return list(self.members)
        if isinstance(members, torch.Tensor):
            members = members.tolist()
        return [self.check_member(m) for m in members]

    def check_member(self, member: Any) -> Any:
        """Return ``member`` normalized, or raise :class:`TransformError`."""
        if member not in self.members:
            raise TransformError(f"{member!r} is not a member of {self.name}; "
                                 f"members: {self.members}")
        return member

    @abstractmethod
    def apply_all(self, x: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        """Apply every member (default all) to every image: ``[N, C, H, W] -> [k, N, C, H, W]``."""

    def invert_all(self, y: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        """Apply member ``j``'s inverse to ``y[j]``: ``[k, N, C, H, W] -> [k, N, C, H, W]``.

        Raises:
            TransformError: if the transform is not invertible.
        """
        self.require(invertible=True, purpose="inverting")
        raise NotImplementedError  # pragma: no cover - subclasses with is_invertible override

    def validity_masks(self, members: Sequence[Any] | None, height: int, width: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """``[k, 1, H, W]`` float in {0, 1}: pixels where ``inverse(member(x))`` recovers ``x``
        (geometrically: all ones for exact and photometric transforms; 0 where a geometric
        transform moves a pixel out of the canvas and back)."""
        self.require(invertible=True, purpose="validity masks")
        if not self.is_exact:
            raise TransformError(f"{self.name}: {type(self).__name__} must define "
                                 "validity_masks (only exact transforms default to all ones)")
        k = len(self._members(members))
        return torch.ones(k, 1, height, width, device=device)

    @abstractmethod
    def at(self, member: Any) -> Transform:
        """The fixed transform for one member."""

    def lacks(self, *, exact: bool = False, invertible: bool = False,
              group: bool = False) -> list[str]:
        """Human-readable list of the required properties this transform lacks."""
        out = []
        if exact and not self.is_exact:
            out.append(f"not exact ({self._why_not_exact()})")
        if invertible and not self.is_invertible:
            out.append(f"not invertible ({self._why_not_invertible()})")
        if group and not self.is_group:
            out.append("not a group")
        return out

    def _why_not_exact(self) -> str:
        return "not a pixel permutation"

    def _why_not_invertible(self) -> str:
        return "information is lost"

    def require(self, *, exact: bool = False, invertible: bool = False, group: bool = False,
                purpose: str) -> None:
        """Raise :class:`TransformError` naming the transform and what it lacks, e.g.
        ``"weight tying needs an exact group; 'rotate:30' is not exact (bilinear
        interpolation) and not a group"``."""
        missing = self.lacks(exact=exact, invertible=invertible, group=group)
        if not missing:
            return
        need = " ".join(w for w, f in (("exact", exact), ("invertible", invertible)) if f)
        need = f"an {need} group" if group and need else ("a group" if group else
                                                          f"an {need} transform")
        raise TransformError(f"{purpose} needs {need}; {self.name!r} is {' and '.join(missing)}"
                             + (". Use an exact group: r4, t<n>, flip or d4" if group else ""))

    def flags(self) -> dict[str, bool]:
        return {"exact": self.is_exact, "invertible": self.is_invertible, "group": self.is_group}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Transform(TransformSet):
    """One fixed transformation ``T``: ``T(x)`` maps ``[N, C, H, W]`` to the same shape.

    ``members == [magnitude]`` (``[None]`` for parameter-free transforms such as
    ``grayscale``); ``identity`` is the magnitude when ``T`` is the identity, else ``None``.
    """

    kind = "fixed"
    magnitude: float | None = None

    @property
    def members(self) -> list[Any]:
        return [self.magnitude]

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W] -> [N, C, H, W]`` pixel space."""

    def inverse(self) -> Transform:
        """The inverse transform; :class:`TransformError` if not invertible."""
        self.require(invertible=True, purpose="inverse()")
        raise NotImplementedError  # pragma: no cover

    def validity_mask(self, height: int, width: int,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """``[1, H, W]``: pixels recovered by ``inverse()(T(x))`` (see ``validity_masks``)."""
        return self.validity_masks(None, height, width, device)[0]

    def apply_all(self, x: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        return torch.stack([self(x) for _ in self._members(members)])

    def invert_all(self, y: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        self.require(invertible=True, purpose="inverting")
        if not isinstance(y, torch.Tensor) or y.dim() != 5:
            raise TransformError(f"{self.name}: invert_all expects [k, N, C, H, W], found "
                                 f"{tuple(getattr(y, 'shape', ()))}")
        return self.inverse()(y.flatten(0, 1)).view_as(y)

    def at(self, member: Any) -> Transform:
        self.check_member(member)
        return self


class Family(TransformSet):
    """A transformation with a magnitude grid (identity first): ``members == magnitudes``."""

    kind = "family"

    @property
    @abstractmethod
    def magnitudes(self) -> list[float]:
        """The grid, identity first."""

    @property
    def members(self) -> list[Any]:
        return list(self.magnitudes)

    @property
    def identity(self) -> Any:
        return self.magnitudes[0]

    @abstractmethod
    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None,
               magnitudes: torch.Tensor | None = None) -> torch.Tensor:
        """Apply one magnitude per sample, batched: ``[N, C, H, W] -> [N, C, H, W]``.

        Args:
            x: pixel-space images.
            generator: draws each sample's magnitude uniformly from the grid.
            magnitudes: ``[N]`` magnitudes to use instead of drawing them.
        """
