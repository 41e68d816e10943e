"""The :class:`Group` interface: finite groups with an explicit algebra and an action."""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from invlab.transforms.base import TransformError, TransformSet
from invlab.transforms.exact import GroupElement

Element = int


def _is_scalar(g: object) -> bool:
    """One element (int, numpy integer, 0-dim tensor, or an invalid scalar such as 1.5)."""
    if isinstance(g, torch.Tensor):
        return g.dim() == 0
    return isinstance(g, (str, bytes)) or not hasattr(g, "__len__")


class GroupError(TransformError):
    """An input does not fit the group: unknown element, wrong image shape, bad name.

    A :class:`~invlab.transforms.TransformError` (hence a ``ValueError``)."""


class Group(TransformSet, ABC):
    """A finite group acting on images ``[..., H, W]`` (normally ``[N, C, H, W]``).

    Subclasses define ``order``, ``compose``, ``inverse`` and ``_apply``; elements are the
    integers ``0 .. order-1`` and ``0`` is the identity. The action is a left action:
    ``act(act(x, h), g) == act(x, compose(g, h))``.

    A group is a :class:`~invlab.transforms.TransformSet` of kind ``"group"``: its
    ``members`` are its elements, ``apply_all`` is the stacked orbit, ``invert_all`` applies
    ``g⁻¹``, validity masks are all ones and ``at(g)`` is the fixed exact transform of ``g``.
    """

    name: str = "group"
    kind: str = "group"
    is_exact: bool = True
    """True when the action permutes pixels exactly (no interpolation)."""
    is_invertible: bool = True
    is_group: bool = True

    @property
    @abstractmethod
    def order(self) -> int:
        """Number of elements |G|."""

    @property
    def elements(self) -> list[Element]:
        """All elements, identity first."""
        return list(range(self.order))

    @property
    def identity(self) -> Element:
        return 0

    @property
    def non_identity(self) -> list[Element]:
        """All elements except the identity (the default orbit for metrics)."""
        return self.elements[1:]

    @abstractmethod
    def _compose(self, g: Element, h: Element) -> Element: ...

    @abstractmethod
    def _inverse(self, g: Element) -> Element: ...

    @abstractmethod
    def _apply(self, x: torch.Tensor, g: Element) -> torch.Tensor:
        """Apply one valid element to a validated tensor."""

    def check_element(self, g: object) -> Element:
        """Return ``g`` as an int element, or raise :class:`GroupError`."""
        if (isinstance(g, torch.Tensor) and g.numel() == 1 and not g.is_floating_point()
                and not g.is_complex() and g.dtype != torch.bool):
            g = int(g.item())
        elif isinstance(g, numbers.Integral) and not isinstance(g, bool):
            g = int(g)  # numpy integers
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < self.order:
            raise GroupError(
                f"{g!r} is not an element of {self.name} (valid elements: 0..{self.order - 1})"
            )
        return g

    def compose(self, g: Element, h: Element) -> Element:
        """The product ``g·h`` (apply ``h`` first, then ``g``)."""
        return self._compose(self.check_element(g), self.check_element(h))

    def inverse(self, g: Element) -> Element:
        """The inverse ``g⁻¹`` with ``compose(g, g⁻¹) == identity``."""
        return self._inverse(self.check_element(g))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`GroupError` if the group cannot act on images shaped like ``x``."""
        if not isinstance(x, torch.Tensor):
            raise GroupError(f"{self.name}: expected a torch.Tensor, found {type(x).__name__}")
        if x.dim() < 2:
            raise GroupError(
                f"{self.name}: expected images [..., H, W] (normally [N, C, H, W]), "
                f"found shape {tuple(x.shape)}"
            )

    def act(self, x: torch.Tensor, g: Element | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Transform images: ``g·x``.

        Args:
            x: images ``[N, C, H, W]`` (any ``[..., H, W]`` for a single element).
            g: one element for the whole batch, or one element per sample (``[N]``
                integer tensor or sequence). Per-sample actions loop over the group's
                elements, never over samples.

        Returns:
            Tensor of the same shape as ``x``.
        """
        self.check_input(x)
        if _is_scalar(g):
            return self._apply(x, self.check_element(g))
        idx = self._element_vector(x, g)
        if x.dim() == 4 and self.is_exact:
            table = self.pixel_table(x.shape[-2], x.shape[-1])
            if table is not None:  # one gather for the whole batch (bit-identical values)
                n, c, h, w = x.shape
                index = table[idx].unsqueeze(1).expand(n, c, h * w)
                return torch.gather(x.reshape(n, c, h * w), 2, index).view(n, c, h, w)
        out = torch.empty_like(x)
        for e in torch.unique(idx).tolist():
            mask = idx == e
            out[mask] = self._apply(x[mask], e)
        return out

    def pixel_table(self, h: int, w: int) -> torch.Tensor | None:
        """Source pixel of every output pixel per element, ``[order, H·W]`` (long), or None.

        ``(g·x).flatten(-2)[..., p] == x.flatten(-2)[..., table[g, p]]``: built once per
        ``(H, W)`` by applying each element to the index image ``arange(H·W)``; None when
        the action is not a pixel permutation there (then :meth:`act` loops over elements).
        """
        cache = self.__dict__.setdefault("_pixel_tables", {})
        if (h, w) not in cache:
            ids = torch.arange(h * w).view(1, 1, h, w)
            try:
                rows = [self._apply(ids, e).reshape(-1) for e in self.elements]
            except (RuntimeError, TypeError, ValueError):
                rows = None
            table = None
            if rows is not None and all(r.shape == (h * w,) for r in rows):
                table = torch.stack(rows)
                ok = bool((table.sort(dim=1).values == torch.arange(h * w)).all())
                table = table if ok and table.dtype == torch.long else None
            cache[(h, w)] = table
        return cache[(h, w)]

    def act_inverse(self, x: torch.Tensor, g: Element | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """``g⁻¹·x`` (per-sample ``g`` allowed), used to realign saliency maps."""
        if _is_scalar(g):
            return self.act(x, self.inverse(g))
        self.check_input(x)
        idx = self._element_vector(x, g)
        table = torch.tensor([self._inverse(e) for e in self.elements])
        return self.act(x, table[idx])

    def _element_vector(self, x: torch.Tensor, g: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Validate per-sample elements: an integer ``[N]`` vector of valid elements."""
        try:
            idx = torch.as_tensor(g)
        except (TypeError, ValueError, RuntimeError) as e:
            raise GroupError(f"{self.name}: per-sample elements must be integers "
                             f"0..{self.order - 1}, found {g!r}") from e
        if idx.numel() and (idx.is_floating_point() or idx.is_complex()
                            or idx.dtype == torch.bool):
            raise GroupError(
                f"{self.name}: per-sample elements must be integers 0..{self.order - 1}, "
                f"found dtype {idx.dtype}"
            )
        idx = idx.long()
        if idx.dim() != 1 or x.dim() < 3 or idx.shape[0] != x.shape[0]:
            raise GroupError(
                f"{self.name}: per-sample elements must be a [N] vector matching the batch; "
                f"found elements of shape {tuple(idx.shape)} for images {tuple(x.shape)}"
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.order):
            bad = idx[(idx < 0) | (idx >= self.order)][0].item()
            raise GroupError(
                f"{bad!r} is not an element of {self.name} (valid elements: 0..{self.order - 1})"
            )
        return idx

    def orbit(self, x: torch.Tensor, elements: Sequence[int] | None = None) -> torch.Tensor:
        """Stack of transformed copies ``[k, N, C, H, W]`` for ``elements`` (default all)."""
        els = self.elements if elements is None else [self.check_element(e) for e in elements]
        self.check_input(x)
        return torch.stack([self._apply(x, e) for e in els])

    @property
    def members(self) -> list[Element]:
        """The elements, identity first (the :class:`TransformSet` view)."""
        return self.elements

    def check_member(self, member: object) -> Element:
        return self.check_element(member)

    def apply_all(self, x: torch.Tensor, members: Sequence[int] | None = None) -> torch.Tensor:
        """``[N, C, H, W] -> [k, N, C, H, W]``: the orbit over ``members`` (default all)."""
        if isinstance(members, torch.Tensor):
            members = members.tolist()
        return self.orbit(x, members)

    def invert_all(self, y: torch.Tensor, members: Sequence[int] | None = None) -> torch.Tensor:
        """``y[j] -> g_j⁻¹·y[j]`` for ``y`` of shape ``[k, N, C, H, W]`` (exact)."""
        els = self._members(members)
        if not isinstance(y, torch.Tensor) or y.dim() < 3 or y.shape[0] != len(els):
            raise GroupError(f"{self.name}: invert_all expects [k={len(els)}, N, C, H, W], "
                             f"found {tuple(getattr(y, 'shape', ()))}")
        self.check_input(y[0])
        return torch.stack([self._apply(yj, self._inverse(e)) for yj, e in zip(y, els)])

    def validity_masks(self, members: Sequence[int] | None, height: int, width: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """All ones ``[k, 1, H, W]``: exact actions lose no pixel."""
        return torch.ones(len(self._members(members)), 1, height, width, device=device)

    def at(self, member: object) -> GroupElement:
        """The fixed exact transform of one element (``name`` e.g. ``"r4:1"``)."""
        return GroupElement(self, self.check_element(member))

    def _why_not_exact(self) -> str:  # pragma: no cover - groups are exact
        return "not a pixel permutation"

    def cayley_table(self) -> list[list[Element]]:
        """``table[g][h] == compose(g, h)``."""
        return [[self._compose(g, h) for h in self.elements] for g in self.elements]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, order={self.order})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)
