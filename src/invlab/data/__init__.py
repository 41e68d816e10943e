"""Data: IDX files, named sources with explicit resolution, transforming datasets, your own data.

Python routes:

- a named source: ``load_source("mnist")`` → :class:`Dataset` (uint8 ``[N, 1, H, W]``,
  labels), resolved as described in :mod:`invlab.data.sources` (``$INVLAB_DATA``, cache, ...);
- your own images: ``load_images("test.npz")`` or ``load_images("folder/")`` (one
  sub-folder per class, read with Pillow) → :class:`ImageSet` with float images in [0, 1]
  ``[N, C, H, W]`` and labels ``[N]`` (see :mod:`invlab.data.external` for the formats);
- the generalization study's test sets: :mod:`invlab.data.shifts` (``mnist_id_split``,
  ``make_shift``, ``SHIFTS``).

Images from ``load_images`` are in pixel space: normalize them the way the model was trained
(``(x - mean) / std`` per channel) before ``invlab.measure``.
"""

from __future__ import annotations

from typing import Any

import torch

from invlab.data.external import ImageSet, load_images
from invlab.data.idx import IDXError, read_idx, write_idx
from invlab.data.sources import (
    DataError,
    Dataset,
    describe_sources,
    fetch,
    list_sources,
    load_source,
)
from invlab.data.transforming import (
    DataConfig,
    Split,
    TransformingData,
    drop_class,
    pad_images,
    prepare_transforming,
)

__all__ = [
    "IDXError", "read_idx", "write_idx", "DataError", "Dataset", "describe_sources", "fetch",
    "list_sources", "load_source", "DataConfig", "Split", "TransformingData", "drop_class",
    "pad_images", "prepare_transforming", "load_for_checkpoint", "ImageSet", "load_images",
]


def load_for_checkpoint(spec: str, metadata: dict[str, Any], limit: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels for ``SOURCE[:split]``, prepared the way a checkpoint was trained.

    With a split (``train``/``val``/``test``) and a checkpoint that records its data config,
    the exact transforming split is rebuilt (same seed, same per-image group elements). With
    ``all`` or no split, every image of the source is preprocessed (class dropped, padded,
    normalized with the checkpoint's statistics) without transformation.

    Returns:
        images ``[N, C, H, W]`` float, labels ``[N]`` long.
    """
    source, _, split = spec.partition(":")
    split = split or "test"
    if split not in ("train", "val", "test", "all"):
        raise DataError(f"unknown split {split!r} in {spec!r}; valid: train, val, test, all")
    data_cfg = dict(metadata.get("data") or {})
    data_cfg["dataset"] = source
    fields = set(DataConfig.__dataclass_fields__)
    cfg = DataConfig(**{k: v for k, v in data_cfg.items() if k in fields})
    if split == "all":
        ds = load_source(source)
        x, y = drop_class(ds, cfg.exclude_class)
        xt = pad_images(torch.from_numpy(x).float().div_(255.0), cfg.pad_to)
        norm = metadata.get("normalization") or {"mean": 0.0, "std": 1.0}
        xt = (xt - norm["mean"]) / norm["std"]
        yt = torch.from_numpy(y).long()
    else:
        td = prepare_transforming(cfg, metadata.get("group") or "r4")
        part = getattr(td, split)
        xt, yt = part.images, part.labels
    if limit is not None:
        xt, yt = xt[:limit], yt[:limit]
    return xt, yt
