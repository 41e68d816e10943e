"""Shared study machinery: cached data preparation and a content-addressed checkpoint cache.

A trained model is identified by the hash of its resolved (training config, data config):
``<checkpoints>/<hash>.safetensors``, listed with its method, group, seed, dataset and
validation metrics in ``<checkpoints>/index.csv`` (:mod:`invlab.checkpoint_index`). The
training config includes ``threads`` (intra-op threads training ran with) and the data
config the content hash of the source
(``source_hash``, pinned by :func:`pin_source`), so the key covers everything that changes
the weights. Any study that needs the same model loads it instead of retraining (training is
deterministic, so this is the model a retrain would produce).

Cells refer to the checkpoint folder through a ``checkpoints`` field that is *not* part of
their id (where a model is cached does not change what is computed), and to derived values
(IR's tuned ν) through the config of the producing cell (``tune``), whose result is read from
the store when the cell runs (:func:`resolve_train`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from invlab.cache import CacheMismatch, load_or_create
from invlab.checkpoint import CheckpointError, load_as_recorded, read_metadata
from invlab.checkpoint_index import write_index
from invlab.config import from_dict, id_dict
from invlab.data import (
    DataConfig,
    TransformingData,
    load_source,
    prepare_transforming,
    sources,
)
from invlab.devices import study_device
from invlab.errors import check_writable
from invlab.io import remove_stale_temps
from invlab.sweep import CellResult, ResultsStore, StudyError, StudySummary, output_lock, write_resolved_config
from invlab.train import TrainConfig, train

log = logging.getLogger("invlab.studies")

_DATA_CACHE: dict[tuple[DataConfig, str], TransformingData] = {}


def get_data(cfg: DataConfig, group: str) -> TransformingData:
    """``prepare_transforming`` memoized per process (studies reuse the same splits)."""
    key = (cfg, group)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) > 8:
            _DATA_CACHE.clear()
        _DATA_CACHE[key] = prepare_transforming(cfg, group)
    return _DATA_CACHE[key]


_PINNED: dict[tuple[str, ...], tuple[str, dict[str, Any]]] = {}


def source_fingerprint(dataset: str) -> dict[str, Any]:
    """The fingerprint (:meth:`invlab.data.Dataset.fingerprint`) of what ``dataset``
    resolves to now; memoized per process and data environment."""

    key = (dataset, os.environ.get("INVLAB_DATA", ""), os.environ.get("INVLAB_CACHE", ""),
           str(sources.FASHION_SYSTEM_DIR))
    if key not in _PINNED:
        ds = load_source(dataset)
        _PINNED[key] = (ds.content_hash, ds.fingerprint())
    return _PINNED[key][1]


def pin_source(cfg: DataConfig) -> DataConfig:
    """``cfg`` with ``source_hash`` set to the content hash of the data found now (unchanged
    if already pinned). Cells and checkpoint keys built from it are tied to that data."""
    if cfg.source_hash is not None:
        return cfg
    return replace(cfg, source_hash=str(source_fingerprint(cfg.dataset)["hash"]))


def model_key(train_cfg: TrainConfig, data_cfg: DataConfig) -> str:
    """Checkpoint-cache key: hash of the resolved training and (pinned) data configs."""

    # id_dict: a field added with ID_IF_NOT_DEFAULT keeps the keys of checkpoints made before it
    blob = json.dumps({"train": id_dict(train_cfg), "data": asdict(data_cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def recorded_configs(meta: dict[str, Any]) -> tuple[TrainConfig, DataConfig]:
    """The training config (``train``) and data config (``data``) a checkpoint's metadata
    records. Raises KeyError / ValueError / TypeError if it records none or an invalid one."""

    return from_dict(TrainConfig, meta["train"]), from_dict(DataConfig, meta["data"])


def load_verified(path: str | Path, data_cfg: DataConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Load the cached checkpoint ``path`` only if it proves what it is.

    Its recorded training and data configs (:func:`recorded_configs`) must hash to the
    key in its name, and its data fingerprint must be the data that key stands for
    (``data_cfg.source_hash``). Raises :class:`invlab.cache.CacheMismatch` (naming the file
    and what differs) otherwise, or when the file cannot be read as a checkpoint.
    """

    p = Path(path)
    try:
        meta = read_metadata(p)
    except (CheckpointError, OSError) as e:
        raise CacheMismatch(p, f"not a readable checkpoint ({e})") from e
    try:
        tr, dc = recorded_configs(meta)
        key, what = model_key(tr, dc), model_label(dc, tr)
    except (KeyError, TypeError, ValueError) as e:
        raise CacheMismatch(p, f"it records no valid training and data config ({e})") from e
    if key != p.stem:
        raise CacheMismatch(p, f"the training config and data it records ({what}) hash to key "
                               f"{key}, not to its name")
    found = (meta.get("data_fingerprint") or {}).get("hash")
    if found is None or found != data_cfg.source_hash:
        raise CacheMismatch(p, f"it was trained on data {found}, but its key stands for data "
                               f"{data_cfg.source_hash}")
    return load_as_recorded(p, meta)


def trained_model(train_cfg: TrainConfig, data_cfg: DataConfig, checkpoints: str | Path,
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any], bool]:
    """Load the cached checkpoint for (train_cfg, data_cfg), or train and cache it.

    A cached file is used only if it proves what it is (:func:`load_verified`); one that
    does not is retrained and replaced, with one WARNING line naming it. Training happens
    under the entry's lock (:class:`invlab.cache.EntryLock`): a second process, Ray worker
    or host asking for the same model waits for the first and loads its checkpoint.

    Returns:
        (model in eval mode, checkpoint metadata, reused?)
    """

    data_cfg = pin_source(data_cfg)
    path = Path(checkpoints) / f"{model_key(train_cfg, data_cfg)}.safetensors"

    def create() -> tuple[nn.Module, dict[str, Any]]:
        data = get_data(data_cfg, train_cfg.group)
        res = train(train_cfg, data, checkpoint=path, progress=progress,
                    metadata={"data": asdict(data_cfg)})
        write_index(path.parent)  # <checkpoints>/index.csv: what each hash-named file is
        return res.model, read_metadata(path)

    (model, meta), reused = load_or_create(
        path, lambda p: load_verified(p, data_cfg), create,
        what=f"training {model_label(data_cfg, train_cfg)}")

    return model.to(study_device()), meta, reused  # the cells' device (invlab study --device)


NOT_IN_ID: dict[str, Any] = {"cell_id": False}
"""Field metadata: stored with the cell's config but not part of its id."""


def model_label(data: DataConfig, train: TrainConfig) -> str:
    """``mnist/r4/ir/seed0`` (plus the regularizer when it is not the default)."""
    reg = f"/{train.regularizer}" if train.method == "ir" and train.regularizer != "logit_l2" \
        else ""
    return f"{data.dataset}/{train.group}/{train.method}{reg}/seed{train.seed}"


def run_stages(study: str, stages: list[Any]) -> None:
    """Run ``stages`` (callables returning a ``StudySummary``) in order, all of them even if
    one has failing cells; then raise one ``StudyError`` listing every failure."""

    failures: dict[str, str] = {}
    labels: dict[str, str] = {}
    total = ran = 0
    for stage in stages:
        try:
            s = stage()
        except StudyError as e:
            failures.update(e.failures)
            labels.update(e.labels)
            s = e.summary
        if s is not None:
            total, ran = total + s.total, ran + s.ran
    if failures:
        raise StudyError(study, failures, StudySummary(study, total, total - ran - len(failures),
                                                       ran, tuple(failures), 0.0), labels)


def resolve_train(train_cfg: TrainConfig, tune: Any, ctx: Any) -> TrainConfig:
    """``train_cfg`` with ν read from the finished tuning cell ``tune`` (if any)."""
    if tune is None:
        return train_cfg
    return replace(train_cfg, nu=float(ctx.value(tune, "nu")))


@dataclass(frozen=True)
class TrainCell:
    """Train (or load) one model into the shared cache: a study stage that runs before
    cells that share models, so parallel workers never train the same model twice."""

    data: DataConfig
    train: TrainConfig
    checkpoints: str = field(metadata=NOT_IN_ID)
    tune: Any = None  #: the TuneCell whose ν this model uses (IR), else None

    @property
    def threads(self) -> int:
        return self.train.threads

    def describe(self) -> str:
        return f"train {model_label(self.data, self.train)}"


def run_train_cell(cell: TrainCell, ctx: Any) -> Any:
    train_cfg = resolve_train(cell.train, cell.tune, ctx)
    _, meta, reused = trained_model(train_cfg, cell.data, cell.checkpoints)
    res = CellResult(extra={"checkpoint_reused": reused})
    res.add("val_accuracy", float(meta.get("best_val_accuracy", float("nan"))))
    res.add("epochs_run", float(meta.get("epochs_run", 0)))
    return res


def add_sample_means(res: Any, measurement: Any, *names: str) -> Any:
    """Add one row per metric: mean and std over samples of the per-sample value (averaged
    over group elements), with n = number of samples."""
    for name in names:
        per = measurement.per_sample[name].mean(1)
        res.add(name, float(per.mean()), float(per.std()), len(per))
    return res


@contextmanager
def open_study(out: str | Path, study: str, config: dict[str, Any]
               ) -> Iterator[tuple[Path, Any]]:
    """Hold ``out``'s writer lock, write the resolved config beside the results and open the
    store for the block. A second study on the same ``out`` fails with ``OutputLocked``.
    ``out`` and ``config["checkpoints"]`` are checked writable first (:class:`PreflightError`)."""

    out = Path(out)
    check_writable(out, "--out")  # preflight: fail in seconds, not after training
    if config.get("checkpoints"):
        check_writable(config["checkpoints"], "--checkpoints")
    with output_lock(out):
        remove_stale_temps(out)  # e.g. .fig_*.tmp of a report writer that was killed
        write_resolved_config(out, study, config)
        with ResultsStore(out / "store.sqlite") as store:
            yield out, store
