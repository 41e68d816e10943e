"""Bring-your-own image data in memory: :func:`load_images` → :class:`ImageSet`.

Built on the lazy reader :func:`invlab.data.open_images` (every format, mode and error of
:mod:`invlab.data.images`): ``.npz`` (``images`` ``[N, H, W]``, ``[N, C, H, W]`` or
``[N, H, W, C]``, uint8 or float in [0, 1]; ``labels`` ``[N]``), ``.npy`` with a labels
``.npy``, CIFAR binaries, a class folder ``ROOT/<class>/<image files>`` (integer names are
their own indices, other names map in sorted order, recorded in :attr:`ImageSet.mapping`) or
a flat folder with a labels file. ``load_images`` reads every image into one tensor: use
``open_images`` for data larger than memory.

Returns pixel-space float images in [0, 1]; invlab applies a model's normalization.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invlab.data.errors import DataError
from invlab.data.images import IMAGE_SUFFIXES, open_images

__all__ = ["ImageSet", "load_images", "IMAGE_SUFFIXES"]

log = logging.getLogger("invlab.data")


@dataclass
class ImageSet:
    """``images [N, C, H, W]`` float in [0, 1], ``labels [N]`` long, and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)
    source: str = ""
    #: ``{name: index}`` when class names were mapped in sorted order (else None)
    mapping: dict[str, int] | None = None
    #: :meth:`invlab.data.ImageDataset.describe` of the data read (format, preprocess, ...)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_images(path: str | os.PathLike[str], *, num_classes: int | None = None,
                in_shape: tuple[int, ...] | None = None, preprocess: str | None = None,
                labels: str | os.PathLike[str] | None = None, subset: int | None = None,
                seed: int = 0) -> ImageSet:
    """Read labelled images into memory as pixel-space float images in [0, 1].

    Args:
        path: anything :func:`invlab.data.open_images` reads (``.npz``, ``.npy`` with
            ``labels=``, a CIFAR ``.bin``, a class folder, a flat folder with a labels file).
        num_classes: if given, every label must be ``< num_classes`` (else "unknown class").
        in_shape: if given, images must be ``[N, *in_shape]`` (after ``preprocess``).
        preprocess: a spec such as ``"resize=256,crop=224"``.
        labels: a labels file (flat folder) or labels ``.npy``, as for ``open_images``.
        subset: with more images than this, decode only a seeded random subset of this many,
            in the order ``torch.randperm(N, generator=manual_seed(seed))[:subset]`` (the
            rest are never read: a 50,000-image folder costs what the subset costs).

    Returns:
        :class:`ImageSet` (``images [N, C, H, W]`` float32, ``labels [N]`` int64).

    Raises:
        DataError: missing path, unreadable files, wrong dtype/range, mismatched shapes,
            unlabelled data, labels outside ``[0, num_classes)``; the message names the file
            and the fix.
    """
    p = Path(path)
    lazy = open_images(path, preprocess=preprocess, labels=labels)
    if len(lazy) == 0:
        raise DataError(f"{p}: the test set is empty")
    if lazy.labels is None:
        raise DataError(f"{p}: the images have no labels; add a labels file (a flat folder: "
                        "labels.csv with 'filename,label' lines; a .npy: labels=labels.npy) or "
                        "use class sub-folders")
    if in_shape is not None and tuple(lazy.image_shape) != tuple(in_shape):
        raise DataError(f"{p}: images have shape {list(lazy.image_shape)} (C, H, W) but the "
                        f"models expect {list(in_shape)}; resize/convert the images"
                        + ("" if preprocess else " (or pass a preprocess spec, e.g. "
                           "--preprocess resize=256,crop=224)"))
    y = lazy.labels
    if num_classes is not None and int(y.max()) >= num_classes:
        bad = sorted({int(v) for v in y[y >= num_classes].tolist()})
        inv = {i: n for n, i in (lazy.class_to_idx or {}).items()}
        if lazy.classes is not None and not inv:
            inv = dict(enumerate(lazy.classes))
        names = [inv.get(b, str(b)) for b in bad][:10]
        raise DataError(f"{p}: unknown class(es) {names} (label index >= {num_classes}); the "
                        f"models have {num_classes} classes, indexed 0..{num_classes - 1}")
    if subset is not None and len(lazy) > subset:
        idx = torch.randperm(len(lazy), generator=torch.Generator().manual_seed(seed))[:subset]
        x = torch.empty((len(idx), *lazy.image_shape), dtype=torch.float32)
        for j, i in enumerate(idx.tolist()):  # decodes only the chosen files
            x[j] = lazy.image(i)
        y = y[idx]
    else:
        x, _ = lazy.to_tensors()
    if lazy.class_to_idx:
        classes = sorted(lazy.class_to_idx, key=lazy.class_to_idx.__getitem__)
    elif lazy.classes is not None:
        classes = list(lazy.classes)
    elif lazy.format == "class-folder":
        classes = sorted({str(int(v)) for v in y.tolist()}, key=int)
    else:
        classes = [str(i) for i in range(int(y.max()) + 1)]
    return ImageSet(x, y.clone(), classes, str(p), mapping=lazy.class_to_idx,
                    info=lazy.describe())
