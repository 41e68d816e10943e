"""Transforming datasets (M23 §4): exclude a class, zero-pad, normalize, split, transform.

Recipe (``docs/architecture.md``, Decisions): drop one class (MNIST's 9 to avoid 6/9
confusion; Fashion-MNIST's last class, also 9) so both have 9 classes; zero-pad 28→36;
split with a seeded permutation into 10k train / 2k validation / the rest for test (capped at
50k, the paper's split when ≥62k images exist); normalize to zero mean and unit std with the
training split's statistics; give every validation and test image one seeded random group
element. The training split stays untransformed: training applies fresh random elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from invlab.data.errors import DataError, DataMismatchError
from invlab.data.sources import Dataset, load_source
from invlab.groups import Group, create_group


@dataclass(frozen=True)
class DataConfig:
    """How to build a transforming dataset. ``data_seed`` fixes splits and test elements."""

    dataset: str = "mnist"
    exclude_class: int | None = 9
    pad_to: int = 36
    n_train: int = 10_000
    n_val: int = 2_000
    n_test_max: int = 50_000
    data_seed: int = 0
    source_hash: str | None = None
    """Content hash the source must have (:attr:`Dataset.content_hash`); ``None`` accepts
    whatever resolves. Studies pin it, so a cell or cached model never silently uses other
    data (e.g. the bundled 5k MNIST subset where the 15k source was meant)."""


@dataclass
class Split:
    """``images [N, C, H, W]`` float (normalized, transformed), ``labels [N]``,
    ``elements [N]`` (group element applied to each image; all 0 for the train split)."""

    images: torch.Tensor
    labels: torch.Tensor
    elements: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> Split:
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n], self.elements[:n])


@dataclass
class TransformingData:
    train: Split
    val: Split
    test: Split
    mean: float
    std: float
    group: str
    num_classes: int
    provenance: tuple[str, ...]
    fingerprint: dict[str, object] = field(default_factory=dict)
    """The source's :meth:`Dataset.fingerprint` (source, where, images, hash)."""

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def drop_class(ds: Dataset, cls: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Remove class ``cls`` and relabel the rest to ``0..K-2`` in order."""
    if cls is None:
        return ds.images, ds.labels
    if cls not in set(np.unique(ds.labels).tolist()):
        raise DataError(f"exclude_class={cls} does not occur in {ds.name} "
                        f"(classes {sorted(set(ds.labels.tolist()))})")
    keep = ds.labels != cls
    y = ds.labels[keep]
    return ds.images[keep], np.where(y > cls, y - 1, y)


def pad_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad ``[N, C, H, W]`` symmetrically to ``size × size`` (extra pixel bottom/right)."""
    h, w = x.shape[-2:]
    if size < h or size < w:
        raise DataError(f"pad_to={size} is smaller than the images ({h}x{w})")
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top))


def split_sizes(n: int, n_train: int, n_val: int, n_test_max: int, what: str = ""
                ) -> tuple[int, int, int]:
    """10k/2k/rest (rest capped at ``n_test_max``); fails clearly with too few images."""
    if n < n_train + n_val + 1:
        raise DataError(
            f"{what + ': ' if what else ''}"
            f"need more than n_train + n_val = {n_train + n_val} images, found {n}: use a "
            f"smaller n_train/n_val (n_train + n_val < {n}, e.g. --n-train "
            f"{max(1, (n * 2) // 3)} --n-val {max(1, n // 9)}), or give the full dataset (INVLAB_DATA=<folder with the "
            f"IDX files>, see docs/howto/own-data.md; a fresh clone has only the bundled 5k subset)")
    return n_train, n_val, min(n - n_train - n_val, n_test_max)


def exact_mean_std(images: np.ndarray, pad_to: int) -> tuple[float, float]:
    """Mean and unbiased std of ``images / 255`` ([N, C, H, W] uint8) zero-padded to
    ``pad_to × pad_to``, computed exactly from integer sums (thread- and order-independent):
    ``mean = S1 / (255 M)``, ``var = (M S2 − S1²) / (255² M (M − 1))`` with ``M = N C pad²``,
    ``S1 = Σ u``, ``S2 = Σ u²``."""
    u = images.astype(np.int64)
    m = int(u.shape[0]) * int(u.shape[1]) * pad_to * pad_to
    if m < 2:
        raise DataError(f"need at least 2 pixels for normalization statistics, found {m}")
    s1, s2 = int(u.sum()), int((u * u).sum())
    mean = float(Fraction(s1, 255 * m))
    var = Fraction(m * s2 - s1 * s1, 255 * 255 * m * (m - 1))
    return mean, math.sqrt(float(var))


def check_source(ds: Dataset, source_hash: str | None) -> None:
    """Raise :class:`DataMismatchError` unless ``ds`` has content hash ``source_hash``."""
    if source_hash is None or ds.content_hash == source_hash:
        return
    raise DataMismatchError(
        f"data source {ds.name!r} resolved to different data than expected: expected content "
        f"{source_hash}, found {ds.content_hash} ({len(ds):,} images from "
        f"{'; '.join(ds.provenance)}). Point $INVLAB_DATA at the data it was built from, or "
        "rerun with a new output folder/checkpoint cache to build from this data")


def random_elements(group: Group, n: int, generator: torch.Generator) -> torch.Tensor:
    """``[n]`` elements drawn uniformly from the whole group."""
    return torch.randint(0, group.order, (n,), generator=generator)


def prepare_transforming(cfg: DataConfig, group: str | Group, dataset: Dataset | None = None
                         ) -> TransformingData:
    """Build Transforming-<dataset> splits as in M23 (see module docstring)."""
    grp = create_group(group)
    ds = dataset if dataset is not None else load_source(cfg.dataset)
    check_source(ds, cfg.source_hash)
    x_np, y_np = drop_class(ds, cfg.exclude_class)
    n_tr, n_va, n_te = split_sizes(len(y_np), cfg.n_train, cfg.n_val, cfg.n_test_max)
    gen = torch.Generator().manual_seed(cfg.data_seed)
    perm = torch.randperm(len(y_np), generator=gen)
    x = pad_images(torch.from_numpy(x_np).float().div_(255.0), cfg.pad_to)
    y = torch.from_numpy(y_np).long()
    idx = {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va],
           "test": perm[n_tr + n_va:n_tr + n_va + n_te]}
    mean, std = exact_mean_std(x_np[idx["train"].numpy()], cfg.pad_to)
    splits = {}
    for name, ix in idx.items():
        xi = (x[ix] - mean) / std
        if name == "train":
            el = torch.zeros(len(ix), dtype=torch.long)
        else:
            el = random_elements(grp, len(ix), gen)
            xi = grp.act(xi, el)
        splits[name] = Split(xi.contiguous(), y[ix].clone(), el)
    return TransformingData(splits["train"], splits["val"], splits["test"], mean, std, grp.name,
                            int(y.max()) + 1, ds.provenance, ds.fingerprint())
