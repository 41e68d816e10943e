"""Where does invariance come from — data, augmentation or architecture? (B21 as a study.)

Stages (each resumable through the store):

1. **train**: every (architecture, regime, seed) model the study needs, into the shared
   checkpoint cache (``origins-<hash>.safetensors``; the key covers the training config, the
   augmentation regime and its strengths, and the pinned data). ``untrained`` models are
   the seed's initialization and are not cached.
2. **profile** cells: B21's representation invariance (:func:`invlab.measure`, seeded
   derangement) for the 13 families × 10 magnitudes (index 0 = identity) on ``n_profile``
   test images, at the penultimate layer and one inner layer; rows hold the median,
   quartiles, 5/95 % quantiles and mean per (layer, family, magnitude); the per-sample values
   are kept in the cell's ``extra`` (float16, :func:`per_sample_profile`). Also test accuracy.
   **factor** cells: factors of variation per class (:func:`invlab.factors.factors_of_variation`)
   with the reference embedding (``factor_arch`` trained without augmentation).

``--models FILE.py`` replaces the built-in models: each ``(name, module, normalization)`` is
profiled as given (regime ``user``) and re-initialized (regime ``untrained``, every module's
``reset_parameters`` under a fixed seed); the first model is the factor reference.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from invlab.cache import CacheMismatch, load_or_create
from invlab.checkpoint import CheckpointError, load_as_recorded, read_metadata
from invlab.config import ID_IF_NOT_DEFAULT, from_dict, id_dict
from invlab.data import TransformingData, load_source, open_images, parse_preprocess
from invlab.data.transforming import Split
from invlab.devices import model_device, study_device
from invlab.factors import B21_FAMILIES, factors_of_variation
from invlab.metrics import measure
from invlab.metrics.orbit import normalizer
from invlab.studies.common import open_study
from invlab.studies.origins_augment import REGIMES, AugConfig, make_augment
from invlab.studies.origins_io import file_fingerprint, iter_user_models
from invlab.studies.presets import load_preset
from invlab.sweep import CellContext, CellResult, check, choose_executor, run_study
from invlab.train import TrainConfig, train
from invlab.train.loop import LR_SCHEDULES, MEMORY_FORMATS, build_model
from invlab.transforms import create_transform

log = logging.getLogger("invlab.studies")

STUDY = "origins"
STANDARD = "translate_zoom"
ALL_REGIMES = ("untrained", *REGIMES)
STATS = ("median", "q1", "q3", "p05", "p95", "mean")
_Q = torch.tensor([0.5, 0.25, 0.75, 0.05, 0.95], dtype=torch.float64)
PENULTIMATE = "penultimate"
INNER_LAYERS = {"mlp5": "hidden.1", "mlp": "hidden.1", "cnn_small": "features.4",
                "cnn_medium": "features.4", "vit_tiny": "blocks.0"}
"""The inner layer profiled besides the penultimate, per registry architecture."""
NOT_IN_ID: dict[str, Any] = {"cell_id": False}
AUGMENT_VERSION = 2
"""2 (2026-12-02): translate / zoom / translate+zoom resample once (one composed affine);
1: four resamples in turn (zoom in, zoom out, shift x, shift y)."""


# ----------------------------------------------------------------------------- configs

@dataclass(frozen=True)
class OriginsPreset:
    """The study's knobs (``origins.yaml`` presets ``full`` and ``quick``)."""

    dataset: str = "fashion-mnist"
    archs: tuple[str, ...] = ("mlp5", "cnn_medium", "vit_tiny")
    regimes: tuple[str, ...] = ("untrained", "none", STANDARD)
    seeds: tuple[int, ...] = (0, 1)
    ablation_arch: str = "cnn_medium"
    ablation_regimes: tuple[str, ...] = REGIMES
    ablation_seeds: tuple[int, ...] = (0,)
    factor_arch: str = "cnn_medium"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    patience: int | None = None
    lr_schedule: str = "constant"
    memory_format: str = "contiguous"
    n_train: int = 20_000
    n_val: int = 2_000
    n_test: int = 5_000
    n_profile: int = 2_000
    n_pairs: int = 200
    inner_layers: bool = True
    threads: int = 1
    aug: AugConfig = field(default_factory=AugConfig)

    def __post_init__(self) -> None:
        for r in (*self.regimes, *self.ablation_regimes):
            check("regimes", r in ALL_REGIMES, f"unknown regime {r!r}; valid: "
                  + ", ".join(ALL_REGIMES))
        check("seeds", len(self.seeds) >= 1, "need at least one seed")
        check("epochs", self.epochs >= 1, f"must be >= 1, found {self.epochs}")
        check("n_profile", self.n_profile >= 2, f"must be >= 2, found {self.n_profile}")
        check("n_pairs", self.n_pairs >= 1, f"must be >= 1, found {self.n_pairs}")
        check("threads", self.threads >= 1, f"must be >= 1, found {self.threads}")

        check("lr_schedule", self.lr_schedule in LR_SCHEDULES,
              f"unknown {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        check("memory_format", self.memory_format in MEMORY_FORMATS,
              f"unknown {self.memory_format!r}; valid: {', '.join(MEMORY_FORMATS)}")


@dataclass(frozen=True)
class OriginsData:
    """Which images: a named source (``fashion-mnist``, ``mnist``) or a folder/npz
    (``dataset='external'``, identified by ``source_hash``; its ``path`` is not in ids)."""

    dataset: str = "fashion-mnist"
    n_train: int = 20_000
    n_val: int = 2_000
    n_test: int = 5_000
    data_seed: int = 0
    source_hash: str | None = None
    path: str = field(default="", metadata=NOT_IN_ID)
    #: ``--preprocess`` spec for external images (e.g. ``"resize=36,crop=32"``)
    preprocess: str | None = field(default=None, metadata=ID_IF_NOT_DEFAULT)


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: registry ``arch``, training ``regime`` and ``seed``."""

    arch: str
    regime: str
    seed: int
    epochs: int
    batch_size: int
    lr: float
    patience: int | None
    threads: int
    aug: AugConfig
    lr_schedule: str = field(default="constant", metadata=ID_IF_NOT_DEFAULT)
    memory_format: str = field(default="contiguous", metadata=ID_IF_NOT_DEFAULT)
    augment_version: int = AUGMENT_VERSION
    """The augmentation code the model was trained with (:data:`AUGMENT_VERSION`); part of
    ids and checkpoint keys, so models and cells of older augmentation code are never reused."""

    def __post_init__(self) -> None:
        check("augment_version", self.augment_version == AUGMENT_VERSION,
              f"models trained with augmentation version {self.augment_version} cannot be "
              f"rebuilt by this invlab (version {AUGMENT_VERSION}); retrain them")

    def describe(self) -> str:
        return f"{self.arch}/{self.regime}/s{self.seed}"


@dataclass(frozen=True)
class UserModel:
    """Model ``index`` (``name``) of a ``--models`` file (by content hash), as given or
    re-initialized (``untrained``)."""

    file_hash: str
    name: str
    index: int
    untrained: bool
    path: str = field(default="", metadata=NOT_IN_ID)

    def describe(self) -> str:
        return f"{self.name}{' (untrained)' if self.untrained else ''}"


@dataclass(frozen=True)
class OriginsTrainCell:
    data: OriginsData
    model: ModelSpec
    checkpoints: str = field(default="", metadata=NOT_IN_ID)

    @property
    def threads(self) -> int:
        return self.model.threads

    def describe(self) -> str:
        return f"train {self.model.describe()}"


@dataclass(frozen=True)
class ProfileCell:
    data: OriginsData
    model: ModelSpec | UserModel
    n_profile: int
    inner_layers: bool
    threads: int = 1
    checkpoints: str = field(default="", metadata=NOT_IN_ID)

    def describe(self) -> str:
        return f"profile {self.model.describe()}"


@dataclass(frozen=True)
class FactorCell:
    data: OriginsData
    model: ModelSpec | UserModel
    n_pairs: int
    threads: int = 1
    checkpoints: str = field(default="", metadata=NOT_IN_ID)

    def describe(self) -> str:
        return f"factors {self.model.describe()}"


# ------------------------------------------------------------------------------- data

@dataclass
class Splits:
    """Pixel-space splits (``[N, C, H, W]`` in [0, 1]) and the train normalization."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float
    num_classes: int
    fingerprint: dict[str, Any]

    @property
    def normalization(self) -> dict[str, list[float]]:
        c = int(self.test_x.shape[1])
        return {"mean": [self.mean] * c, "std": [self.std] * c}


_SPLITS: dict[OriginsData, Splits] = {}


def _open_external(cfg: OriginsData) -> tuple[Any, dict[str, Any]]:
    """``--data PATH`` opened lazily (:func:`invlab.data.open_images`) and its record; the
    hash is the reader's streaming file fingerprint (no image is decoded)."""

    ds = open_images(cfg.path, preprocess=cfg.preprocess)
    if ds.labels is None:
        raise ValueError(f"--data {cfg.path}: the images have no labels; use class sub-folders "
                         "or a labels file (labels.csv: 'filename,label' lines)")
    h = ds.fingerprint().partition(":")[2][:16]
    if cfg.source_hash is not None and h != cfg.source_hash:
        raise ValueError(f"--data {cfg.path}: the images changed since the study started "
                         f"(hash {h}, expected {cfg.source_hash}); use a new --out")
    return ds, {"source": "external", "where": cfg.path, "images": len(ds), "hash": h,
                **({"class_to_idx": ds.class_to_idx} if ds.class_to_idx else {}),
                **({"preprocess": cfg.preprocess} if cfg.preprocess else {})}


def _load_pixels(cfg: OriginsData) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    if cfg.dataset == "external":
        ds, fp = _open_external(cfg)
        x, y = ds.to_tensors()
        return x, y.long(), fp

    ds = load_source(cfg.dataset)
    fp = ds.fingerprint()
    if cfg.source_hash is not None and fp["hash"] != cfg.source_hash:
        raise ValueError(f"{cfg.dataset}: the data found now (hash {fp['hash']}) is not the "
                         f"data this study was pinned to ({cfg.source_hash}); use a new --out")
    return torch.from_numpy(ds.images).float().div_(255.0), torch.from_numpy(ds.labels).long(), fp


def images_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    """Content hash of an image set (float32 images and int64 labels)."""
    h = hashlib.sha256(images.float().contiguous().numpy().tobytes())
    h.update(labels.long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def get_splits(cfg: OriginsData) -> Splits:
    """Seeded train/val/test split of the data, memoized per process. With fewer images than
    ``n_train + n_val + 2``, training is impossible and everything is the test split."""
    if cfg in _SPLITS:
        return _SPLITS[cfg]
    if cfg.dataset == "external":  # decode only the images of the three splits
        lazy, fp = _open_external(cfg)
        y = lazy.labels.long()
        pick = lambda idx: (torch.stack([lazy.image(int(i)) for i in idx]) if len(idx)  # noqa: E731
                            else torch.empty((0, *lazy.image_shape)))
    else:
        x, y, fp = _load_pixels(cfg)
        pick = lambda idx: x[idx]  # noqa: E731
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.data_seed))
    n_tr, n_va = cfg.n_train, cfg.n_val
    if len(y) < n_tr + n_va + 2:  # nothing to train (your own models): every image is a
        n_tr = n_va = 0               # test image, n_test does not cap them (a 1,797-image
    te_cap = cfg.n_test if n_tr else len(y)  # folder is profiled as 1,797, not 1,000)
    tr, va, te = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:][:te_cap]
    x_tr, x_va, x_te = pick(tr), pick(va), pick(te)
    ref = x_tr if n_tr else x_te
    s = Splits(x_tr, y[tr], x_va, y[va], x_te, y[te], float(ref.mean()),
               float(ref.std().clamp_min(1e-6)), int(y.max()) + 1, fp)
    if len(_SPLITS) > 4:
        _SPLITS.clear()
    _SPLITS[cfg] = s
    return s


def pin_data(cfg: OriginsData) -> OriginsData:
    """``cfg`` with ``source_hash`` set to the hash of the data found now."""
    if cfg.source_hash is not None:
        return cfg
    if cfg.dataset == "external":  # streaming file hash: nothing decoded
        return replace(cfg, source_hash=str(_open_external(cfg)[1]["hash"]))
    _, _, fp = _load_pixels(cfg)
    return replace(cfg, source_hash=str(fp["hash"]))


# ----------------------------------------------------------------------------- models

def _train_config(spec: ModelSpec) -> Any:
    # t1 is the trivial group (identity only): the regime's augmentation is the only one
    return TrainConfig(method="da", group="t1", model=spec.arch, epochs=spec.epochs,
                       batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                       patience=spec.patience, threads=spec.threads,
                       lr_schedule=spec.lr_schedule, memory_format=spec.memory_format)


def _key_doc(spec: ModelSpec, data: OriginsData) -> dict[str, Any]:
    """What an origins checkpoint's key hashes (recorded in it as ``origins_key``)."""
    return {"model": id_dict(spec), "data": {
        k: v for k, v in asdict(data).items()
        if k != "path" and not (k == "preprocess" and v is None)}}


def _key(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def checkpoint_path(spec: ModelSpec, data: OriginsData, checkpoints: str | Path) -> Path:
    """``<checkpoints>/origins-<hash of (model spec, data)>.safetensors``."""
    return Path(checkpoints) / f"origins-{_key(_key_doc(spec, data))}.safetensors"


def load_verified(path: Path, spec: ModelSpec, data: OriginsData
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Load origins checkpoint ``path`` only if it proves what it is: the model spec and data
    config it records (``origins_key``) hash to the key in its name, its recorded training
    config is the one that spec trains with, and its data fingerprint is the pinned data's.
    Raises :class:`invlab.cache.CacheMismatch` (a checkpoint written before invlab recorded
    ``origins_key`` cannot prove itself and is retrained once)."""

    try:
        meta = read_metadata(path)
    except (CheckpointError, OSError) as e:
        raise CacheMismatch(path, f"not a readable checkpoint ({e})") from e
    doc = meta.get("origins_key")
    if not isinstance(doc, dict):
        raise CacheMismatch(path, "it records no origins_key (written by an older invlab)")
    if f"origins-{_key(doc)}" != path.stem:
        raise CacheMismatch(path, f"the model spec and data it records hash to key "
                                  f"{_key(doc)}, not to its name")
    try:
        recorded = json.loads(json.dumps(asdict(_train_config(from_dict(ModelSpec, doc["model"])))))
    except (KeyError, TypeError, ValueError) as e:
        raise CacheMismatch(path, f"it records no valid model spec ({e})") from e
    if meta.get("train") != recorded:
        raise CacheMismatch(path, "its recorded training config is not the one its model "
                                  "spec trains with")
    found = (meta.get("data_fingerprint") or {}).get("hash")
    pinned = (doc.get("data") or {}).get("source_hash")
    if found is None or (pinned is not None and found != pinned) \
            or (data.source_hash is not None and found != data.source_hash):
        raise CacheMismatch(path, f"it was trained on data {found}, but its key stands for data "
                                  f"{data.source_hash}")
    return load_as_recorded(path, meta)


def _transforming(s: Splits) -> Any:
    """The splits as the training loop's :class:`~invlab.data.TransformingData` (normalized)."""

    def sp(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(((x - s.mean) / s.std).contiguous(), y, torch.zeros(len(y), dtype=torch.long))

    return TransformingData(sp(s.train_x, s.train_y), sp(s.val_x, s.val_y),
                            sp(s.test_x, s.test_y), s.mean, s.std, "t1", s.num_classes,
                            (), dict(s.fingerprint))


def untrained_model(spec: ModelSpec, s: Splits) -> nn.Module:
    """The seed's initialization (the model training starts from)."""

    return build_model(_train_config(spec), tuple(s.test_x.shape[1:]), s.num_classes).eval()


def builtin_model(spec: ModelSpec, data: OriginsData, checkpoints: str | Path
                  ) -> tuple[nn.Module, dict[str, Any], bool]:
    """(model in eval mode, checkpoint metadata, reused?) — trained and cached if needed.

    A cached checkpoint is used only if it proves what it is (:func:`load_verified`), else
    retrained with one WARNING line; training runs under the entry's lock
    (:func:`invlab.cache.load_or_create`), so a concurrent run waits and reuses it."""
    s = get_splits(data)
    if spec.regime == "untrained":
        return untrained_model(spec, s), {}, False
    path = checkpoint_path(spec, data, checkpoints)

    def create() -> tuple[nn.Module, dict[str, Any]]:
        if len(s.train_y) == 0:
            raise ValueError(f"{data.dataset}: too few images to train ({len(s.test_y)}); "
                             f"need more than n_train + n_val = {data.n_train + data.n_val}")
        aug = make_augment(spec.regime, spec.aug, s.mean, s.std)
        res = train(_train_config(spec), _transforming(s), checkpoint=path, progress=False,
                    metadata={"origins": {"regime": spec.regime, "aug": asdict(spec.aug)},
                              "origins_key": _key_doc(spec, data)},
                    augment=aug)
        return res.model, read_metadata(path)

    (model, meta), reused = load_or_create(path, lambda p: load_verified(p, spec, data), create,
                                           what=f"training origins {spec.describe()}")
    return model.eval(), meta, reused


def user_model(ref: UserModel) -> tuple[nn.Module, dict[str, list[float]]]:
    """Model ``ref.index`` of the ``--models`` file (re-initialized if ``untrained``)."""
    if file_fingerprint(ref.path) != ref.file_hash:
        raise ValueError(f"--models {ref.path} changed since the study started; use a new --out")
    for i, (name, model, norm) in enumerate(iter_user_models(ref.path)):
        if i == ref.index:
            if name != ref.name:
                raise ValueError(f"--models {ref.path}: model {i} is {name!r}, expected "
                                 f"{ref.name!r}")
            return (reinitialized(model, seed=i) if ref.untrained else model).eval(), norm
    raise ValueError(f"--models {ref.path}: has no model number {ref.index} ({ref.name!r})")


def reinitialized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every submodule's ``reset_parameters()`` applied (seeded):
    the untrained counterpart of a user's architecture."""
    m = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in m.modules():
            if hasattr(mod, "reset_parameters") and mod is not m:
                mod.reset_parameters()
    return m


def _resolve(cell: ProfileCell | FactorCell) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model, normalization, info) for a cell."""

    if isinstance(cell.model, UserModel):
        model, norm = user_model(cell.model)
        return model.to(study_device()), norm, {}
    s = get_splits(cell.data)
    model, meta, reused = builtin_model(cell.model, cell.data, cell.checkpoints)
    return model.to(study_device()), s.normalization, {"checkpoint_reused": reused,
                                    "val_accuracy": meta.get("best_val_accuracy"),
                                    "epochs_run": meta.get("epochs_run"),
                                    "train_seconds": meta.get("wall_seconds")}


# ------------------------------------------------------------------------------ cells

LATE_EPOCHS = 20
"""Convergence diagnostics look at the last ``LATE_EPOCHS`` epochs run."""


def late_slope(val_curve: list[float], window: int = LATE_EPOCHS) -> tuple[float, float]:
    """Least-squares slope of validation accuracy over the last ``window`` epochs and its
    standard error, in accuracy points per 10 epochs (NaN for fewer than 3 epochs). A
    slope within about 2 standard errors of 0 is a plateau."""
    y = 100 * np.asarray(val_curve[-window:], dtype=np.float64)
    if len(y) < 3:
        return float("nan"), float("nan")
    x = np.arange(len(y), dtype=np.float64)
    coef = np.polyfit(x, y, 1)
    resid = y - np.polyval(coef, x)
    se = np.sqrt(resid.var(ddof=2) / ((x - x.mean()) ** 2).sum())
    return 10 * float(coef[0]), 10 * float(se)


def convergence(val_curve: list[float], max_epochs: int) -> dict[str, float]:
    """``epochs_run``, ``best_epoch`` (1-based), ``capped`` (1 if training ran to
    ``max_epochs``), ``val_gain_late`` = max(curve) − max(curve[:-LATE_EPOCHS]) (NaN for
    runs of at most ``LATE_EPOCHS`` epochs) and ``val_slope_late`` / ``val_slope_late_se``
    (:func:`late_slope`, points per 10 epochs)."""
    v = [float(a) for a in val_curve]
    if not v:
        return {}
    late = max(v) - max(v[:-LATE_EPOCHS]) if len(v) > LATE_EPOCHS else float("nan")
    slope, se = late_slope(v)
    return {"epochs_run": float(len(v)), "best_epoch": float(v.index(max(v)) + 1),
            "capped": float(len(v) >= max_epochs), "val_gain_late": late,
            "val_slope_late": slope, "val_slope_late_se": se}


def run_train_cell(cell: OriginsTrainCell, ctx: CellContext) -> CellResult:
    _, meta, reused = builtin_model(cell.model, cell.data, cell.checkpoints)
    res = CellResult(extra={"checkpoint_reused": reused})
    res.add("val_accuracy", float(meta.get("best_val_accuracy", float("nan"))))
    res.add("train_seconds", float(meta.get("wall_seconds", 0.0)))
    for k, v in convergence(list(meta.get("val_curve", [])), cell.model.epochs).items():
        res.add(k, v)
    return res


class _SingleForward(nn.Module):
    """``model`` without ``forward_features`` (so the engine captures the penultimate layer
    as the input of the last ``nn.Linear`` in the same forward pass as the inner layers)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model
        self.in_shape = getattr(model, "in_shape", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def profile(model: nn.Module, images: torch.Tensor, normalization: dict[str, Any] | None,
            layers: list[str], seed: int = 0, transforms: tuple[str, ...] = B21_FAMILIES,
            batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Representation-invariance profile: ``{layer: [T, N, M]}`` (``M`` = the family's grid,
    identity first; its column is exactly 1) via :func:`invlab.measure`, one call per family
    (the derangement seeded by ``seed`` + family index)."""

    out: dict[str, list[torch.Tensor]] = {lay: [] for lay in layers}
    only = layers == [PENULTIMATE]
    net: nn.Module = model
    names = layers
    if not only and hasattr(model, "forward_features"):
        # one forward per orbit: penultimate = input of the last Linear, inner layers hooked
        net = _SingleForward(model)
        names = [lay if lay == PENULTIMATE else f"net.{lay}" for lay in layers]
    for j, name in enumerate(transforms):
        m = measure(net, images, transform=name, normalization=normalization,
                    metrics=["representation_invariance"],
                    # the family's own order
                    options={"members": create_transform(name).non_identity},
                    layers=None if only else names, batch_size=batch_size,
                    generator=torch.Generator().manual_seed(seed * 1000 + j), progress=False)
        for lay, key_layer in zip(layers, names):
            key = "representation_invariance" + ("" if only else f"@{key_layer}")
            v = m.per_sample[key]  # [N, M-1], non-identity magnitudes
            out[lay].append(torch.cat([torch.ones(v.shape[0], 1, dtype=v.dtype), v], 1))
    return {lay: torch.stack(v) for lay, v in out.items()}


def profile_stats(values: torch.Tensor) -> torch.Tensor:
    """``[T, N, M]`` per-sample values → ``[T, M, 6]`` (median, q1, q3, p05, p95, mean)."""
    v = values.double()
    q = torch.quantile(v, _Q, dim=1)  # [5, T, M]
    return torch.cat([q.permute(1, 2, 0), v.mean(1).unsqueeze(-1)], -1)


def encode_array(a: torch.Tensor) -> str:
    """float16 ``.npy`` bytes, base64 (per-sample values in a cell's ``extra``)."""
    buf = io.BytesIO()
    np.save(buf, a.detach().cpu().numpy().astype(np.float16), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def decode_array(s: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(s)), allow_pickle=False)


def _layers(cell: ProfileCell, model: nn.Module) -> list[str]:
    layers = [PENULTIMATE]
    if cell.inner_layers and isinstance(cell.model, ModelSpec):
        inner = INNER_LAYERS.get(cell.model.arch)
        if inner and inner in dict(model.named_modules()):
            layers.append(inner)
    return layers


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             normalization: dict[str, Any] | None, batch_size: int = 2048) -> float:
    """Top-1 accuracy of ``model`` on pixel-space ``x`` (normalization applied first)."""

    dev = model_device(model)
    norm = normalizer(normalization, x.shape[1], torch.float32, dev)
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size].to(dev)
        if norm is not None:
            xb = (xb - norm[0].view(1, -1, 1, 1)) / norm[1].view(1, -1, 1, 1)
        correct += int((model(xb).argmax(1).cpu() == y[i:i + batch_size]).sum())
    return correct / max(1, len(y))


def run_profile_cell(cell: ProfileCell, ctx: CellContext) -> CellResult:
    t0 = time.perf_counter()
    model, norm, info = _resolve(cell)
    s = get_splits(cell.data)
    x, y = s.test_x[:cell.n_profile], s.test_y[:cell.n_profile]
    res = CellResult()
    res.add("accuracy", accuracy(model, s.test_x, s.test_y, norm), n=len(s.test_y))
    layers = _layers(cell, model)
    prof = profile(model, x, norm, layers, seed=cell.data.data_seed)
    extra: dict[str, Any] = {**info, "layers": layers, "transforms": list(B21_FAMILIES),
                             "labels": y.tolist(), "per_sample": {}}
    for lay, vals in prof.items():
        st = profile_stats(vals)  # [T, M, 6]
        for ti, name in enumerate(B21_FAMILIES):
            for mi in range(st.shape[1]):
                for si, stat in enumerate(STATS):
                    res.add(f"ri:{stat}:{lay}:{name}:{mi}", float(st[ti, mi, si]),
                            n=int(vals.shape[1]))
        extra["per_sample"][lay] = encode_array(vals)
    extra["measure_seconds"] = round(time.perf_counter() - t0, 2)
    res.extra = extra
    return res


def per_sample_profile(extra: dict[str, Any], layer: str = PENULTIMATE) -> np.ndarray:
    """The per-sample values ``[T, N, M]`` (float16) a profile cell stored for ``layer``."""
    return decode_array(extra["per_sample"][layer])


def run_factor_cell(cell: FactorCell, ctx: CellContext) -> CellResult:
    t0 = time.perf_counter()
    model, norm, _ = _resolve(cell)
    s = get_splits(cell.data)
    fov = factors_of_variation(model, s.test_x, s.test_y, normalization=norm,
                               n_pairs=cell.n_pairs,
                               generator=torch.Generator().manual_seed(cell.data.data_seed + 7))
    res = CellResult(extra={"factors": fov.to_dict(),
                            "seconds": round(time.perf_counter() - t0, 2)})
    scores = fov.scores
    for ci, c in enumerate(fov.classes):
        for ti, name in enumerate(fov.transforms):
            res.add(f"pb:{c}:{name}", float(scores[ci, ti]), n=int(fov.n_pairs[ci]))
    return res


# ------------------------------------------------------------------------------- plan

def model_specs(p: OriginsPreset) -> list[ModelSpec]:
    """Every built-in model of the preset (main grid, ablation and factor reference)."""
    def spec(arch: str, regime: str, seed: int) -> ModelSpec:
        return ModelSpec(arch, regime, seed, p.epochs, p.batch_size, p.lr, p.patience,
                         p.threads, p.aug, p.lr_schedule, p.memory_format)

    out = [spec(a, r, s) for a in p.archs for r in p.regimes for s in p.seeds]
    out += [spec(p.ablation_arch, r, s) for r in p.ablation_regimes for s in p.ablation_seeds]
    out += [spec(p.factor_arch, "none", p.seeds[0])]
    return list(dict.fromkeys(out))


def data_config(p: OriginsPreset, data: str | None = None,
                preprocess: str | None = None) -> OriginsData:
    if data and (Path(data).exists() or data.endswith((".npz", ".npy", ".bin"))):
        spec = parse_preprocess(preprocess).spec or None  # canonical (ids), typos refused
        return OriginsData("external", p.n_train, p.n_val, p.n_test, path=str(Path(data)),
                           preprocess=spec)
    if preprocess:
        raise ValueError(f"--preprocess applies to image files given with --data (a folder, "
                         f".npz, .npy or .bin), not to the source {data or p.dataset!r}")
    return OriginsData(data or p.dataset, p.n_train, p.n_val, p.n_test)


_EPOCH_COST = {"cnn_medium": 5.0, "cnn_small": 3.0, "vit_tiny": 4.0, "mlp5": 1.0}


def _expected_cost(m: ModelSpec) -> float:
    """Rough relative training time (seconds per epoch on one core, measured; augmented
    models also run about twice the epochs)."""
    return _EPOCH_COST.get(m.arch, 3.0) * (1.0 if m.regime == "none" else 2.0)


def plan_builtin(p: OriginsPreset, data: OriginsData, ckpt: str
                 ) -> tuple[list[OriginsTrainCell], list[ProfileCell | FactorCell]]:
    specs = model_specs(p)
    # longest first (augmented convolutional models train longest), so neither worker idles
    # through a long tail; the order changes no result
    train_cells = [OriginsTrainCell(data, m, ckpt) for m in
                   sorted((m for m in specs if m.regime != "untrained"), key=_expected_cost,
                          reverse=True)]
    cells: list[ProfileCell | FactorCell] = [
        ProfileCell(data, m, p.n_profile, p.inner_layers, p.threads, ckpt) for m in specs]
    ref = ModelSpec(p.factor_arch, "none", p.seeds[0], p.epochs, p.batch_size, p.lr,
                    p.patience, p.threads, p.aug, p.lr_schedule, p.memory_format)
    cells.append(FactorCell(data, ref, p.n_pairs, p.threads, ckpt))
    return train_cells, cells


def plan_user(p: OriginsPreset, data: OriginsData, models_file: str) -> list[Any]:
    fh = file_fingerprint(models_file)
    names = [n for n, _, _ in iter_user_models(models_file)]
    if not names:
        raise ValueError(f"--models {models_file}: models() yielded no models")
    cells: list[Any] = []
    for i, n in enumerate(names):
        for untrained in (False, True):
            cells.append(ProfileCell(data, UserModel(fh, n, i, untrained, models_file),
                                     p.n_profile, p.inner_layers, p.threads))
    cells.append(FactorCell(data, UserModel(fh, names[0], 0, False, models_file), p.n_pairs,
                            p.threads))
    return cells


def run_cell(cell: Any, ctx: CellContext) -> CellResult:
    if isinstance(cell, ProfileCell):
        return run_profile_cell(cell, ctx)
    if isinstance(cell, FactorCell):
        return run_factor_cell(cell, ctx)
    return run_train_cell(cell, ctx)


def run_origins(p: OriginsPreset, out: str | Path, checkpoints: str | Path | None = None,
                workers: int = 1, progress: bool = True, preset_name: str = "custom",
                models_file: str | None = None, data: str | None = None,
                executor: Any = None, preprocess: str | None = None) -> Path:
    """Run the study's cells into ``out`` (store ``out/store.sqlite``, resolved config);
    returns ``out``. The report is the next step (:func:`invlab.build_report`).
    ``preprocess`` (e.g. ``"resize=36,crop=32"``) applies to ``data`` given as a path."""
    ckpt = str(Path(checkpoints) if checkpoints else Path(out) / "checkpoints")
    dcfg = pin_data(data_config(p, data, preprocess))
    if not models_file:  # fail once, before any cell, when the models cannot be trained
        sp = get_splits(dcfg)
        n = len(sp.train_y) + len(sp.val_y) + len(sp.test_y)
        if not len(sp.train_y):
            raise ValueError(f"{data or p.dataset}: too few images to train ({n:,}); need more "
                             f"than n_train + n_val = {p.n_train + p.n_val}: use e.g. --n-train "
                             f"{max(1, n * 2 // 3)} --n-val {max(1, n // 9)}")

    executor = choose_executor(executor, workers)
    dconf = {k: v for k, v in asdict(dcfg).items() if not (k == "preprocess" and v is None)}
    conf = {"preset": preset_name, **asdict(p), "data": dconf, "checkpoints": ckpt,
            "workers": workers, "models_file": models_file}
    t0 = time.perf_counter()
    with open_study(out, STUDY, conf) as (out, store):
        if models_file:
            cells = plan_user(p, dcfg, models_file)
            log.info("%d cells for the models of %s", len(cells), models_file)
        else:
            train_cells, cells = plan_builtin(p, dcfg, ckpt)
            log.info("stage 1/2: %d models to train (or load from %s)", len(train_cells), ckpt)
            run_study(train_cells, run_cell, store, STUDY + "-train", executor=executor,
                      workers=workers, progress=progress, root=out)
        log.info("stage 2/2: %d profile/factor cells", len(cells))
        run_study(cells, run_cell, store, STUDY, executor=executor, workers=workers,
                  progress=progress, root=out)
        log.info("study finished in %.1f min", (time.perf_counter() - t0) / 60)
    return Path(out)


def preset(name: str, **overrides: Any) -> OriginsPreset:
    """``quick`` or ``full`` from ``origins.yaml``, with overrides."""
    return load_preset(OriginsPreset, "origins", name, overrides)


__all__ = ["OriginsPreset", "OriginsData", "ModelSpec", "UserModel", "ProfileCell",
           "FactorCell", "OriginsTrainCell", "run_origins", "preset", "profile",
           "profile_stats", "per_sample_profile", "reinitialized", "get_splits"]
