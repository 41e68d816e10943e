"""Data: IDX files, named sources with explicit resolution, transforming datasets, your own data.

Python routes:

- a named source: ``load_source("mnist")`` → :class:`Dataset` (uint8 ``[N, 1, H, W]``,
  labels), resolved as described in :mod:`invlab.data.sources` (``$INVLAB_DATA``, cache, ...);
  ``load_source("mine.npz")`` makes your own grayscale images a source the same way (what
  ``invlab study genuine --datasets mine.npz`` trains on);
- your own images: ``load_images("test.npz")`` or ``load_images("folder/")`` (one
  sub-folder per class, read with Pillow) → :class:`ImageSet` with float images in [0, 1]
  ``[N, C, H, W]`` and labels ``[N]`` (see :mod:`invlab.data.external` for the formats);
- natural images, lazily: ``open_images("folder/", preprocess="resize=256,crop=224")`` →
  :class:`ImageDataset` (a ``torch.utils.data.Dataset`` of ``(image [C,H,W], label)`` decoded
  on access; folders, ``.npz``, ``.npy``, CIFAR binaries, ``"photos"``; see
  :mod:`invlab.data.images`);
- the generalization study's test sets: :mod:`invlab.data.shifts` (``mnist_id_split``,
  ``make_shift``, ``SHIFTS``).

Images from ``load_images`` are in pixel space: normalize them the way the model was trained
(``(x - mean) / std`` per channel) before ``invlab.measure``. For an invlab checkpoint,
``load_for_checkpoint("test.npz", metadata)`` does that for you (it is what
``invlab measure --data test.npz`` runs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

from invlab.data.external import ImageSet, load_images
from invlab.data.idx import IDXError, read_idx, write_idx
from invlab.data.images import ImageDataset, open_images
from invlab.data.preprocess import Preprocess, parse_preprocess
from invlab.data.sources import (
    DataError,
    DataMismatchError,
    Dataset,
    canonical_source,
    describe_sources,
    fetch,
    is_file_source,
    list_sources,
    load_source,
    source_label,
)
from invlab.data.transforming import (
    DataConfig,
    Split,
    TransformingData,
    check_source,
    drop_class,
    exact_mean_std,
    pad_images,
    prepare_transforming,
)
from invlab.normalization import mean_std

__all__ = [
    "IDXError", "read_idx", "write_idx", "DataError", "Dataset", "describe_sources", "fetch",
    "list_sources", "load_source", "DataConfig", "Split", "TransformingData", "drop_class",
    "pad_images", "prepare_transforming", "load_for_checkpoint", "DataMismatchError",
    "check_source", "exact_mean_std", "check_checkpoint_data", "data_mismatch_allowed",
    "last_data_check", "fingerprint_mismatch_message",
    "ImageSet", "load_images", "canonical_source", "is_file_source", "source_label",
    "ImageDataset", "open_images", "Preprocess", "parse_preprocess",
]

log = logging.getLogger("invlab.data")


_ALLOW_MISMATCH: ContextVar[bool] = ContextVar("invlab_allow_data_mismatch", default=False)
_LAST_CHECK: ContextVar[dict[str, Any] | None] = ContextVar("invlab_last_data_check",
                                                            default=None)


@contextmanager
def data_mismatch_allowed(allow: bool = True) -> Iterator[None]:
    """Within the block, :func:`load_for_checkpoint` measures on mismatching data (and
    reports it) instead of refusing; the CLI's ``--allow-data-mismatch``."""
    token = _ALLOW_MISMATCH.set(allow)
    _LAST_CHECK.set(None)
    try:
        yield
    finally:
        _ALLOW_MISMATCH.reset(token)


def last_data_check() -> dict[str, Any] | None:
    """The data check of the last :func:`load_for_checkpoint` in this context:
    ``{"trained_on", "measured_on", "mismatch": bool, "verified": bool}``."""
    return _LAST_CHECK.get()


def fingerprint_mismatch_message(trained: dict[str, Any], found: dict[str, Any]) -> str:
    """One readable sentence: what a checkpoint was trained on vs what is found now."""
    return (f"the checkpoint was trained on {trained.get('source')!r} with "
            f"{trained.get('images', '?'):,} images ({trained.get('hash')}, from "
            f"{trained.get('where')}), but {found['source']!r} resolves here to "
            f"{found['images']:,} images ({found['hash']}, from {found['where']}); its rebuilt "
            "splits would differ from training (test images may have been training images). "
            "Point $INVLAB_DATA at the training data, or pass --allow-data-mismatch "
            "(allow_data_mismatch=True) to measure anyway; the mismatch is then reported")


def check_checkpoint_data(ds: Dataset, metadata: dict[str, Any],
                          allow_data_mismatch: bool = False) -> dict[str, Any]:
    """Compare the checkpoint's recorded data fingerprint with ``ds``.

    Only a checkpoint measured on the source it was trained on is checked (another source
    shares no images with its training split). Raises :class:`DataMismatchError` on a
    mismatch unless ``allow_data_mismatch``; returns the check record either way.
    """
    trained = metadata.get("data_fingerprint")
    found = ds.fingerprint()
    if not isinstance(trained, dict) or trained.get("source") != ds.name:
        check = {"trained_on": trained if isinstance(trained, dict) else None,
                 "measured_on": found, "mismatch": False,
                 "verified": isinstance(trained, dict)}
        return check
    mismatch = trained.get("hash") != found["hash"]
    if mismatch and not allow_data_mismatch:
        raise DataMismatchError(fingerprint_mismatch_message(trained, found))
    if mismatch:
        log.warning("DATA MISMATCH (allowed): %s", fingerprint_mismatch_message(trained, found))
    return {"trained_on": trained, "measured_on": found, "mismatch": mismatch, "verified": True}


def load_for_checkpoint(spec: str, metadata: dict[str, Any], limit: int | None = None,
                        *, allow_data_mismatch: bool | None = None,
                        preprocess: str | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels for ``SOURCE[:split]``, prepared the way a checkpoint was trained.

    With a split (``train``/``val``/``test``) and a checkpoint that records its data config,
    the exact transforming split is rebuilt (same seed, same per-image group elements). With
    ``all`` or no split, every image of the source is preprocessed (class dropped, padded,
    normalized with the checkpoint's statistics) without transformation.

    The source's fingerprint must equal the one the checkpoint was trained on
    (:func:`check_checkpoint_data`); ``allow_data_mismatch`` (default: the
    :func:`data_mismatch_allowed` context, else False) measures anyway, and
    :func:`last_data_check` then reports the mismatch.

    ``spec`` may also be a path to your own images (an ``.npz`` file or an image folder, see
    :func:`load_images`). The file a checkpoint was trained on (``invlab study genuine
    --datasets PATH``) is a source like any other; any other file has no splits (optionally
    ``PATH:all``): every image is prepared like the training
    data (the checkpoint's ``exclude_class`` dropped and the labels above it shifted down,
    zero-padded to its ``pad_to``, normalized with its statistics). Labels must then use the
    source's class indices; no fingerprint is checked (:func:`last_data_check` records
    ``"external"``, with the format, the preprocess spec and the class-name mapping). A class
    folder whose names are not integers maps in sorted order; dropping the checkpoint's
    ``exclude_class`` then requires the checkpoint to record the same class names
    (``metadata["data"]["class_names"]``), else :class:`DataError`. ``preprocess`` (e.g.
    ``"resize=32"``) applies to your own images only.

    Returns:
        images ``[N, C, H, W]`` float, labels ``[N]`` long.
    """
    ext = _external_path(spec)
    trained_on = (metadata.get("data") or {}).get("dataset")
    if ext is not None and str(ext[0].expanduser().resolve()) != trained_on:
        return _external_for_checkpoint(spec, metadata, limit, preprocess)
    if preprocess:
        raise DataError(f"preprocess {preprocess!r} applies to your own images (a folder, .npz, "
                        f".npy or .bin), not to {spec!r}, which is prepared exactly as the "
                        "checkpoint's training data")
    if ext is not None:  # the file this checkpoint was trained on: rebuild its splits
        source, split = str(ext[0].expanduser().resolve()), ext[1]
    else:
        source, _, split = spec.partition(":")
    split = split or "test"
    if split not in ("train", "val", "test", "all"):
        raise DataError(f"unknown split {split!r} in {spec!r}; valid: train, val, test, all")
    allow = _ALLOW_MISMATCH.get() if allow_data_mismatch is None else allow_data_mismatch
    data_cfg = dict(metadata.get("data") or {})
    data_cfg["dataset"] = source
    data_cfg["source_hash"] = None  # checked explicitly below (so it can be allowed)
    fields = set(DataConfig.__dataclass_fields__)
    cfg = DataConfig(**{k: v for k, v in data_cfg.items() if k in fields})
    ds = load_source(source)
    _LAST_CHECK.set(check_checkpoint_data(ds, metadata, allow))
    if split == "all":
        x, y = drop_class(ds, cfg.exclude_class)
        xt = pad_images(torch.from_numpy(x).float().div_(255.0), cfg.pad_to)
        norm = metadata.get("normalization") or {"mean": 0.0, "std": 1.0}
        xt = (xt - norm["mean"]) / norm["std"]
        yt = torch.from_numpy(y).long()
    else:
        td = prepare_transforming(cfg, metadata.get("group") or "r4", dataset=ds)
        part = getattr(td, split)
        xt, yt = part.images, part.labels
    if limit is not None:
        xt, yt = xt[:limit], yt[:limit]
    return xt, yt


def check_class_names(mapping: dict[str, int], metadata: dict[str, Any], cls: int,
                      path: Any) -> None:
    """Before dropping a checkpoint's excluded class ``cls`` from data whose class names were
    mapped in sorted order (``mapping``: name → index), require the checkpoint's recorded
    class names (``metadata["data"]["class_names"]`` or ``metadata["class_names"]``) to map
    the same way: otherwise the index ``cls`` may name another class (``zero``…``nine`` sort
    to ``eight→0``, …, ``zero→9``).

    Raises:
        DataError: the names are not recorded, or differ.
    """
    trained = (metadata.get("data") or {}).get("class_names") or metadata.get("class_names")
    order = ", ".join(f"{n}→{i}" for n, i in sorted(mapping.items(), key=lambda t: t[1]))
    if not trained:
        raise DataError(f"{path}: class folders with names map in sorted order ({order}), but "
                        f"the checkpoint drops its class {cls} (exclude_class) and records no "
                        "class names, so which folder is that class cannot be checked; name the "
                        "folders by the label indices it was trained on (0, 1, ...)")
    trained_map = {str(n): i for i, n in enumerate(trained)}
    if any(trained_map.get(n) != i for n, i in mapping.items()):
        raise DataError(f"{path}: class folders map as {order}, but the checkpoint was trained on "
                        f"classes {list(trained)}; dropping its class {cls} (exclude_class) would "
                        "drop the wrong images. Name the folders as in training")


def _external_path(spec: str) -> tuple[Path, str] | None:
    """``(path, split)`` when ``spec`` names your own images (``PATH`` or ``PATH:split``, see
    :func:`invlab.data.sources.is_file_source`) rather than a source name; else None."""

    base, sep, split = spec.rpartition(":")
    if sep and split in ("train", "val", "test", "all") and is_file_source(base):
        return Path(base), split
    return (Path(spec), "") if is_file_source(spec) else None


def _external_for_checkpoint(spec: str, metadata: dict[str, Any], limit: int | None,
                             preprocess: str | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of an ``.npz`` / image folder prepared the way ``metadata``'s model was trained."""
    found = _external_path(spec)
    assert found is not None
    path, split = found
    if split not in ("", "all"):
        raise DataError(f"{spec!r}: your own images have no train/val/test splits; pass the "
                        "path alone (every image is measured)")
    ds = load_images(path, preprocess=preprocess)
    x, y = ds.images, ds.labels
    data_cfg = metadata.get("data") or {}
    kwargs = metadata.get("model_kwargs") or {}
    cls = data_cfg.get("exclude_class")
    dropped = 0
    if cls is not None and ds.mapping:
        check_class_names(ds.mapping, metadata, int(cls), path)
    if cls is not None:
        keep = y != int(cls)
        dropped = int((~keep).sum())
        x, y = x[keep], torch.where(y[keep] > int(cls), y[keep] - 1, y[keep])
        if len(y) == 0:
            raise DataError(f"{path}: every image has label {cls}, the class the checkpoint was "
                            "trained without (exclude_class)")
    in_shape = kwargs.get("in_shape")
    pad_to = data_cfg.get("pad_to")
    if pad_to and x.shape[-1] <= pad_to and x.shape[-2] <= pad_to:
        x = pad_images(x, int(pad_to))
    if in_shape is not None and list(x.shape[1:]) != [int(v) for v in in_shape]:
        raise DataError(f"{path}: images are {list(ds.images.shape[1:])} (C, H, W)"
                        + (f", {list(x.shape[1:])} after padding to {pad_to}" if pad_to else "")
                        + f", but the checkpoint's model takes {list(in_shape)}; resize or "
                        "convert the images")
    k = kwargs.get("num_classes")
    if k is not None and len(y) and int(y.max()) >= int(k):
        bad = sorted({int(v) for v in y[y >= int(k)].tolist()})[:10]
        hint = (f" (after dropping class {cls}, the one it was trained without, and shifting "
                "the labels above it down)" if cls is not None else "")
        raise DataError(f"{path}: label(s) {bad} are unknown to the checkpoint's model, which has "
                        f"{k} classes, 0..{int(k) - 1}{hint}")
    norm = metadata.get("normalization") or {"mean": 0.0, "std": 1.0}
    try:
        mean, std = mean_std(norm, x.shape[1], x.dtype, x.device)  # type: ignore[misc]
    except ValueError as e:
        raise DataError(f"{path}: {x.shape[1]}-channel images, but the checkpoint's "
                        f"normalization does not fit them: {e}") from e
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    _LAST_CHECK.set({"external": {"path": str(path), "images": len(ds), "dropped": dropped,
                                  "format": ds.info.get("format"),
                                  "preprocess": ds.info.get("preprocess"),
                                  "class_to_idx": ds.mapping},
                     "trained_on": metadata.get("data_fingerprint"), "measured_on": None,
                     "mismatch": False, "verified": False})
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y.long()
