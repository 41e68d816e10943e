"""Minimal stand-ins for the generalization study's ``--models``/``--data`` readers, used by
:mod:`invlab.studies.origins_io` only when that study is not installed (same contract)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm")


@dataclass
class ImageSet:
    """``images [N, C, H, W]`` float in [0, 1], ``labels [N]`` long, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_images(path: str | Path) -> ImageSet:
    """An ``.npz`` (``images`` ``[N, H, W]``/``[N, C, H, W]`` uint8 or [0, 1] float,
    ``labels``) or a folder ``ROOT/<class>/<image>`` (Pillow), as pixel-space floats."""
    p = Path(path)
    if p.is_dir():
        dirs = sorted(d for d in p.iterdir() if d.is_dir())
        if not dirs:
            raise ValueError(f"{p}: no class sub-folders (expected ROOT/<class>/<image>)")
        names = [d.name for d in dirs]
        if all(n.isdigit() for n in names):
            index = {n: int(n) for n in names}
        else:
            index = {n: i for i, n in enumerate(names)}
        from PIL import Image

        xs, ys = [], []
        for d in dirs:
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    xs.append(np.asarray(Image.open(f)))
                    ys.append(index[d.name])
        if not xs:
            raise ValueError(f"{p}: no images found in its class folders")
        x = np.stack(xs)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return ImageSet(torch.from_numpy(x.astype(np.float32) / 255.0),
                        torch.tensor(ys, dtype=torch.long), names)
    if p.suffix.lower() != ".npz" or not p.exists():
        raise ValueError(f"{p}: expected an existing .npz file or image folder")
    with np.load(p) as z:
        x, y = z["images"], z["labels"]
    x = x[:, None] if x.ndim == 3 else x
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return ImageSet(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))


def iter_user_models(path: str | Path) -> Iterator[tuple[str, nn.Module, dict[str, list[float]]]]:
    """Import ``path`` and yield its ``models()`` items, validated."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--models {p}: no such file (expected a .py defining models())")
    spec = importlib.util.spec_from_file_location(f"invlab_user_models_{p.stem}", p)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not callable(getattr(mod, "models", None)):
        raise TypeError(f"--models {p}: the file must define models() yielding "
                        "(name, torch.nn.Module, {'mean': [...], 'std': [...]})")
    for item in mod.models():
        name, model, norm = item
        if not (isinstance(name, str) and isinstance(model, nn.Module) and isinstance(norm, Mapping)
                and {"mean", "std"} <= set(norm)):
            raise TypeError(f"--models {p}: expected (str, nn.Module, {{'mean', 'std'}}), got "
                            f"{item!r}")
        yield name, model, {"mean": [float(v) for v in norm["mean"]],
                            "std": [float(v) for v in norm["std"]]}
