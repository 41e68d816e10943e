"""Bring-your-own image data: an ``.npz`` file or an image folder with one sub-folder per class.

- ``.npz``: ``images`` ``[N, H, W]`` or ``[N, C, H, W]``, ``uint8`` (0..255) or float in
  [0, 1]; ``labels`` ``[N]`` integers ≥ 0.
- folder: ``ROOT/<class>/<image files>`` read with Pillow. Class names that are all
  integers (``0``..``9``) are their own indices; otherwise sorted names map to 0, 1, ….
  Every image must have the same size and mode family (all grayscale → 1 channel, else RGB).

Both return pixel-space float images in [0, 1]; invlab applies a model's normalization.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from invlab.data.sources import DataError

log = logging.getLogger("invlab.data")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class ImageSet:
    """``images [N, C, H, W]`` float in [0, 1], ``labels [N]`` long, and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _unreadable(path: Path, why: str = "") -> DataError:
    return DataError(f"{path}: not a readable .npz file (expected numpy.savez output with arrays "
                     f"images, labels{'; ' + why if why else ''})")


def _npz(path: Path) -> ImageSet:
    try:
        with open(path, "rb") as fh:
            is_zip = zipfile.is_zipfile(fh)
    except OSError as e:
        raise _unreadable(path, str(e)) from e
    if not is_zip:  # else np.load would try to unpickle it (the "allow_pickle" message)
        raise _unreadable(path)
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(path, str(e)) from e
    with f:
        missing = [k for k in ("images", "labels") if k not in f.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; found {f.files}. Save with "
                            "np.savez(path, images=[N,H,W] or [N,C,H,W], labels=[N])")
        arrays = {}
        for k in ("images", "labels"):
            try:
                arrays[k] = f[k]
            except ValueError as e:
                if "allow_pickle" in str(e):  # numpy refuses object arrays without unpickling
                    raise DataError(f"{path}: array {k!r} holds Python objects (pickled data), "
                                    "which invlab never loads; save numeric arrays (images uint8 "
                                    "or float, labels integers)") from None
                raise _unreadable(path, f"array {k!r}: {e}") from e
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise _unreadable(path, f"array {k!r}: {e}") from e
    x, y = arrays["images"], arrays["labels"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: images must be [N, H, W] or [N, C, H, W], found shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: labels must be [N] with N = {len(x)} (the number of images), "
                        f"found shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"{path}: labels must be integers >= 0, found dtype {y.dtype}"
                        + (f", min {y.min()}" if len(y) and np.issubdtype(y.dtype, np.number) else ""))
    if x.dtype == np.uint8:
        xt = torch.from_numpy(x.astype(np.float32) / 255.0)
    elif np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: float images must lie in [0, 1], found range [{lo}, {hi}]; "
                            "divide 0..255 data by 255 or store it as uint8")
        xt = torch.from_numpy(x.astype(np.float32))
    else:
        raise DataError(f"{path}: images must be uint8 (0..255) or float in [0, 1], found dtype "
                        f"{x.dtype}")
    classes = [str(i) for i in range(int(y.max()) + 1)] if len(y) else []
    return ImageSet(xt.contiguous(), torch.from_numpy(y.astype(np.int64)), classes, str(path))


def _class_index(names: list[str], root: Path) -> dict[str, int]:
    if all(n.isdigit() for n in names):
        return {n: int(n) for n in names}
    index = {n: i for i, n in enumerate(sorted(names))}
    log.info("%s: classes by sorted folder name: %s", root,
             ", ".join(f"{n}→{i}" for n, i in index.items()))
    return index


def _read_image(path: Path):  # type: ignore[no-untyped-def]
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable image file ({e}); remove it or convert it to PNG") from e


def _folder(root: Path) -> ImageSet:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(f"{root}: expected one sub-folder per class (ROOT/<class>/<images>), "
                        "found none")
    index = _class_index([d.name for d in subdirs], root)
    files = [(f, index[d.name]) for d in subdirs for f in sorted(d.iterdir())
             if f.is_file() and not f.name.startswith(".")]
    if not files:
        raise DataError(f"{root}: the class folders hold no files")
    imgs = [_read_image(f) for f, _ in files]
    gray = all(im.mode in ("L", "1", "I", "I;16", "F") for im in imgs)
    mode = "L" if gray else "RGB"
    arrays = []
    for (f, _), im in zip(files, imgs, strict=True):
        a = np.asarray(im.convert(mode), dtype=np.uint8)
        if arrays and a.shape != arrays[0].shape:
            raise DataError(f"{f}: image size {a.shape[1]}x{a.shape[0]} differs from "
                            f"{arrays[0].shape[1]}x{arrays[0].shape[0]} of {files[0][0]}; "
                            "resize all images of a test set to one size")
        arrays.append(a)
    x = np.stack(arrays)
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    y = np.array([lab for _, lab in files], dtype=np.int64)
    names = sorted(index, key=index.__getitem__)
    return ImageSet(torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y), names,
                    str(root))


def load_images(path: str | os.PathLike[str], *, num_classes: int | None = None,
                in_shape: tuple[int, ...] | None = None) -> ImageSet:
    """Read an ``.npz`` file or an image folder as pixel-space images in [0, 1].

    Args:
        path: ``file.npz`` or a folder ``ROOT/<class>/<image>``.
        num_classes: if given, every label must be ``< num_classes`` (else "unknown class").
        in_shape: if given, images must be ``[N, *in_shape]``.

    Returns:
        :class:`ImageSet` (``images [N, C, H, W]`` float32, ``labels [N]`` int64).

    Raises:
        DataError: missing path, unreadable files, wrong dtype/range, mismatched shapes,
            labels outside ``[0, num_classes)``; the message names the file and the fix.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder (expected a .npz file or an image folder)")
    if p.is_dir():
        ds = _folder(p)
    elif p.suffix.lower() == ".npz":
        ds = _npz(p)
    else:
        raise DataError(f"{p}: unsupported test-set format {p.suffix!r}; give a .npz file "
                        "(images, labels) or a folder with one sub-folder per class")
    if len(ds) == 0:
        raise DataError(f"{p}: the test set is empty")
    if in_shape is not None and tuple(ds.images.shape[1:]) != tuple(in_shape):
        raise DataError(f"{p}: images have shape {list(ds.images.shape[1:])} (C, H, W) but the "
                        f"models expect {list(in_shape)}; resize/convert the images")
    if num_classes is not None and int(ds.labels.max()) >= num_classes:
        bad = sorted({int(v) for v in ds.labels[ds.labels >= num_classes].tolist()})
        names = [ds.classes[b] if b < len(ds.classes) else str(b) for b in bad][:10]
        raise DataError(f"{p}: unknown class(es) {names} (label index >= {num_classes}); the "
                        f"models have {num_classes} classes, indexed 0..{num_classes - 1}")
    return ds
