"""Test sets for the generalization study (D22 on MNIST): the ID split and label-preserving shifts.

All images are pixel-space float ``[N, 1, 28, 28]`` in [0, 1]; labels ``[N]`` long.

- ``mnist_id_split``: standard MNIST (every real image found, deduplicated) split with a
  seeded permutation into a training pool and a held-out ID test split;
- shifts of the ID test images (``make_shift``): ``blur`` (Gaussian, σ), ``sketch`` (Sobel
  edge magnitude, per-image max → 1), ``thick`` / ``thin`` (grey dilation with the 3×3 square / erosion with the
  3×3 cross),
  ``noise`` (additive Gaussian, seeded, clipped), ``contrast`` (``0.5 + c·(x − 0.5)``);
- ``digits_mnist_format``: scikit-learn's 8×8 digits made the way MNIST was: bounding box
  scaled (bilinear, aspect preserved) into a 20×20 box, pasted in 28×28 with its centre of
  mass at the centre;
- ``natural_adversarial``: the ID test images that a fixed panel of reference models
  misclassifies (ImageNet-A's filtering).

``cached`` stores any built set as ``.npz`` under ``$INVLAB_CACHE/generalization`` (atomic
write), keyed by the builder's parameters and a fingerprint of its input data.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from invlab.cache import CacheMismatch, load_or_create
from invlab.config import canonical_json
from invlab.data.sources import DataError, cache_dir, load_source
from invlab.io import atomic_write_bytes

SHIFTS = ("blur", "sketch", "thick", "thin", "noise", "contrast")
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "blur": {"sigma": 1.0}, "sketch": {}, "thick": {}, "thin": {},
    "noise": {"std": 0.3}, "contrast": {"factor": 0.35},
}


def fingerprint(*arrays: np.ndarray | torch.Tensor) -> str:
    """sha256 (first 16 hex) over the arrays' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.numpy() if isinstance(a, torch.Tensor) else a
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def mnist_id_split(n_pool: int = 10_000, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pool_x, pool_y, test_x, test_y)``: pixel images ``[N, 1, 28, 28]`` in [0, 1].

    A seeded permutation of ``load_source("mnist")``; the first ``n_pool`` images form the
    training pool, the rest the ID test split.
    """
    ds = load_source("mnist")
    if len(ds) <= n_pool:
        raise DataError(f"mnist has {len(ds):,} images; need more than n_pool={n_pool:,} to "
                        f"leave a test split: use a smaller pool (n_pool / --n-pool, e.g. "
                        f"{max(1, len(ds) * 3 // 5):,}) or put the MNIST IDX files in "
                        "$INVLAB_DATA/mnist (`invlab data fetch mnist`)")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    x = torch.from_numpy(ds.images).float().div_(255.0)[perm]
    y = torch.from_numpy(ds.labels).long()[perm]
    return x[:n_pool], y[:n_pool], x[n_pool:], y[n_pool:]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, kernel ``2·ceil(3σ)+1``, zero padding. ``[N, C, H, W]``."""
    r = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, r), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(r, 0), groups=c)


def sobel_sketch(x: torch.Tensor) -> torch.Tensor:
    """Edge map ``sqrt(Gx² + Gy²)`` (Sobel), each image scaled so its max is 1."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype)
    c = x.shape[1]
    w = torch.stack([kx, kx.T]).unsqueeze(1).repeat(c, 1, 1, 1)  # [2C, 1, 3, 3]
    g = F.conv2d(x, w, padding=1, groups=c).view(x.shape[0], c, 2, *x.shape[2:])
    mag = g.pow(2).sum(2).sqrt()
    peak = mag.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1, 1)
    return (mag / peak).clamp(0, 1)


def _erode_cross(x: torch.Tensor) -> torch.Tensor:
    """Grey erosion with the 3×3 cross (pixel and its 4 neighbours; zero outside)."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    shifted = [p[..., 1:h + 1, 1:w + 1], p[..., :h, 1:w + 1], p[..., 2:, 1:w + 1],
               p[..., 1:h + 1, :w], p[..., 1:h + 1, 2:]]
    return torch.stack(shifted).amin(0)


def make_shift(name: str, x: torch.Tensor, seed: int = 0, **params: float) -> torch.Tensor:
    """Apply shift ``name`` (one of :data:`SHIFTS`) to pixel images ``x [N, C, H, W]`` in [0, 1].

    Labels are unchanged; the result is in [0, 1] with the input's shape.
    """
    if name not in SHIFTS:
        raise DataError(f"unknown shift {name!r}; valid: {', '.join(SHIFTS)}")
    p = {**DEFAULT_PARAMS[name], **params}
    if name == "blur":
        out = gaussian_blur(x, float(p["sigma"]))
    elif name == "sketch":
        out = sobel_sketch(x)
    elif name == "thick":
        out = F.max_pool2d(x, 3, stride=1, padding=1)
    elif name == "thin":
        out = _erode_cross(x)
    elif name == "noise":
        gen = torch.Generator().manual_seed(seed)
        out = x + float(p["std"]) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    else:
        out = 0.5 + float(p["factor"]) * (x - 0.5)
    return out.clamp(0.0, 1.0)


def _mnist_box(img: np.ndarray, box: int = 20, size: int = 28) -> np.ndarray:
    """One image ``[h, w]`` in [0, 1] → ``[size, size]``: bounding box scaled into
    ``box×box`` (aspect kept, bilinear with antialias), centre of mass at the centre."""
    rows, cols = np.nonzero(img > 0)
    if len(rows) == 0:
        return np.zeros((size, size), np.float32)
    crop = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    s = box / max(crop.shape)
    hw = (max(1, round(crop.shape[0] * s)), max(1, round(crop.shape[1] * s)))
    t = torch.from_numpy(crop.astype(np.float32))[None, None]
    r = F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=True)[0, 0]
    r = r.clamp(0, 1).numpy()
    mass = r.sum()
    yy, xx = np.indices(r.shape)
    cy, cx = (yy * r).sum() / mass, (xx * r).sum() / mass
    top = int(np.clip(round((size - 1) / 2 - cy), 0, size - hw[0]))
    left = int(np.clip(round((size - 1) / 2 - cx), 0, size - hw[1]))
    out = np.zeros((size, size), np.float32)
    out[top:top + hw[0], left:left + hw[1]] = r
    return out


def digits_mnist_format() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits in MNIST's format: ``[N, 1, 28, 28]`` in [0, 1], labels.

    One-off preprocessing (cached by :func:`cached`); each image has its own bounding box.
    """
    ds = load_source("digits")
    imgs = ds.images[:, 0].astype(np.float32) / 255.0
    out = np.stack([_mnist_box(im) for im in imgs])
    return torch.from_numpy(out)[:, None], torch.from_numpy(ds.labels).long()


def natural_adversarial(x: torch.Tensor, y: torch.Tensor, predictions: torch.Tensor,
                        rule: str = "any") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the images a reference panel misclassifies.

    Args:
        x, y: ``[N, ...]`` images and ``[N]`` labels.
        predictions: ``[R, N]`` predicted classes of ``R`` reference models.
        rule: ``any`` (≥ 1 model wrong) or ``majority`` (more than half wrong).

    Returns:
        ``(x_kept, y_kept, index)`` with ``index`` the kept positions.
    """
    wrong = (predictions != y.unsqueeze(0)).sum(0)
    if rule == "any":
        keep = wrong >= 1
    elif rule == "majority":
        keep = wrong * 2 > predictions.shape[0]
    else:
        raise DataError(f"unknown natural-adversarial rule {rule!r}; valid: any, majority")
    idx = torch.nonzero(keep).flatten()
    return x[idx], y[idx], idx


def _digest(name: str, key: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"name": name, **key}).encode()).hexdigest()[:16]


def cache_path(name: str, key: dict[str, Any], root: str | Path | None = None) -> Path:
    """``<root>/<name>-<sha256(name, key)[:16]>.npz``; root defaults to
    ``$INVLAB_CACHE/generalization``."""
    return Path(root or cache_dir() / "generalization") / f"{name}-{_digest(name, key)}.npz"


def load_cached(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of a test set written by :func:`cached`, after checking that it
    proves what it is: the key it records hashes (with the name) to the digest in its file
    name, and its arrays have the content fingerprint it records.

    Raises:
        invlab.cache.CacheMismatch: (a ``ValueError``) naming the file and what differs; the
            generalization study rebuilds such a file on its next run.
    """

    p = Path(path)
    name, _, digest = p.stem.rpartition("-")
    try:
        with np.load(p, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
            key = json.loads(str(f["key"])) if "key" in f.files else None
            content = str(f["content"]) if "content" in f.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CacheMismatch(p, f"not a readable test-set file ({e})") from e
    if not isinstance(key, dict):
        raise CacheMismatch(p, "it records no key")
    if not name or _digest(name, key) != digest:
        raise CacheMismatch(p, f"the test set it records ({key}) hashes to "
                               f"{name}-{_digest(name, key)}, not to its name")
    if content is not None and fingerprint(images, labels) != content:
        raise CacheMismatch(p, f"its images and labels do not have the fingerprint {content} "
                               "it records (edited or corrupt)")
    return torch.from_numpy(images).float(), torch.from_numpy(labels).long()


def cached(name: str, key: dict[str, Any], build: Callable[[], tuple[torch.Tensor, torch.Tensor]],
           root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load test set ``name`` from ``<cache>/generalization/<name>-<hash(key)>.npz`` or build
    it with ``build()`` and store it there atomically. Returns ``(images, labels)``.

    A cached file is used only if it proves what it is (:func:`load_cached`); one that does
    not is rebuilt and replaced with one WARNING line. Building runs under the entry's lock
    (:func:`invlab.cache.load_or_create`): a concurrent run waits for it and reuses it."""

    path = cache_path(name, key, root)

    def create() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = build()
        images, labels = x.numpy().astype(np.float32), y.numpy()
        buf = io.BytesIO()
        np.savez_compressed(buf, images=images, labels=labels, key=np.array(json.dumps(key)),
                            content=np.array(fingerprint(images, labels)))
        atomic_write_bytes(path, buf.getvalue())
        return x.float(), y.long()

    value, _ = load_or_create(path, load_cached, create, what=f"building test set {name}",
                              rebuild="rebuilding it")
    return value
