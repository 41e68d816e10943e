"""Zoo specification: one frozen :class:`ZooModel` per model, expanded from YAML grids.

A zoo spec is a list of *grids*; every field of a grid is a value or a list of values and the
grid expands to their Cartesian product, e.g.::

    - {arch: mlp, width: [64, 256], depth: 2, n_train: [500, 10000], epochs: [1, 10],
       augment: [none, r4], seed: 0}

expands to 16 models. ``load_zoo_spec(path_or_preset)`` reads a YAML file holding either such
a list or a mapping with a ``zoo`` key (the study presets' form).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from invlab.config import ConfigError, check, from_dict

ARCHS = ("mlp", "cnn_small", "cnn_medium", "vit_tiny")
AUGMENTS = ("none", "translate", "rotate", "r4", "noise")
OPTIMIZERS = ("adam", "sgd")
FAMILY = {"mlp": "mlp", "cnn_small": "cnn", "cnn_medium": "cnn", "vit_tiny": "vit"}


@dataclass(frozen=True)
class ZooModel:
    """One zoo member: architecture, data budget, training length, augmentation, optimizer.

    ``width`` is the MLP's hidden width, the CNNs' first conv width, the ViT's token dim;
    ``depth`` the MLP's hidden layers or the ViT's blocks (unused by the CNNs).
    """

    arch: str = "mlp"
    width: int = 64
    depth: int = 1
    n_train: int = 2000
    epochs: int = 3
    augment: str = "none"
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check("arch", self.arch in ARCHS, f"expected one of {ARCHS}, found {self.arch!r}")
        check("augment", self.augment in AUGMENTS,
              f"expected one of {AUGMENTS}, found {self.augment!r}")
        check("optimizer", self.optimizer in OPTIMIZERS,
              f"expected one of {OPTIMIZERS}, found {self.optimizer!r}")
        for name in ("width", "depth", "n_train", "epochs", "batch_size"):
            check(name, getattr(self, name) >= 1, f"must be >= 1, found {getattr(self, name)}")
        check("lr", self.lr > 0, f"must be > 0, found {self.lr}")
        check("weight_decay", self.weight_decay >= 0, f"must be >= 0, found {self.weight_decay}")

    @property
    def family(self) -> str:
        return FAMILY[self.arch]

    @property
    def model_id(self) -> str:
        return (f"{self.arch}-w{self.width}-d{self.depth}-n{self.n_train}-e{self.epochs}-"
                f"{self.augment}-{self.optimizer}{self.lr:g}-b{self.batch_size}"
                + (f"-wd{self.weight_decay:g}" if self.weight_decay else "") + f"-s{self.seed}")

    def model_kwargs(self) -> dict[str, Any]:
        """``create_model`` keyword arguments besides ``in_shape`` and ``num_classes``."""
        if self.arch == "mlp":
            return {"hidden": self.width, "depth": self.depth}
        if self.arch == "vit_tiny":
            return {"dim": self.width, "depth": self.depth}
        return {"width": self.width}

    def stack_key(self) -> tuple[Any, ...]:
        """Models with equal keys train together in one stacked run (same shapes, same steps)."""
        return (self.arch, self.width, self.depth, self.n_train, self.epochs, self.optimizer,
                self.lr, self.batch_size, self.weight_decay)


def expand_grid(grid: dict[str, Any]) -> list[ZooModel]:
    """Cartesian product of a grid's fields (scalars count as one value)."""
    valid = {f.name for f in fields(ZooModel)}
    unknown = sorted(set(grid) - valid)
    if unknown:
        raise ConfigError(unknown[0], f"unknown zoo field(s) {unknown}; valid: {sorted(valid)}")
    keys = list(grid)
    values = [v if isinstance(v, list | tuple) else [v] for v in grid.values()]
    return [from_dict(ZooModel, dict(zip(keys, combo, strict=True)))
            for combo in itertools.product(*values)]


def expand_zoo(grids: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> list[ZooModel]:
    """All grids' models, duplicates removed, order kept."""
    seen: dict[ZooModel, None] = {}
    for g in grids:
        for m in expand_grid(dict(g)):
            seen.setdefault(m, None)
    return list(seen)


def load_zoo_spec(spec: str | Path) -> list[ZooModel]:
    """Models from a YAML file (a list of grids, or a mapping with ``zoo``) or from a preset
    name of the generalization study (``quick``, ``full``)."""
    p = Path(spec)
    if p.is_file():
        doc = yaml.safe_load(p.read_text())
    else:
        presets = yaml.safe_load(
            resources.files("invlab.studies").joinpath("generalization.yaml").read_text())
        if str(spec) not in presets:
            raise ConfigError("spec", f"{spec!r} is neither a YAML file nor a preset "
                              f"({', '.join(presets)})")
        doc = presets[str(spec)]
    grids = doc.get("zoo") if isinstance(doc, dict) else doc
    if not isinstance(grids, list) or not grids:
        raise ConfigError("zoo", f"{spec}: expected a non-empty list of grids (or a mapping "
                          "with key 'zoo'), found " + type(grids).__name__)
    return expand_zoo(grids)
