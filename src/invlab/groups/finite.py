"""Exact finite groups: C4 rotations, cyclic shifts T_n, horizontal flip, D4."""

from __future__ import annotations

import torch

from invlab.groups.base import Element, Group, GroupError


def _check_square(name: str, x: torch.Tensor) -> None:
    h, w = x.shape[-2], x.shape[-1]
    if h != w:
        raise GroupError(
            f"{name}: 90-degree rotations need square images, found H={h}, W={w}; "
            "pad or crop the images to a square first"
        )


class Rotation90(Group):
    """C4: element ``k`` rotates by ``k·90°`` counter-clockwise, ``torch.rot90(x, k)``."""

    name = "r4"

    @property
    def order(self) -> int:
        return 4

    def _compose(self, g: Element, h: Element) -> Element:
        return (g + h) % 4

    def _inverse(self, g: Element) -> Element:
        return (-g) % 4

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        _check_square(self.name, x)

    def _apply(self, x: torch.Tensor, g: Element) -> torch.Tensor:
        return torch.rot90(x, g, dims=(-2, -1)) if g else x.clone()


class CyclicShift(Group):
    """T_n: element ``k`` rolls images by ``k·W/n`` pixels along x, ``torch.roll``."""

    def __init__(self, n: int = 3) -> None:
        if n < 1:
            raise GroupError(f"t<n> needs n >= 1, found {n}")
        self.n = n
        self.name = f"t{n}"

    @property
    def order(self) -> int:
        return self.n

    def _compose(self, g: Element, h: Element) -> Element:
        return (g + h) % self.n

    def _inverse(self, g: Element) -> Element:
        return (-g) % self.n

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        w = x.shape[-1]
        if w % self.n:
            raise GroupError(
                f"{self.name}: cyclic shifts by W/{self.n} need a width divisible by {self.n}, "
                f"found W={w}"
            )

    def shift(self, x: torch.Tensor) -> int:
        """Pixels moved by the generator for images like ``x``."""
        return x.shape[-1] // self.n

    def _apply(self, x: torch.Tensor, g: Element) -> torch.Tensor:
        return torch.roll(x, g * self.shift(x), dims=-1) if g else x.clone()


class HorizontalFlip(Group):
    """Z2: element 1 mirrors images left-right, ``torch.flip(x, dims=[-1])``."""

    name = "flip"

    @property
    def order(self) -> int:
        return 2

    def _compose(self, g: Element, h: Element) -> Element:
        return g ^ h

    def _inverse(self, g: Element) -> Element:
        return g

    def _apply(self, x: torch.Tensor, g: Element) -> torch.Tensor:
        return torch.flip(x, dims=(-1,)) if g else x.clone()


class Dihedral4(Group):
    """D4 of order 8: element ``r + 4·f`` acts as ``rot90^r(flip^f(x))``.

    Product: ``(r1,f1)·(r2,f2) = (r1 + (-1)^f1 · r2 mod 4, f1 xor f2)`` because
    ``flip ∘ rot^r = rot^-r ∘ flip``.
    """

    name = "d4"

    @property
    def order(self) -> int:
        return 8

    @staticmethod
    def _split(g: Element) -> tuple[int, int]:
        return g % 4, g // 4

    def _compose(self, g: Element, h: Element) -> Element:
        r1, f1 = self._split(g)
        r2, f2 = self._split(h)
        r = (r1 + (-r2 if f1 else r2)) % 4
        return r + 4 * (f1 ^ f2)

    def _inverse(self, g: Element) -> Element:
        r, f = self._split(g)
        return g if f else (-r) % 4

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        _check_square(self.name, x)

    def _apply(self, x: torch.Tensor, g: Element) -> torch.Tensor:
        r, f = self._split(g)
        y = torch.flip(x, dims=(-1,)) if f else x
        y = torch.rot90(y, r, dims=(-2, -1)) if r else y
        return y if (r or f) else x.clone()
