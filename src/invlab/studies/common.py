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

from invlab.data import (
    DataConfig,
    DataMismatchError,
    TransformingData,
    load_source,
    prepare_transforming,
)
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
    from invlab.data import sources

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
    from invlab.sweep.config import id_dict

    # id_dict: a field added with ID_IF_NOT_DEFAULT keeps the keys of checkpoints made before it
    blob = json.dumps({"train": id_dict(train_cfg), "data": asdict(data_cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def trained_model(train_cfg: TrainConfig, data_cfg: DataConfig, checkpoints: str | Path,
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any], bool]:
    """Load the cached checkpoint for (train_cfg, data_cfg), or train and cache it.

    Returns:
        (model in eval mode, checkpoint metadata, reused?)
    """
    from invlab.checkpoint import load_checkpoint

    data_cfg = pin_source(data_cfg)
    path = Path(checkpoints) / f"{model_key(train_cfg, data_cfg)}.safetensors"
    if path.exists():
        model, meta = load_checkpoint(path)
        found = (meta.get("data_fingerprint") or {}).get("hash")
        if found != data_cfg.source_hash:
            raise DataMismatchError(
                f"{path}: cached checkpoint was trained on data {found}, but its key says "
                f"{data_cfg.source_hash}; the cache is corrupt or was edited, delete the file")
        from invlab.devices import study_device

        return model.to(study_device()), meta, True  # the cells' device (invlab study --device)
    data = get_data(data_cfg, train_cfg.group)
    res = train(train_cfg, data, checkpoint=path, progress=progress,
                metadata={"data": asdict(data_cfg)})
    from invlab.checkpoint import read_metadata
    from invlab.checkpoint_index import write_index

    write_index(path.parent)  # <checkpoints>/index.csv: what each hash-named file is
    return res.model, read_metadata(path), False


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
    from invlab.sweep import StudyError, StudySummary

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
    from invlab.sweep import CellResult

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
    store for the block. A second study on the same ``out`` fails with ``OutputLocked``."""
    from invlab.sweep import ResultsStore, output_lock, write_resolved_config

    out = Path(out)
    with output_lock(out):
        write_resolved_config(out, study, config)
        with ResultsStore(out / "store.sqlite") as store:
            yield out, store
