"""Natural-image data, read lazily: :func:`open_images` → :class:`ImageDataset`.

``open_images(PATH, *, preprocess=None, labels=None)`` returns a ``torch.utils.data.Dataset``
whose item ``i`` is ``(image, label)`` — ``image`` float32 ``[C, H, W]`` in [0, 1], ``label``
an ``int`` — or ``image`` alone when the data has no labels. Pixels are decoded on access
(Pillow for image files, a memory map for ``.npy`` and CIFAR binaries); constructing a
dataset reads only the file headers. Formats:

- **class folder** ``ROOT/<class>/<file>``: class names that are all integers (``0``..``9``)
  are their own indices; otherwise the *sorted* names map to 0, 1, … and the mapping is
  exposed (:attr:`ImageDataset.class_to_idx`, :meth:`ImageDataset.mapping_text`) to be
  printed and recorded;
- **flat folder** ``ROOT/<file>`` with an optional labels file: ``labels=FILE`` or, when not
  given, ``ROOT/labels.csv`` / ``ROOT/labels.txt`` if present (logged). One
  ``filename,label`` per line (blank lines, ``#`` comments and a ``filename,label`` header are
  skipped; a file name may omit its extension when that is unambiguous); integer labels are
  indices, other labels map in sorted order like class folders. Every image must be listed
  and every listed file must exist (else a one-line error). No labels file → unlabelled (items are images alone);
- **.npz** with ``images`` and ``labels`` (read into memory, as :func:`load_images` always did);
- **.npy** ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` (C = 1 or 3), uint8 (÷255) or
  float in [0, 1], memory-mapped (``np.load(mmap_mode="r", allow_pickle=False)``), with
  ``labels=`` a labels ``.npy`` of ``[N]`` integers; without ``labels=``, the file of the
  CIFAR-10.1 / CIFAR-10-C layouts beside it is used when present (``X_data.npy`` →
  ``X_labels.npy``, else ``labels.npy``; logged and recorded), else the data is unlabelled;
- **CIFAR-10 / CIFAR-100 binary** ``*.bin`` (``data_batch_1.bin`` …, ``test_batch.bin``;
  ``train.bin``, ``test.bin``): records of 1 label byte (CIFAR-10) or 2 (CIFAR-100: coarse,
  fine — the fine label is used) + 3,072 pixel bytes (R, G, B planes of 32×32), memory-mapped.
  Class names come from ``batches.meta.txt`` / ``fine_label_names.txt`` beside the file when
  present. The pickled "python version" is refused (invlab never unpickles);
- the named source ``"photos"`` (:func:`invlab.data.photos.photo_paths`): bundled colour
  photographs of scikit-image and scikit-learn, unlabelled, of mixed sizes.

Channel layout of 4-D arrays: ``[N, a, b, c]`` is channels-last when ``c`` is 1 or 3 and
``a`` is not, channels-first when ``a`` is 1 or 3 and ``c`` is not; anything else (both or
neither) is refused as ambiguous. So ``[N, 28, 28, 3]`` reads as 3-channel 28×28.

Image modes (Pillow), each converted exactly or refused:

==============  ============================================================================
``L``, ``1``    grey levels ÷ 255 (``1``: 0 or 1), one channel
``RGB``         ÷ 255, three channels
``LA``, ``RGBA``  the alpha channel is **dropped** (colour values as stored, not composited)
``P``, ``PA``   the palette is applied (``convert("RGB")``, exact), alpha dropped
``CMYK``        Pillow's ``convert("RGB")``: ``R = round((255 - C)(255 - K) / 255)`` etc. (no ICC)
``YCbCr``       Pillow's ``convert("RGB")`` (the JPEG formula)
``I;16*``       16-bit grey (PNG, TIFF): value ÷ 65535 exactly (float32), never clipped; also
                Pillow's ``I`` mode for a 16-bit PNG
``F``           32-bit float (TIFF): taken as is when every value is finite and in [0, 1],
                else refused naming the file and the range found
other           refused: 16-bit colour PNGs (Pillow keeps only their high byte), 32-bit
                integer ``I`` images (no defined range), ``LAB``, ``HSV``, …
==============  ============================================================================

Only the first frame of a multi-frame file (GIF, multi-page TIFF) is read, and EXIF
orientation tags are not applied (as torchvision's Pillow loader). Pillow's decompression-bomb
limit applies (an image over ~179 million pixels is refused, naming the file).

Grey and colour files in one folder: when every file is grey (``1``, ``L``, ``LA``, ``I;16``,
``F``) the dataset has one channel; when any is colour, every image has three and grey ones
are replicated into R = G = B (exact). A file Pillow cannot identify (a ``README.txt``, a
corrupt header) **stops** :func:`open_images` with one line naming it; a file whose pixel
data turns out to be corrupt stops the access that decodes it, naming it (:class:`DataError`).

Images of different sizes need ``preprocess`` (``"resize=256,crop=224"``, see
:mod:`invlab.data.preprocess`); without one, :func:`open_images` names two of the sizes.

:meth:`ImageDataset.fingerprint` is the sha256 of the files' bytes, read once in 1 MiB chunks
(see its docstring for the exact byte stream), never loading the data set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invlab.data.errors import DataError
from invlab.data.photos import photo_paths
from invlab.data.preprocess import Preprocess, parse_preprocess

__all__ = ["ImageDataset", "open_images", "open_photos", "IMAGE_SUFFIXES", "LABEL_FILES"]

log = logging.getLogger("invlab.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", ".pnm")
LABEL_FILES = ("labels.csv", "labels.txt")
_GRAY_MODES = {"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr"}
_CHUNK = 1 << 20
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


# ---------------------------------------------------------------------------- decoding

def _pil_error(path: Path, e: Exception) -> DataError:
    return DataError(f"{path}: unreadable image file ({e}); remove it from the folder or "
                     "convert it to PNG")


def _is_16bit(im: Any) -> bool:
    """Whether Pillow decodes ``im`` from 16-bit samples (raw mode ``RGB;16B`` etc.; PNG
    tiles carry the raw mode as a string, TIFF tiles as the first item of a tuple)."""
    for t in getattr(im, "tile", None) or []:
        args = t[3]
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args
                                                   and isinstance(args[0], str) else "")
        if ";16" in raw:
            return True
    return False


def _header(path: Path) -> tuple[int, int, str]:
    """``(width, height, mode)`` from the file header (no pixel decoding); refuses modes that
    cannot be converted exactly."""
    from PIL import Image, UnidentifiedImageError  # lazy: import time (0.09 s), image files only

    try:
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            sixteen = _is_16bit(im)
            fmt = im.format
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as e:
        raise _pil_error(path, e) from e
    if mode in ("RGB", "RGBA", "LA") and sixteen:
        raise DataError(f"{path}: a 16-bit {mode} image, which Pillow reads by keeping only the "
                        "high byte of each value; convert it to 8 bits, or store the images as "
                        "a float .npy in [0, 1]")
    if mode == "I" and not (fmt in ("PNG", "TIFF") and sixteen):
        raise DataError(f"{path}: a 32-bit integer image (Pillow mode I) has no defined range; "
                        "save it as 8- or 16-bit PNG, or as a float TIFF in [0, 1]")
    if mode not in _GRAY_MODES and mode not in _COLOUR_MODES:
        raise DataError(f"{path}: image mode {mode!r} is not supported (supported: L, RGB, LA, "
                        "RGBA, P, CMYK, YCbCr, 16-bit grey, float F); convert it to RGB")
    return int(w), int(h), mode


def decode_image(path: str | os.PathLike[str], channels: int | None = None) -> np.ndarray:
    """One image file as float32 ``[C, H, W]`` in [0, 1] (the mode table of this module).

    Args:
        path: an image file Pillow can read.
        channels: 3 replicates a grey image into R = G = B; 1 refuses a colour image;
            None keeps the file's own (1 for grey modes, 3 for colour).

    Raises:
        DataError: unreadable file, unsupported mode, float values outside [0, 1].
    """
    from PIL import Image, UnidentifiedImageError  # lazy: import time (0.09 s), image files only

    p = Path(path)
    try:
        with Image.open(p) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA", "LA") and _is_16bit(im):
                _header(p)  # raises the 16-bit colour message
            im.load()
            if mode == "1":
                a = np.asarray(im, dtype=np.float32)  # 0.0 / 1.0
            elif mode == "L":
                a = np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0
            elif mode in ("LA", "La"):
                a = np.asarray(im.getchannel(0), dtype=np.uint8).astype(np.float32) / 255.0
            elif mode.startswith("I;16") or mode == "I":
                if mode == "I":
                    _header(p)  # refuses 32-bit integers that are not a 16-bit PNG
                a = np.asarray(im).astype(np.float32)
                if a.size and (a.min() < 0 or a.max() > 65535):
                    raise DataError(f"{p}: 16-bit image with values outside 0..65535")
                a = a / np.float32(65535.0)
            elif mode == "F":
                a = np.asarray(im, dtype=np.float32)
                if a.size:
                    lo, hi = float(a.min()), float(a.max())
                    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
                        raise DataError(f"{p}: float image values must lie in [0, 1], found "
                                        f"range [{lo}, {hi}]; rescale it or store it as 8/16-bit")
            elif mode in ("RGB", "RGBA", "RGBX", "RGBa"):
                if mode == "RGBa":
                    raise DataError(f"{p}: premultiplied alpha (RGBa) is not supported")
                a = np.asarray(im, dtype=np.uint8)[..., :3].astype(np.float32) / 255.0
            elif mode in ("P", "PA", "CMYK", "YCbCr"):
                a = np.asarray(im.convert("RGB"), dtype=np.uint8).astype(np.float32) / 255.0
            else:
                _header(p)
                raise DataError(f"{p}: image mode {mode!r} is not supported")
    except DataError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as e:
        raise _pil_error(p, e) from e
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if channels == 3 and a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    elif channels == 1 and a.shape[0] == 3:
        raise DataError(f"{p}: a colour image in a grey data set")
    return np.require(a, dtype=np.float32, requirements=["C", "W"])


# ---------------------------------------------------------------------------- arrays

def array_layout(shape: Sequence[int], where: str) -> str:
    """``"nhw"``, ``"nchw"`` or ``"nhwc"`` for an image array of ``shape`` (see the module
    docstring); raises :class:`DataError` for an ambiguous or impossible shape."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise DataError(f"{where}: images must be [N, H, W], [N, C, H, W] or [N, H, W, C] "
                        f"(C = 1 or 3), found shape {tuple(shape)}")
    a, c = int(shape[1]), int(shape[3])
    first, last = a in (1, 3), c in (1, 3)
    if last and not first:
        return "nhwc"
    if first and not last:
        return "nchw"
    why = "both axis 1 and the last axis could be channels" if first else \
        "neither axis 1 nor the last axis is 1 or 3 channels"
    raise DataError(f"{where}: cannot tell the channel axis of images of shape {tuple(shape)} "
                    f"({why}); save them as [N, C, H, W] or [N, H, W, C] with C = 1 or 3 and "
                    "H, W not 1 or 3")


def _to_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhw":
        return a[:, None]
    if layout == "nhwc":
        return a.transpose(0, 3, 1, 2)
    return a


def _array_pixels(a: np.ndarray, where: str, check_range: bool = True) -> torch.Tensor:
    """uint8 ÷ 255 or float in [0, 1] → float32 tensor (same shape)."""
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32) / np.float32(255.0))
    if np.issubdtype(a.dtype, np.floating):
        if check_range and a.size:
            lo, hi = float(a.min()), float(a.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
                raise DataError(f"{where}: float images must lie in [0, 1], found range "
                                f"[{lo}, {hi}]; divide 0..255 data by 255 or store it as uint8")
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    raise DataError(f"{where}: images must be uint8 (0..255) or float in [0, 1], found dtype "
                    f"{a.dtype}")


def _check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: labels must be [N] with N = {n} (the number of images), "
                        f"found shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"{where}: labels must be integers >= 0, found dtype {y.dtype}"
                        + (f", min {y.min()}" if len(y) and np.issubdtype(y.dtype, np.number)
                           else ""))
    return y.astype(np.int64)


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if head != b"\x93NUMPY":
        raise DataError(f"{path}: not a .npy file (expected numpy.save output)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise DataError(f"{path}: the array holds Python objects (pickled data), which "
                            "invlab never loads; save a numeric array") from None
        raise DataError(f"{path}: not a readable .npy file ({e})") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy file ({e})") from e


def _npz_arrays(path: Path, labels: str | os.PathLike[str] | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    def unreadable(why: str = "") -> DataError:
        return DataError(f"{path}: not a readable .npz file (expected numpy.savez output with "
                         f"arrays images, labels{'; ' + why if why else ''})")

    try:
        with open(path, "rb") as fh:
            is_zip = zipfile.is_zipfile(fh)
    except OSError as e:
        raise unreadable(str(e)) from e
    if not is_zip:  # else np.load would try to unpickle it
        raise unreadable()
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise unreadable(str(e)) from e
    with f:
        need = ("images",) if labels is not None else ("images", "labels")
        missing = [k for k in need if k not in f.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; found {f.files}. Save with "
                            "np.savez(path, images=[N,H,W] or [N,C,H,W], labels=[N])")
        arrays: dict[str, np.ndarray] = {}
        for k in ("images", "labels"):
            if k not in f.files or (k == "labels" and labels is not None):
                continue
            try:
                arrays[k] = f[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise DataError(f"{path}: array {k!r} holds Python objects (pickled data), "
                                    "which invlab never loads; save numeric arrays (images "
                                    "uint8 or float, labels integers)") from None
                raise unreadable(f"array {k!r}: {e}") from e
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise unreadable(f"array {k!r}: {e}") from e
    y = arrays.get("labels")
    if labels is not None:
        y = _load_npy(Path(labels), mmap=False)
    return arrays["images"], y


# ---------------------------------------------------------------------------- CIFAR

def _pickle_message(path: Path) -> DataError:
    return DataError(f"{path}: this is the pickled CIFAR 'python version', which invlab never "
                     "unpickles; download the binary version instead (cifar-10-binary.tar.gz "
                     "→ cifar-10-batches-bin/data_batch_1.bin … test_batch.bin, or "
                     "cifar-100-binary.tar.gz → train.bin, test.bin) and pass a .bin file")


def _looks_pickled(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) in _PICKLE_MAGIC
    except OSError:
        return False


def _cifar_layout(path: Path) -> tuple[int, int]:
    """``(label_bytes, records)`` of a CIFAR binary file, from its size and name."""
    size = path.stat().st_size
    ok = [k for k in (1, 2) if size and size % (k + 3072) == 0]
    if len(ok) == 2:  # both divide: decide by the conventional names
        ok = [2] if path.name in ("train.bin", "test.bin") else [1]
    if not ok:
        if _looks_pickled(path):
            raise _pickle_message(path)
        raise DataError(f"{path}: {size:,} bytes is not a whole number of CIFAR records (3,073 "
                        "bytes for CIFAR-10: 1 label + 3,072 pixels; 3,074 for CIFAR-100: 2 "
                        "labels + 3,072 pixels); is it a CIFAR binary file?")
    k = ok[0]
    return k, size // (k + 3072)


def _cifar_names(path: Path, label_bytes: int) -> list[str] | None:
    name = "batches.meta.txt" if label_bytes == 1 else "fine_label_names.txt"
    f = path.parent / name
    if not f.is_file():
        return None
    names = [ln.strip() for ln in f.read_text(errors="replace").splitlines() if ln.strip()]
    return names or None


# ---------------------------------------------------------------------------- labels files

def _read_labels_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the labels file ({e})") from e
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        name, sep, lab = (part.strip() for part in s.rpartition(",")) if "," in s else \
            (s, "", "")
        if not sep or not name or not lab:
            raise DataError(f"{path}:{n}: expected 'filename,label', found {s!r}")
        if n == 1 and (name.lower(), lab.lower()) in {("filename", "label"), ("file", "label")}:
            continue
        if name in out and out[name] != lab:
            raise DataError(f"{path}:{n}: {name} is labelled twice ({out[name]} and {lab})")
        out[name] = lab
    if not out:
        raise DataError(f"{path}: the labels file names no images (one 'filename,label' a line)")
    return out


def _index_names(names: Sequence[str], where: str, what: str = "folder name"
                 ) -> tuple[np.ndarray, dict[str, int] | None]:
    """Integer names → themselves (mapping None); else sorted names → 0, 1, … (logged)."""
    uniq = sorted(set(names))
    if all(re.fullmatch(r"\d+", n) for n in uniq):
        return np.array([int(n) for n in names], dtype=np.int64), None
    index = {n: i for i, n in enumerate(uniq)}
    log.info("%s: classes by sorted %s: %s", where, what,
             ", ".join(f"{n}→{i}" for n, i in index.items()))
    return np.array([index[n] for n in names], dtype=np.int64), index


# ---------------------------------------------------------------------------- the dataset

class ImageDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A lazy image data set (build it with :func:`open_images`).

    ``ds[i]`` → ``(image, label)`` (``image`` float32 ``[C, H, W]`` in [0, 1], ``label`` int)
    or ``image`` alone when :attr:`labels` is None.

    Attributes:
        source: the path (or ``"photos"``) it was opened from.
        format: ``"class-folder"``, ``"flat-folder"``, ``"npz"``, ``"npy"``, ``"cifar10-bin"``,
            ``"cifar100-bin"`` or ``"photos"``.
        labels: LongTensor ``[N]`` or None.
        classes: class names by index (``classes[k]`` names label ``k``) when the labels came
            from names (folders, a labels file with names, CIFAR meta files), else None.
        class_to_idx: ``{name: index}`` when names were mapped to indices in sorted order
            (non-integer folder names / labels), else None; print and record it.
        preprocess: the parsed :class:`~invlab.data.preprocess.Preprocess`.
        image_shape: ``(C, H, W)`` of every item (after preprocessing).
    """

    def __init__(self, *, source: str, fmt: str, n: int, image_shape: tuple[int, int, int],
                 labels: np.ndarray | None, classes: list[str] | None,
                 class_to_idx: dict[str, int] | None, preprocess: Preprocess,
                 files: list[Path] | None = None, names: list[str] | None = None,
                 array: np.ndarray | None = None, layout: str = "nchw",
                 array_path: Path | None = None, cifar: tuple[int, int] | None = None,
                 hash_files: list[tuple[str, Path]] | None = None,
                 channels: int = 3) -> None:
        self.source = source
        self.format = fmt
        self._n = int(n)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.labels = None if labels is None else torch.from_numpy(
            np.ascontiguousarray(labels, dtype=np.int64))
        self.classes = classes
        self.class_to_idx = class_to_idx
        self.preprocess = preprocess
        self._files = files
        self._names = names
        self._array = array
        self._layout = layout
        self._array_path = array_path
        self._cifar = cifar
        self._hash_files = hash_files or []
        self._channels = channels
        #: the labels file / labels .npy read (None: labels from folders or the data file)
        self.labels_file: str | None = None

    # --- pickling for DataLoader workers: never pickle a memory map's contents
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._array_path is not None:
            state["_array"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _mapped(self) -> np.ndarray:
        if self._array is None:
            assert self._array_path is not None
            if self._cifar is not None:
                k, n = self._cifar
                self._array = np.memmap(self._array_path, dtype=np.uint8, mode="r",
                                        shape=(n, k + 3072))
            else:
                self._array = _load_npy(self._array_path, mmap=True)
        return self._array

    def __len__(self) -> int:
        return self._n

    def _raw(self, i: int) -> torch.Tensor:
        """Item ``i`` before preprocessing: float32 ``[C, H, W]`` in [0, 1]."""
        if self._files is not None:
            return torch.from_numpy(decode_image(self._files[i], self._channels))
        a = self._mapped()
        where = f"{self.source} (image {i})"
        if self._cifar is not None:
            k = self._cifar[0]
            return _array_pixels(np.asarray(a[i, k:]).reshape(3, 32, 32), where)
        return _array_pixels(np.asarray(_to_nchw(a[i:i + 1], self._layout)[0]), where)

    def name_of(self, i: int) -> str:
        """A name for item ``i`` in messages: its file, or ``PATH[i]``."""
        if self._files is not None:
            return str(self._files[i])
        return f"{self.source}[{i}]"

    def image(self, i: int) -> torch.Tensor:
        """Image ``i``: float32 ``[C, H, W]`` in [0, 1], preprocessed."""
        n = self._n
        if not -n <= int(i) < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        i = int(i) % n
        x = self._raw(i)
        if self.preprocess:
            x = self.preprocess(x, self.name_of(i))
        return x

    def __getitem__(self, i: int) -> Any:
        x = self.image(i)
        if self.labels is None:
            return x
        return x, int(self.labels[int(i) % self._n])

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._n):
            yield self[i]

    def to_tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every image (or the first ``limit``) in memory: ``[N, C, H, W]`` float32 and the
        labels (or None). Arrays without preprocessing convert in one vectorized step."""
        n = self._n if limit is None else min(int(limit), self._n)
        y = None if self.labels is None else self.labels[:n].clone()
        if self._files is None and not self.preprocess:
            a = self._mapped()
            if self._cifar is not None:
                k = self._cifar[0]
                x = _array_pixels(np.asarray(a[:n, k:]).reshape(n, 3, 32, 32), self.source)
            else:
                x = _array_pixels(np.asarray(_to_nchw(a[:n], self._layout)), self.source)
            return x.contiguous(), y
        out = torch.empty((n, *self.image_shape), dtype=torch.float32)
        for i in range(n):  # one decode per file: the loop is the file reading itself
            out[i] = self.image(i)
        return out, y

    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the data, computed in one streaming pass (1 MiB chunks).

        The byte stream hashed: ``b"invlab-images-v1\\n"``, ``f"preprocess={spec}\\n"``, then
        for each file in order (folders: the images in item order; ``.npy``/``.npz``/``.bin``:
        the data file, then a labels file if given) ``f"{name}\\t{label}\\t{size}\\n"``
        followed by its bytes, where ``name`` is the path relative to the folder (``/``
        separators) or the file name, ``label`` the item's label index ('' when unlabelled
        or not a folder item) and ``size`` the byte count. Moving the data elsewhere keeps
        the fingerprint; changing one pixel, a label, a file name or the preprocess changes it.
        """
        h = hashlib.sha256()
        h.update(b"invlab-images-v1\n")
        h.update(f"preprocess={self.preprocess.spec}\n".encode())
        labels = self.labels.tolist() if self.labels is not None else None
        if self._files is not None:
            assert self._names is not None
            items = [(self._names[i], "" if labels is None else str(labels[i]), f)
                     for i, f in enumerate(self._files)]
        else:
            items = [(name, "", f) for name, f in self._hash_files]
        for name, lab, f in items:
            try:
                size = f.stat().st_size
                h.update(f"{name}\t{lab}\t{size}\n".encode())
                with open(f, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        h.update(chunk)
            except OSError as e:
                raise DataError(f"{f}: cannot read ({e})") from e
        return "sha256:" + h.hexdigest()

    def mapping_text(self) -> str | None:
        """``"classes by sorted folder name: cat→0, dog→1"`` (``label`` for a labels file)
        when names were mapped, else None."""
        if not self.class_to_idx:
            return None
        what = "label" if self.format == "flat-folder" else "folder name"
        return f"classes by sorted {what}: " + ", ".join(
            f"{n}→{i}" for n, i in sorted(self.class_to_idx.items(), key=lambda t: t[1]))

    def describe(self) -> dict[str, Any]:
        """What to record in results: source, format, images, shape, preprocess, mapping."""
        return {"source": self.source, "format": self.format, "images": self._n,
                "image_shape": list(self.image_shape), "labelled": self.labels is not None,
                "preprocess": self.preprocess.spec or None, "classes": self.classes,
                "class_to_idx": self.class_to_idx, "labels_file": self.labels_file}

    def __repr__(self) -> str:
        pre = f", preprocess={self.preprocess.spec!r}" if self.preprocess else ""
        lab = "labelled" if self.labels is not None else "unlabelled"
        return (f"ImageDataset({self.source!r}, {self.format}, {self._n:,} images "
                f"{list(self.image_shape)}, {lab}{pre})")


# ---------------------------------------------------------------------------- opening

def _uniform_size(sizes: Sequence[tuple[int, int]], files: Sequence[Any], pre: Preprocess,
                  source: str) -> tuple[int, int]:
    """The common output ``(H, W)`` (sizes are ``(w, h)`` per file), or a one-line error."""
    out: dict[tuple[int, int], int] = {}
    for j, (w, h) in enumerate(sizes):
        o = pre.output_size(h, w, str(files[j])) if pre else (h, w)
        if o not in out:
            out[o] = j
            if len(out) == 2:
                (a, ja), (b, jb) = out.items()
                if not pre:
                    raise DataError(
                        f"{files[jb]}: image size {sizes[jb][0]}x{sizes[jb][1]} differs from "
                        f"{sizes[ja][0]}x{sizes[ja][1]} of {files[ja]}; pass a preprocess spec "
                        "(preprocess='resize=256,crop=224' / --preprocess resize=256,crop=224) "
                        "or resize all images to one size")
                raise DataError(
                    f"{source}: after preprocess {pre.spec!r}, {files[ja]} is {a[1]}x{a[0]} and "
                    f"{files[jb]} is {b[1]}x{b[0]} (WxH); add a crop (e.g. "
                    f"preprocess='resize=256,crop=224') so that every image has one size")
    if not out:
        raise DataError(f"{source}: no images")
    return next(iter(out))


def _files_dataset(source: str, fmt: str, root: Path, files: list[Path],
                   labels: np.ndarray | None, classes: list[str] | None,
                   mapping: dict[str, int] | None, pre: Preprocess) -> ImageDataset:
    heads = [_header(f) for f in files]
    gray = all(m in _GRAY_MODES for _, _, m in heads)
    channels = 1 if gray else 3
    h, w = _uniform_size([(a, b) for a, b, _ in heads], files, pre, source)
    names = [f.relative_to(root).as_posix() for f in files]
    return ImageDataset(source=source, fmt=fmt, n=len(files), image_shape=(channels, h, w),
                        labels=labels, classes=classes, class_to_idx=mapping, preprocess=pre,
                        files=files, names=names, channels=channels)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _open_folder(root: Path, labels: str | os.PathLike[str] | None, pre: Preprocess
                 ) -> ImageDataset:
    """A class folder (``ROOT/<class>/<file>``) when ``root`` has sub-folders, else a flat
    folder of images (labelled by a labels file, or unlabelled)."""
    entries = sorted(p for p in root.iterdir() if _visible(p))
    subdirs = [p for p in entries if p.is_dir()]
    top_files = [p for p in entries if p.is_file()]
    if not subdirs and not top_files:
        raise DataError(f"{root}: expected one sub-folder per class (ROOT/<class>/<images>) or "
                        "a flat folder of images, found nothing")
    if any(re.fullmatch(r"data_batch_\d+|test_batch", p.name) for p in top_files):
        raise _pickle_message(root)  # cifar-10-batches-py/: pickles without a suffix
    if subdirs:
        return _open_class_folder(root, subdirs, top_files, labels, pre)
    return _open_flat_folder(root, top_files, labels, pre)


def _open_class_folder(root: Path, subdirs: list[Path], top_files: list[Path],
                       labels: str | os.PathLike[str] | None, pre: Preprocess) -> ImageDataset:
    """``ROOT/<class>/<file>``: each file labelled by its sub-folder's name."""
    if labels is not None:
        raise DataError(f"{root}: a class folder takes its labels from the sub-folder names; "
                        "labels= is for a flat folder of images or a .npy")
    if top_files:
        log.warning("%s: %d file(s) beside the class folders are ignored (e.g. %s)", root,
                    len(top_files), top_files[0].name)
    files: list[Path] = []
    names: list[str] = []
    for d in subdirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and _visible(f):
                files.append(f)
                names.append(d.name)
    if not files:
        raise DataError(f"{root}: the class folders hold no files")
    y, mapping = _index_names(names, str(root))
    classes = sorted(mapping, key=mapping.__getitem__) if mapping else None
    return _files_dataset(str(root), "class-folder", root, files, y, classes, mapping, pre)


def _labels_file_for(root: Path, labels: str | os.PathLike[str] | None) -> Path | None:
    """The flat folder's labels file: ``labels`` if given, else ``ROOT/labels.csv`` or
    ``ROOT/labels.txt`` if present (logged; both present is an error), else None."""
    lab_path: Path | None = Path(labels) if labels is not None else None
    if lab_path is None:
        found = [root / n for n in LABEL_FILES if (root / n).is_file()]
        if len(found) > 1:
            raise DataError(f"{root}: both {found[0].name} and {found[1].name} are present; "
                            "pass the labels file to use with labels=")
        if found:
            lab_path = found[0]
            log.info("%s: labels from %s", root, lab_path)
    if lab_path is not None and not lab_path.is_file():
        raise DataError(f"{lab_path}: no such labels file")
    return lab_path


def _open_flat_folder(root: Path, top_files: list[Path],
                      labels: str | os.PathLike[str] | None, pre: Preprocess) -> ImageDataset:
    """``ROOT/<file>``: labelled by its labels file (:func:`_labels_file_for`), if any."""
    lab_path = _labels_file_for(root, labels)
    images = [p for p in top_files if p.name not in LABEL_FILES
              and (lab_path is None or p.resolve() != lab_path.resolve())]
    if lab_path is None:
        return _files_dataset(str(root), "flat-folder", root, images, None, None, None, pre)
    table = _read_labels_file(lab_path)
    key = _listed_names(root, images, table, lab_path)
    y, mapping = _index_names([table[key[p.name]] for p in images], str(lab_path), "label")
    classes = sorted(mapping, key=mapping.__getitem__) if mapping else None
    ds = _files_dataset(str(root), "flat-folder", root, images, y, classes, mapping, pre)
    ds.labels_file = str(lab_path)
    return ds


def _listed_names(root: Path, images: list[Path], table: dict[str, str],
                  lab_path: Path) -> dict[str, str]:
    """``{file name: its name in the labels file}``. A listed name is a file name, or a file
    name without its extension when that is unique; every listed name must match a file and
    every file a listed name (else a one-line error)."""
    stems: dict[str, int] = {}
    for p in images:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    key = {p.name: (p.name if p.name in table else p.stem if stems[p.stem] == 1
                    and p.stem in table else None) for p in images}
    present = {k for k in key.values() if k is not None}
    missing = [n for n in table if n not in present]
    if missing:
        raise DataError(f"{lab_path}: {len(missing):,} listed file(s) are not in {root} (e.g. "
                        f"{missing[0]}); fix the labels file or restore the images")
    unlisted = [p.name for p in images if key[p.name] is None]
    if unlisted:
        raise DataError(f"{root}: {len(unlisted):,} file(s) are not in the labels file "
                        f"{lab_path.name} (e.g. {unlisted[0]}); list them or move them out")
    return {name: k for name, k in key.items() if k is not None}  # every file is listed


def _open_array(path: Path, fmt: str, x: np.ndarray, y: np.ndarray | None, pre: Preprocess,
                hash_files: list[tuple[str, Path]], mmap: bool) -> ImageDataset:
    layout = array_layout(x.shape, str(path))
    n = int(x.shape[0])
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: images must be uint8 (0..255) or float in [0, 1], found dtype "
                        f"{x.dtype}")
    if not mmap and np.issubdtype(x.dtype, np.floating):
        _array_pixels(x[:0], str(path))
        if x.size:
            lo, hi = float(x.min()), float(x.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
                raise DataError(f"{path}: float images must lie in [0, 1], found range "
                                f"[{lo}, {hi}]; divide 0..255 data by 255 or store it as uint8")
    if layout == "nhw":
        c, h, w = 1, int(x.shape[1]), int(x.shape[2])
    elif layout == "nhwc":
        c, h, w = int(x.shape[3]), int(x.shape[1]), int(x.shape[2])
    else:
        c, h, w = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
    if layout == "nhwc":
        log.info("%s: channels-last images %s read as [N, %d, %d, %d]", path, x.shape, c, h, w)
    if y is not None:
        y = _check_labels(np.asarray(y), n, str(path))
    oh, ow = pre.output_size(h, w, str(path)) if pre else (h, w)
    return ImageDataset(source=str(path), fmt=fmt, n=n, image_shape=(c, oh, ow), labels=y,
                        classes=None, class_to_idx=None, preprocess=pre,
                        array=x, layout=layout, array_path=path if mmap else None,
                        hash_files=hash_files)


def _open_cifar(path: Path, labels: Any, pre: Preprocess) -> ImageDataset:
    if labels is not None:
        raise DataError(f"{path}: a CIFAR binary file holds its own labels; drop labels=")
    k, n = _cifar_layout(path)
    rec = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, k + 3072))
    y = np.asarray(rec[:, k - 1], dtype=np.int64)  # CIFAR-100: the fine label (2nd byte)
    limit = 10 if k == 1 else 100
    if len(y) and int(y.max()) >= limit:
        raise DataError(f"{path}: label {int(y.max())} in a CIFAR-{limit} file (labels "
                        f"0..{limit - 1}); the file is corrupt or not a CIFAR binary")
    names = _cifar_names(path, k)
    if names is not None and len(names) != limit:
        log.warning("%s: %d class names beside it, expected %d; ignored", path, len(names), limit)
        names = None
    oh, ow = pre.output_size(32, 32, str(path)) if pre else (32, 32)
    del rec
    return ImageDataset(source=str(path), fmt=f"cifar{limit}-bin", n=n, image_shape=(3, oh, ow),
                        labels=y, classes=names, class_to_idx=None, preprocess=pre,
                        array_path=path, cifar=(k, n), hash_files=[(path.name, path)])


def _sibling_labels(p: Path) -> Path | None:
    """The labels ``.npy`` of the CIFAR-10-C / CIFAR-10.1 layouts beside ``p``:
    ``<name with _data → _labels>.npy`` (``cifar10.1_v6_data.npy``), else ``labels.npy``."""
    cands = []
    if "_data" in p.stem:
        cands.append(p.with_name(p.stem.replace("_data", "_labels") + p.suffix))
    if p.name != "labels.npy":
        cands.append(p.with_name("labels.npy"))
    for c in cands:
        if c.is_file():
            log.info("%s: labels from %s (beside it)", p, c)
            return c
    return None


def open_photos(preprocess=None):  # type: ignore[no-untyped-def]
    """The named source ``photos`` (:mod:`invlab.data.photos`) as an unlabelled
    :class:`ImageDataset` (float32 ``[3, H, W]`` in [0, 1] after ``preprocess``, which their
    mixed sizes require)."""
    pre = parse_preprocess(preprocess)
    found = photo_paths()
    files = [p for _, p in found]
    ds = _files_dataset("photos", "photos", Path("/"), files, None, None, None, pre)
    ds._names = [n for n, _ in found]  # fingerprint names: where each photo comes from
    ds.photo_names = [n for n, _ in found]  # type: ignore[attr-defined]
    return ds


def open_images(path: str | os.PathLike[str], *, preprocess: str | Preprocess | None = None,
                labels: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Open image data lazily (formats, modes and channel rules: this module's docstring).

    Args:
        path: an image folder (class sub-folders or flat), a ``.npz``, a ``.npy``, a CIFAR
            ``.bin`` file, or the name ``"photos"``.
        preprocess: a spec such as ``"resize=256,crop=224"`` (:func:`parse_preprocess`).
        labels: a flat folder's labels file (``filename,label`` lines), or for ``.npy``/
            ``.npz`` a labels ``.npy`` of ``[N]`` integers.

    Returns:
        an :class:`ImageDataset`; only file headers have been read.

    Raises:
        DataError: one line naming the file and the fix (missing path, unreadable or
            unsupported file, pickled data, mixed sizes without ``preprocess``, a crop larger
            than an image, a labels file naming missing files, ambiguous array layout, …).
    """
    pre = parse_preprocess(preprocess)
    if isinstance(path, str) and path.strip().lower() == "photos" and not Path(path).exists():
        if labels is not None:
            raise DataError("photos: the bundled photographs are unlabelled; drop labels=")
        return open_photos(pre)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder (expected an image folder, a .npz, a "
                        ".npy, a CIFAR .bin file, or the name 'photos')")
    if p.is_dir():
        return _open_folder(p, labels, pre)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        x, y = _npz_arrays(p, labels)
        hf = [(p.name, p)] + ([(Path(labels).name, Path(labels))] if labels is not None else [])
        ds = _open_array(p, "npz", x, y, pre, hf, mmap=False)
        ds.labels_file = None if labels is None else str(labels)
        return ds
    if suffix == ".npy":
        x = _load_npy(p, mmap=True)
        y = None
        hf = [(p.name, p)]
        if labels is None:
            labels = _sibling_labels(p)
        if labels is not None:
            lp = Path(labels)
            if not lp.is_file():
                raise DataError(f"{lp}: no such labels file (a .npy of [N] integers)")
            y = _load_npy(lp, mmap=False)
            hf.append((lp.name, lp))
        ds = _open_array(p, "npy", x, y, pre, hf, mmap=True)
        ds.labels_file = None if labels is None else str(labels)
        return ds
    if suffix == ".bin":
        return _open_cifar(p, labels, pre)
    if _looks_pickled(p) or p.name.startswith(("data_batch_", "test_batch")):
        raise _pickle_message(p)
    if suffix in (".gz", ".tgz", ".tar"):
        raise DataError(f"{p}: an archive; extract it first and pass the folder or a file "
                        "inside (for CIFAR: a .bin file of the binary version)")
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{p}: a single image; put it in a folder and pass the folder")
    raise DataError(f"{p}: unsupported format {p.suffix!r}; give an image folder, a .npz "
                    "(images, labels), a .npy (with labels=labels.npy) or a CIFAR .bin file")
