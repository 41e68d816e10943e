"""The transform registry and the one string spec: :func:`create_transform`.

Grammar: ``name[:magnitude][@seed=S]``; a family with a custom grid is
``name:[m0,m1,...]`` (the ``name`` of such a family).

- exact groups ``r4``, ``t<n>``, ``flip``, ``d4`` (and one element: ``r4:1``);
- a family name alone is the whole family over its grid: ``rotate``;
- ``name:m`` is the fixed transform at magnitude ``m`` in the op's unit: ``rotate:30``
  (degrees), ``translate_x:4`` (pixels; ``translate_x:0.5W`` is half the width),
  ``zoom_in:1.5``, ``brightness_up:1.4``, ``posterize:4`` (bits), ``blur:1.0`` (sigma, px),
  ``noise:0.1`` (std);
- parameter-free: ``grayscale``, ``invert``;
- ``@seed=S`` seeds ``noise`` (default 0): ``noise:0.1@seed=3``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import torch

from invlab.transforms import geometric as geo
from invlab.transforms import photometric as pm
from invlab.transforms.base import TransformError, TransformSet
from invlab.transforms.ops import OPS, Op, OpFamily, OpTransform, fmt


def _lin(a: float, b: float, n: int = 10) -> tuple[float, ...]:
    return tuple(torch.linspace(a, b, n, dtype=torch.float64).tolist())


_GEO = "bilinear interpolation and zero fill"
_NEG = lambda key: (lambda m: (key, -m))  # noqa: E731


def _recip(key: str):  # type: ignore[no-untyped-def]
    return lambda m: (key, 1.0 / m) if m > 0 else None


def _unit_only(m: float) -> tuple[str, float] | None:
    return None


_SHEAR = (0.0, -17.8, 22.75, -35.6, 45.5, -53.4, 68.25, -71.2, -89.0, 91.0)
_ROT = (0.0, -27.0, 45.0, -54.0, -81.0, 90.0, -108.0, -135.0, 135.0, 180.0)
_ANY = "any finite angle in degrees"
_SHEAR_TEXT = "degrees, any finite angle except ±90 (mod 180)"
_PX = "pixels (any finite number), or a fraction of the canvas with suffix {} (e.g. 0.5{})"

_OPS: dict[str, Op] = {op.key: op for op in [
    Op("rotate", "degrees", "rotation about the image centre, counter-clockwise", _ROT, 0.0,
       lambda m: True, _ANY, geometric=geo.rotate, inverse=_NEG("rotate"), not_exact=_GEO),
    Op("translate_x", "pixels", "shift right (B21 grid: linspace(0, W, 10))", _lin(0, 1), 0.0,
       lambda m: True, _PX.format("W", "W"), geometric=geo.translate_x,
       inverse=_NEG("translate_x"), axis="w", not_exact=_GEO),
    Op("translate_y", "pixels", "shift down (B21 grid: linspace(0, H, 10))", _lin(0, 1), 0.0,
       lambda m: True, _PX.format("H", "H"), geometric=geo.translate_y,
       inverse=_NEG("translate_y"), axis="h", not_exact=_GEO),
    Op("shear_x", "degrees", "horizontal shear x' = x - tan(m)·y", _SHEAR, 0.0, geo.shear_ok,
       _SHEAR_TEXT, geometric=geo.shear_x, inverse=_NEG("shear_x"), not_exact=_GEO),
    Op("shear_y", "degrees", "vertical shear y' = y - tan(m)·x", _SHEAR, 0.0, geo.shear_ok,
       _SHEAR_TEXT, geometric=geo.shear_y, inverse=_NEG("shear_y"), not_exact=_GEO),
    Op("zoom_in", "factor", "scale by m >= 1 about the centre", _lin(1, 3.5), 1.0,
       lambda m: m >= 1, "a factor >= 1", geometric=geo.zoom, inverse=_recip("zoom_out"),
       not_exact=_GEO),
    Op("zoom_out", "factor", "scale by 0 < m <= 1 about the centre", _lin(1, 0.28), 1.0,
       lambda m: 0 < m <= 1, "a factor in (0, 1]", geometric=geo.zoom,
       inverse=_recip("zoom_in"), not_exact=_GEO),
    Op("brightness_up", "factor", "clip(m·x, 0, 1)", _lin(1, 2), 1.0, lambda m: m >= 1,
       "a factor >= 1", pixel=pm.brightness, inverse=_unit_only, not_exact="scales values",
       not_invertible="clipping at 1"),
    Op("brightness_down", "factor", "m·x", _lin(1, 0), 1.0, lambda m: 0 <= m <= 1,
       "a factor in [0, 1]", pixel=pm.brightness, inverse=_recip("brightness_up"),
       not_exact="scales values", not_invertible="factor 0 maps every image to black"),
    Op("contrast_up", "factor", "clip(mu + m·(x - mu), 0, 1), mu = mean gray", _lin(1, 2), 1.0,
       lambda m: m >= 1, "a factor >= 1", pixel=pm.contrast, inverse=_unit_only,
       not_exact="rescales values", not_invertible="clipping at 0 and 1"),
    Op("contrast_down", "factor", "mu + m·(x - mu), mu = mean gray", _lin(1, 0), 1.0,
       lambda m: 0 <= m <= 1, "a factor in [0, 1]", pixel=pm.contrast,
       inverse=_recip("contrast_up"), not_exact="rescales values",
       not_invertible="factor 0 maps every image to its mean gray"),
    Op("posterize", "bits", "keep the top m of 8 bits", (8, 7, 6, 5, 4, 4, 3, 2, 1, 0), 8.0,
       lambda m: 0 <= m <= 8, "integer bits 0..8", pixel=pm.posterize, integer=True,
       not_exact="quantization", not_invertible="quantization"),
    Op("solarize", "threshold", "1 - x where x > m", _lin(1, 0), 1.0, lambda m: 0 <= m <= 1,
       "a threshold in [0, 1]", pixel=pm.solarize, not_exact="inverts bright values",
       not_invertible="x and 1 - x above the threshold collide"),
    Op("blur", "sigma (pixels)", "Gaussian blur, reflect padding (not in B21)",
       _lin(0, 4.5), 0.0, lambda m: m >= 0, "a sigma >= 0 in pixels", pixel=pm.blur,
       not_exact="averages neighbours", not_invertible="low-pass filtering"),
    Op("noise", "std", "clip(x + m·z, 0, 1), z ~ N(0, 1) seeded (not in B21)", _lin(0, 0.45),
       0.0, lambda m: m >= 0, "a std >= 0", pixel=pm.noise, seeded=True,
       not_exact="adds noise", not_invertible="random noise and clipping"),
    Op("grayscale", "", "luminance 0.299 R + 0.587 G + 0.114 B on 3 channels (3-ch only)",
       pixel=pm.grayscale, channels=3, not_exact="mixes channels",
       not_invertible="colour is lost"),
    Op("invert", "", "1 - x (an involution)", pixel=pm.invert,
       inverse=lambda m: ("invert", None), not_exact="not a pixel permutation (1 - x)"),
]}
OPS.update(_OPS)  # the inverses' look-up (invlab.transforms.ops)

FAMILIES = [k for k, op in _OPS.items() if op.grid]
"""Names usable alone as a whole family (B21's 13 plus blur and noise)."""


def get_op(key: str) -> Op:
    try:
        return _OPS[key]
    except KeyError:
        raise TransformError(_unknown(key)) from None


def _unknown(name: str) -> str:
    return (f"unknown transform {name!r}; valid names: groups r4, t<n> (e.g. t3), flip, d4; "
            f"families {', '.join(FAMILIES)}; fixed grayscale, invert "
            "(see invlab.list_transforms())")


_SPEC = re.compile(r"^(?P<name>[a-z_0-9]+)(?::(?P<mag>[^@]+))?(?:@seed=(?P<seed>-?\d+))?$")


def create_transform(spec: str | TransformSet, *, magnitudes: Sequence[float] | None = None,
                     seed: int | None = None) -> TransformSet:
    """Build a transform from a spec string (see the module docstring) or return a
    :class:`TransformSet` unchanged.

    Args:
        spec: ``"r4"``, ``"rotate"``, ``"rotate:30"``, ``"translate_x:4"``, ``"grayscale"``...
        magnitudes: a custom grid for a family spec (``create_transform("rotate",
            magnitudes=[0, 15, 30])``), identity first by convention.
        seed: seed for ``noise`` (same as ``@seed=S``).

    Raises:
        TransformError: unknown name (lists the valid ones) or bad magnitude (says the range).
    """
    if isinstance(spec, TransformSet):
        return spec
    if not isinstance(spec, str):
        raise TransformError(f"a transform spec must be a string or a TransformSet, found "
                             f"{type(spec).__name__} {spec!r}")
    text = spec.strip().lower().replace(" ", "")
    match = _SPEC.match(text)
    if not match:
        raise TransformError(f"cannot parse transform spec {spec!r}; expected "
                             "name[:magnitude][@seed=S], e.g. 'rotate:30' or 'noise:0.1@seed=3'")
    name, mag, seed_text = match["name"], match["mag"], match["seed"]
    if name not in _OPS:
        if seed_text is not None or seed is not None or magnitudes is not None:
            raise TransformError(f"{spec!r}: seed / magnitudes apply to families, not to "
                                 "exact groups")
        return _create_group(name, mag, spec)
    op = _OPS[name]
    if seed_text is not None or seed is not None:
        if not op.seeded:
            raise TransformError(f"{name} is deterministic and takes no seed (found {spec!r})")
        op = dataclasses.replace(op, extra={"seed": int(seed if seed is not None else seed_text)})
    if mag is not None and mag.startswith("[") and mag.endswith("]") and op.grid:
        if magnitudes is not None:
            raise TransformError(f"{spec!r} already lists magnitudes; drop magnitudes=")
        magnitudes = [_number(op, v) for v in mag[1:-1].split(",") if v]
        mag = None
    if mag is None and op.grid:
        return OpFamily(op, magnitudes)
    if magnitudes is not None:
        raise TransformError(f"magnitudes= is for a family spec such as {name!r}, found {spec!r}")
    if mag is None:
        if op.takes_magnitude:
            raise TransformError(f"{name} needs a magnitude ({op.valid_text})")
        return OpTransform(op)
    return _fixed(op, mag)


def _fixed(op: Op, mag: str) -> OpTransform:
    if not op.takes_magnitude:
        raise TransformError(f"{op.key} takes no magnitude, found {mag!r}")
    relative = False
    if op.axis is not None and mag.endswith(op.axis):
        relative, mag = True, mag[:-1]
    return OpTransform(op, _number(op, mag), relative=relative)


def _number(op: Op, mag: str) -> float:
    try:
        return float(mag)
    except ValueError:
        raise TransformError(f"{op.key}: magnitude must be a number ({op.valid_text}), "
                             f"found {mag!r}") from None


def _create_group(name: str, mag: str | None, spec: str) -> TransformSet:
    from invlab.groups import GroupError, create_group  # lazy: cycle (groups -> transforms.base -> this)

    try:
        group = create_group(name)
    except GroupError:  # a GroupError is a TransformError; kept for existing group callers
        raise GroupError(_unknown(spec)) from None
    if mag is None:
        return group
    if not mag.isdigit():
        raise TransformError(f"{name}: an element must be an integer 0..{group.order - 1}, "
                             f"found {mag!r}")
    return group.at(int(mag))


def require_group(t: TransformSet, purpose: str) -> Any:
    """Return ``t`` if it is an exact :class:`~invlab.groups.Group`, else raise
    :class:`TransformError` naming ``t`` and what it lacks (for weight tying, pooling...)."""
    from invlab.groups import Group  # lazy: cycle (groups -> transforms.base -> this)

    t.require(exact=True, invertible=True, group=True, purpose=purpose)
    if not isinstance(t, Group):
        raise TransformError(f"{purpose} needs an invlab.groups.Group (r4, t<n>, flip, d4); "
                             f"found {type(t).__name__} {t.name!r}")
    return t


def transform_rows(height: int = 28, width: int = 28) -> list[dict[str, Any]]:
    """One row per registered transform: name, kind, unit, magnitudes (pixels for a
    ``height × width`` canvas where the grid is relative), exact / invertible / group."""
    from invlab.groups import create_group, list_groups  # lazy: cycle (groups -> transforms.base -> this)

    rows = []
    for gname in list_groups():
        g = create_group("t3" if gname == "t<n>" else gname)
        mags = f"elements 0..{g.order - 1}" if gname != "t<n>" else "elements 0..n-1"
        rows.append(dict(name=gname, kind="group", unit="element", magnitudes=mags,
                         description=list_groups()[gname], **g.flags()))
    for key, op in _OPS.items():
        t = OpFamily(op) if op.grid else OpTransform(op)
        if op.grid:
            px = t.magnitudes_for(height, width)
            mags = ", ".join(fmt(round(m, 4)) for m in sorted(px))  # ascending
            if op.axis:
                mags += f" px on {height}x{width} (= linspace(0, 1, 10)·{op.axis.upper()})"
        else:
            mags = "-"
        rows.append(dict(name=key, kind=t.kind, unit=op.unit or "-", magnitudes=mags,
                         description=op.description, **t.flags()))
    return rows


def list_transforms() -> dict[str, str]:
    """Registered transform names -> one line: description, kind, magnitude grid (pixels on a
    224×224 canvas for translate, B21's reference size) and flags."""
    out = {}
    for r in transform_rows(224, 224):
        flags = ", ".join(k for k in ("exact", "invertible", "group") if r[k]) or "none"
        out[r["name"]] = (f"{r['description']}; {r['kind']}; magnitudes ({r['unit']}): "
                          f"{r['magnitudes']}; flags: {flags}")
    return out
