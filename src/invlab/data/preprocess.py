"""The ``preprocess`` spec: the usual evaluation transform of natural-image classifiers.

A spec is a comma list of ``key=value`` pairs, applied in this fixed order whatever the
order written:

- ``resize=S``: scale so that the *shorter* side is ``S`` pixels, the longer side
  ``floor(L * S / s)`` (torchvision's ``Resize(S)`` rule), with bilinear interpolation and
  antialiasing (``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
  align_corners=False)``); the result is clamped to [0, 1] (the filter's weights are
  non-negative and sum to one, so only float rounding is clamped);
- ``crop=C`` (or ``crop=HxW``): the centre ``C×C`` window, top-left corner at
  ``(round((H - C) / 2), round((W - C) / 2))`` (torchvision's ``CenterCrop``).

``"resize=256,crop=224"`` is the ImageNet evaluation transform; ``"resize=224"`` and
``"crop=32"`` work alone. ``None`` or ``""`` means no preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from invlab.data.errors import DataError

__all__ = ["Preprocess", "parse_preprocess", "VALID_KEYS"]

VALID_KEYS = ("resize", "crop")


@dataclass(frozen=True)
class Preprocess:
    """A parsed spec: ``resize`` (shorter side) and ``crop`` ``(h, w)``, each optional."""

    resize: int | None = None
    crop: tuple[int, int] | None = None

    @property
    def spec(self) -> str:
        """The canonical spec string (``"resize=256,crop=224"``; ``""`` for none)."""
        parts = []
        if self.resize is not None:
            parts.append(f"resize={self.resize}")
        if self.crop is not None:
            h, w = self.crop
            parts.append(f"crop={h}" if h == w else f"crop={h}x{w}")
        return ",".join(parts)

    def __bool__(self) -> bool:
        return self.resize is not None or self.crop is not None

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """``(H, W)`` after the resize step alone."""
        if self.resize is None:
            return h, w
        s = self.resize
        if h <= w:
            return s, int(s * w / h)
        return int(s * h / w), s

    def output_size(self, h: int, w: int, name: str = "image") -> tuple[int, int]:
        """``(H, W)`` of an ``h×w`` input after the whole spec.

        Raises:
            DataError: the crop is larger than the (resized) image; names ``name``.
        """
        rh, rw = self.resized_size(h, w)
        if self.crop is None:
            return rh, rw
        ch, cw = self.crop
        if ch > rh or cw > rw:
            after = f" after resize={self.resize} ({rw}x{rh})" if self.resize else ""
            raise DataError(f"{name}: crop={ch}x{cw} (HxW) is larger than the image, {w}x{h} "
                            f"(WxH){after}; use a smaller crop or add resize=")
        return ch, cw

    def __call__(self, x: torch.Tensor, name: str = "image") -> torch.Tensor:
        """Apply to ``x`` ``[C, H, W]`` (or ``[N, C, H, W]``) float in [0, 1]."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = self.output_size(h, w, name)  # checks the crop first
        if self.resize is not None:
            rh, rw = self.resized_size(h, w)
            if (rh, rw) != (h, w):
                batch = x if x.dim() == 4 else x.unsqueeze(0)
                batch = F.interpolate(batch, size=(rh, rw), mode="bilinear",
                                      align_corners=False, antialias=True).clamp_(0.0, 1.0)
                x = batch if x.dim() == 4 else batch[0]
            h, w = rh, rw
        if self.crop is not None:
            top, left = int(round((h - oh) / 2.0)), int(round((w - ow) / 2.0))
            x = x[..., top:top + oh, left:left + ow]
        return x.contiguous()


def _positive_int(key: str, value: str, spec: str) -> int:
    try:
        v = int(value)
    except ValueError:
        v = 0
    if v < 1 or str(v) != value.strip().lstrip("+"):
        raise DataError(f"preprocess {spec!r}: {key}={value!r} must be a positive integer "
                        f"(pixels), e.g. resize=256,crop=224")
    return v


def parse_preprocess(spec: str | Preprocess | None) -> Preprocess:
    """Parse ``"resize=256,crop=224"`` (see the module docstring); ``None``/``""`` → no-op.

    Raises:
        DataError: an unknown key (the message lists the valid keys), a key given twice, or a
            value that is not a positive integer (``crop`` also takes ``HxW``).
    """
    if isinstance(spec, Preprocess):
        return spec
    if spec is None or not str(spec).strip():
        return Preprocess()
    out: dict[str, object] = {}
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if key not in VALID_KEYS or not sep:
            raise DataError(f"preprocess {spec!r}: unknown item {part!r}; valid keys: "
                            f"{', '.join(k + '=N' for k in VALID_KEYS)} "
                            "(e.g. resize=256,crop=224)")
        if key in out:
            raise DataError(f"preprocess {spec!r}: {key} is given twice")
        if key == "crop" and "x" in value.lower():
            h, _, w = value.lower().partition("x")
            out[key] = (_positive_int(key, h, spec), _positive_int(key, w, spec))
        elif key == "crop":
            c = _positive_int(key, value, spec)
            out[key] = (c, c)
        else:
            out[key] = _positive_int(key, value, spec)
    return Preprocess(resize=out.get("resize"), crop=out.get("crop"))  # type: ignore[arg-type]
