"""Parametric transformations: an :class:`Op` (one formula), its fixed :class:`OpTransform`
at one magnitude and its :class:`OpFamily` over a magnitude grid.

All members of a family are applied in one batched call: one ``grid_sample`` for geometric
ops, one broadcast expression for photometric ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from invlab.transforms import sampling
from invlab.transforms.base import Family, Transform, TransformError


def fmt(m: float | None) -> str:
    """Short display of a magnitude: ``30``, ``0.5``, ``1.27778``."""
    if m is None:
        return ""
    return f"{float(m):.6g}"


@dataclass(frozen=True)
class Op:
    """One transformation formula with a magnitude.

    Attributes:
        key: spec name (``"rotate"``).
        unit: magnitude unit for humans (``"degrees"``).
        description: one line for ``list_transforms``.
        grid: the family's default magnitudes, identity first (``()``: no family).
        identity: the identity magnitude (``None``: the op is never the identity).
        valid: ``valid(m) -> bool`` range check, ``valid_text`` says the range.
        geometric: forward-affine function ``(m [B], H, W) -> [B, 2, 3]`` or ``None``.
        pixel: photometric function ``(x, m) -> y`` (see :mod:`.photometric`).
        inverse: ``inverse(m) -> (key, m')`` or ``None`` when ``m`` is not invertible.
        axis: ``"w"`` / ``"h"`` when the magnitude is in pixels along that axis (the
            family grid is then in fractions of the canvas).
        integer: magnitudes are integers (posterize bits).
        channels: required channel count, or ``None``.
        not_exact: why a non-identity member is not a pixel permutation.
        not_invertible: why a member lacks an inverse.
    """

    key: str
    unit: str
    description: str
    grid: tuple[float, ...] = ()
    identity: float | None = None
    valid: Callable[[float], bool] = lambda m: True
    valid_text: str = ""
    geometric: Callable[..., torch.Tensor] | None = None
    pixel: Callable[..., torch.Tensor] | None = None
    inverse: Callable[[float], tuple[str, float | None] | None] = lambda m: None
    axis: str | None = None
    integer: bool = False
    channels: int | None = None
    not_exact: str = ""
    not_invertible: str = ""
    seeded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def takes_magnitude(self) -> bool:
        return bool(self.valid_text)

    def check(self, m: Any, relative: bool = False) -> float | None:
        """Validate and normalize a magnitude; :class:`TransformError` with the valid range."""
        if not self.takes_magnitude:
            if m is not None:
                raise TransformError(f"{self.key} takes no magnitude, found {m!r}")
            return None
        try:
            v = float(m.item() if isinstance(m, torch.Tensor) else m)
        except (TypeError, ValueError) as e:
            raise TransformError(f"{self.key}: magnitude must be a number ({self.valid_text}),"
                                 f" found {m!r}") from e
        ok = math.isfinite(v) and (not self.integer or v == int(v))
        if not ok or not (relative and abs(v) <= 1 or not relative and self.valid(v)):
            rng = "a fraction in [-1, 1] of the canvas" if relative else self.valid_text
            raise TransformError(f"{self.key}: invalid magnitude {m!r}; valid: {rng}")
        return float(int(v)) if self.integer else v

    def is_identity(self, m: float | None) -> bool:
        return self.identity is not None and m is not None and m == self.identity

    def check_input(self, name: str, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TransformError(f"{name}: expected a torch.Tensor, found {type(x).__name__}")
        if x.dim() != 4 or not x.is_floating_point():
            raise TransformError(f"{name}: expected float pixel images [N, C, H, W] in [0, 1], "
                                 f"found shape {tuple(x.shape)} dtype {x.dtype}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise TransformError(f"{name}: needs {self.channels}-channel images, found "
                                 f"C={x.shape[1]} (shape {tuple(x.shape)})")

    def pixels(self, m: torch.Tensor, relative: bool, height: int, width: int) -> torch.Tensor:
        """Magnitudes in the op's own unit (fractions of the canvas -> pixels)."""
        if not relative:
            return m
        return m * (width if self.axis == "w" else height)

    def apply_all(self, x: torch.Tensor, m: torch.Tensor, relative: bool) -> torch.Tensor:
        """Every magnitude ``m [k]`` on every image: ``[N,C,H,W] -> [k,N,C,H,W]``."""
        n, c, h, w = x.shape
        if self.geometric is not None:
            out = sampling.warp_all(x, self.geometric(self.pixels(m, relative, h, w), h, w))
        else:
            mm = None if m is None else m.to(x.dtype).view(-1, 1, 1, 1, 1)
            out = self.pixel(x.unsqueeze(0), mm, **self._noise(x, None))
            out = out.expand(1 if mm is None else mm.shape[0], n, c, h, w)
        return self._keep_identity(x.unsqueeze(0), out, m)

    def apply_per_sample(self, x: torch.Tensor, m: torch.Tensor, relative: bool,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Magnitude ``m[i]`` on image ``x[i]``: ``[N,C,H,W] -> [N,C,H,W]``."""
        n, c, h, w = x.shape
        if self.geometric is not None:
            out = sampling.warp_per_sample(x, self.geometric(self.pixels(m, relative, h, w),
                                                             h, w))
        else:
            out = self.pixel(x, m.to(x.dtype).view(-1, 1, 1, 1), **self._noise(x, generator))
        return self._keep_identity(x, out, m)

    def _noise(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        if not self.seeded:
            return {}
        if generator is None:
            generator = torch.Generator().manual_seed(int(self.extra.get("seed", 0)))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return {"z": z.to(x.device)}

    def _keep_identity(self, x: torch.Tensor, out: torch.Tensor,
                       m: torch.Tensor | None) -> torch.Tensor:
        """Identity magnitudes return the input exactly (no interpolation round-off):
        ``out[j] = x[j]`` (broadcast) for every ``j`` with ``m[j] == identity``."""
        if self.identity is None or m is None:
            return out
        ident = (m == self.identity).nonzero().flatten().tolist()
        if ident and out.shape[0] != len(m):  # broadcast photometric output
            out = out.expand(len(m), *out.shape[1:]).clone()
        for j in ident:
            out[j] = x[j] if x.shape[0] == len(m) else x[0]
        return out


OPS: dict[str, Op] = {}
"""Every registered op by key, filled by the op table of :mod:`invlab.transforms.spec` (which
imports this module, not the other way round); an inverse names its op by key."""


def _seed_suffix(op: Op) -> str:
    seed = int(op.extra.get("seed", 0)) if op.seeded else 0
    return f"@seed={seed}" if seed else ""


def _tensor(ms: Sequence[float | None]) -> torch.Tensor | None:
    if any(m is None for m in ms):
        return None
    return torch.tensor([float(m) for m in ms], dtype=torch.float64)


class _OpSetMixin:
    """Shared flag logic for fixed transforms and families of one :class:`Op`."""

    op: Op
    relative: bool

    def _why_not_exact(self) -> str:
        return self.op.not_exact

    def display_unit(self, height: int | None = None, width: int | None = None) -> str:
        """The unit members are labelled in: the op's own (``"degrees"``, ``"factor"``,
        ``"pixels"``); a translation given as a fraction of the canvas is in ``"pixels"`` when
        the canvas is known, else ``"fraction of W"`` / ``"fraction of H"``."""
        if self.relative and (height is None or width is None):
            return f"fraction of {(self.op.axis or '').upper()}"
        return self.op.unit

    def display_magnitude(self, member: Any, height: int | None = None,
                          width: int | None = None) -> float | None:
        """``member`` in :meth:`display_unit` (a fraction of the canvas × its width / height
        in pixels for a translation on a known canvas)."""
        if member is None:
            return None
        m = float(member.item() if isinstance(member, torch.Tensor) else member)
        if self.relative and height is not None and width is not None:
            return m * (width if self.op.axis == "w" else height)
        return m

    def member_label(self, member: Any, height: int | None = None,
                     width: int | None = None) -> str:
        """A member for humans, in the family's own unit: ``rotate:30``, ``zoom_in:1.28``,
        ``translate_x:3.11 px`` (a fraction 1/9 of a 28-pixel-wide canvas); without the canvas
        a relative translation keeps its fraction, ``translate_x:0.111W``."""
        v = self.display_magnitude(member, height, width)
        if v is None:
            return self.op.key
        if self.relative and (height is None or width is None):
            return f"{self.op.key}:{v:.3g}{(self.op.axis or '').upper()}"
        px = " px" if self.op.axis is not None else ""
        return f"{self.op.key}:{v:.3g}{px}"

    def _why_not_invertible(self) -> str:
        return self.op.not_invertible

    def _inverse_of(self, m: float | None) -> OpTransform:
        if self.op.is_identity(m):
            return OpTransform(self.op, m, relative=self.relative)
        inv = self.op.inverse(m)
        if inv is None:
            raise TransformError(f"{self.op.key}:{fmt(m)} is not invertible "
                                 f"({self.op.not_invertible})")
        key, m2 = inv
        op2 = OPS[key] if key != self.op.key else self.op
        return OpTransform(op2, m2, relative=self.relative)

    def _invert_all(self, y: torch.Tensor, ms: list[Any]) -> torch.Tensor:
        if y.dim() != 5 or y.shape[0] != len(ms):
            raise TransformError(f"{self.name}: invert_all expects [k={len(ms)}, N, C, H, W], "
                                 f"found {tuple(y.shape)}")
        invs = [self._inverse_of(m) for m in ms]
        if self.op.geometric is not None:
            _, n, c, h, w = y.shape
            fw = torch.cat([i.op.geometric(i.op.pixels(_tensor([i.magnitude]), i.relative,
                                                       h, w), h, w) for i in invs])
            out = sampling.warp_paired(y, fw)
            ident = torch.tensor([self.op.is_identity(m) for m in ms]).view(-1, 1, 1, 1, 1)
            return torch.where(ident, y, out)
        return torch.stack([inv(yj) for inv, yj in zip(invs, y)])

    def _masks(self, ms: list[Any], height: int, width: int,
               device: torch.device | str | None) -> torch.Tensor:
        ones = torch.ones(1, 1, height, width, device=device)
        if self.op.geometric is None:
            return ones.expand(len(ms), 1, height, width).clone()
        fw = self.op.geometric(self.op.pixels(_tensor(ms), self.relative, height, width),
                               height, width)
        there = sampling.warp_all(ones, fw)                       # [k, 1, 1, H, W]
        back = sampling.warp_paired(there, sampling.inverse_affine(fw))
        mask = (back >= 1 - 1e-4).to(ones.dtype)[:, 0]
        ident = torch.tensor([self.op.is_identity(m) for m in ms], device=mask.device)
        return torch.where(ident.view(-1, 1, 1, 1), torch.ones_like(mask), mask)


class OpTransform(_OpSetMixin, Transform):
    """A fixed parametric transform, e.g. ``rotate:30``, ``translate_x:4``, ``grayscale``."""

    def __init__(self, op: Op, magnitude: float | None = None, *, relative: bool = False):
        self.op = op
        self.relative = relative and op.axis is not None
        self.magnitude = op.check(magnitude, self.relative)
        suffix = (op.axis or "").upper() if self.relative else ""
        self.name = op.key + (f":{fmt(self.magnitude)}{suffix}" if op.takes_magnitude else "")
        self.name += _seed_suffix(op)
        ident = op.is_identity(self.magnitude)
        self.is_exact = ident
        self.is_invertible = ident or op.inverse(self.magnitude) is not None

    @property
    def identity(self) -> Any:
        return self.magnitude if self.op.is_identity(self.magnitude) else None

    def check_input(self, x: torch.Tensor) -> None:
        self.op.check_input(self.name, x)

    def magnitudes_for(self, height: int, width: int) -> list[float | None]:
        """``[magnitude]`` in the op's unit for a canvas (pixels for ``translate_x:0.5W``)."""
        if self.magnitude is None or not self.relative:
            return [self.magnitude]
        return self.op.pixels(torch.tensor([self.magnitude]), True, height, width).tolist()

    def check_member(self, member: Any) -> Any:
        if member != self.magnitude:
            raise TransformError(f"{member!r} is not a member of {self.name}; "
                                 f"members: {self.members}")
        return member

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_all(x)[0]

    def apply_all(self, x: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        ms = self._members(members)
        self.check_input(x)
        out = self.op.apply_all(x, _tensor([self.magnitude]), self.relative)
        return out.expand(len(ms), *out.shape[1:]) if len(ms) != 1 else out

    def inverse(self) -> Transform:
        self.require(invertible=True, purpose="inverse()")
        return self._inverse_of(self.magnitude)

    def invert_all(self, y: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        self.require(invertible=True, purpose="invert_all")
        return self._invert_all(y, self._members(members))

    def validity_masks(self, members: Sequence[Any] | None, height: int, width: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
        self.require(invertible=True, purpose="validity masks")
        return self._masks(self._members(members), height, width, device)


class OpFamily(_OpSetMixin, Family):
    """A parametric family over a magnitude grid (identity first), e.g. ``rotate``.

    Members may be any valid magnitude, not only grid points. For ``translate_x`` /
    ``translate_y`` the magnitudes are **fractions of the canvas** width / height (B21's
    ``linspace(0, W, 10)`` px becomes ``linspace(0, 1, 10)``); :meth:`magnitudes_for` gives
    them in pixels for a canvas, and ``at(m)`` is the fixed ``translate_x:{m}W``.
    """

    def __init__(self, op: Op, magnitudes: Sequence[float] | None = None) -> None:
        if not op.grid:
            raise TransformError(f"{op.key} is not a family; use it as a fixed transform")
        self.op = op
        self.relative = op.axis is not None
        grid = op.grid if magnitudes is None else tuple(magnitudes)
        if not grid:
            raise TransformError(f"{op.key}: a family needs at least one magnitude")
        self._grid = [op.check(m, self.relative) for m in grid]
        self.name = op.key if magnitudes is None else (
            f"{op.key}:[{','.join(fmt(m) for m in self._grid)}]")
        self.name += _seed_suffix(op)
        self.is_exact = all(op.is_identity(m) for m in self._grid)
        self.is_invertible = all(op.is_identity(m) or op.inverse(m) is not None
                                 for m in self._grid)

    @property
    def magnitudes(self) -> list[float]:
        return list(self._grid)

    @property
    def identity(self) -> Any:
        m = self._grid[0]
        return m if self.op.is_identity(m) else None

    @property
    def unit(self) -> str:
        return f"fraction of {self.op.axis.upper()}" if self.relative else self.op.unit

    def magnitudes_for(self, height: int, width: int) -> list[float]:
        """The grid in the op's unit for a ``height × width`` canvas (pixels for translate)."""
        m = torch.tensor(self._grid, dtype=torch.float64)
        return self.op.pixels(m, self.relative, height, width).tolist()

    def check_member(self, member: Any) -> Any:
        return self.op.check(member, self.relative)

    def check_input(self, x: torch.Tensor) -> None:
        self.op.check_input(self.name, x)

    def at(self, member: Any) -> Transform:
        return OpTransform(self.op, self.check_member(member), relative=self.relative)

    def apply_all(self, x: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        ms = self._members(members)
        self.check_input(x)
        return self.op.apply_all(x, _tensor(ms), self.relative)

    def invert_all(self, y: torch.Tensor, members: Sequence[Any] | None = None) -> torch.Tensor:
        ms = self._members(members)
        for m in ms:
            self.at(m).require(invertible=True, purpose="invert_all")
        return self._invert_all(y, ms)

    def validity_masks(self, members: Sequence[Any] | None, height: int, width: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
        ms = self._members(members)
        for m in ms:
            self.at(m).require(invertible=True, purpose="validity masks")
        return self._masks(ms, height, width, device)

    def sample_magnitudes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n]`` magnitudes drawn uniformly from the grid (float64)."""
        idx = torch.randint(len(self._grid), (n,), generator=generator)
        return torch.tensor(self._grid, dtype=torch.float64)[idx]

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None,
               magnitudes: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        if magnitudes is None:
            magnitudes = self.sample_magnitudes(x.shape[0], generator)
        m = torch.as_tensor(magnitudes, dtype=torch.float64).reshape(-1)
        if m.shape[0] != x.shape[0]:
            raise TransformError(f"{self.name}: sample() needs one magnitude per image, found "
                                 f"{m.shape[0]} magnitudes for {x.shape[0]} images")
        for v in torch.unique(m).tolist():
            self.check_member(v)
        return self.op.apply_per_sample(x, m, self.relative, generator)

