"""Shared study machinery: cached data preparation and a content-addressed checkpoint cache.

A trained model is identified by the hash of its resolved (training config, data config):
``<checkpoints>/<hash>.safetensors``. Any study that needs the same model loads it instead
of retraining (training is deterministic, so this is the model a retrain would produce).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from invlab.data import DataConfig, TransformingData, prepare_transforming
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


def model_key(train_cfg: TrainConfig, data_cfg: DataConfig) -> str:
    blob = json.dumps({"train": asdict(train_cfg), "data": asdict(data_cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def trained_model(train_cfg: TrainConfig, data_cfg: DataConfig, checkpoints: str | Path,
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any], bool]:
    """Load the cached checkpoint for (train_cfg, data_cfg), or train and cache it.

    Returns:
        (model in eval mode, checkpoint metadata, reused?)
    """
    from invlab.checkpoint import load_checkpoint

    path = Path(checkpoints) / f"{model_key(train_cfg, data_cfg)}.safetensors"
    if path.exists():
        model, meta = load_checkpoint(path)
        return model, meta, True
    data = get_data(data_cfg, train_cfg.group)
    res = train(train_cfg, data, checkpoint=path, progress=progress,
                metadata={"data": asdict(data_cfg)})
    from invlab.checkpoint import read_metadata

    return res.model, read_metadata(path), False


@dataclass(frozen=True)
class TrainCell:
    """Train (or load) one model into the shared cache: a study stage that runs before
    cells that share models, so parallel workers never train the same model twice."""

    data: DataConfig
    train: TrainConfig
    checkpoints: str


def run_train_cell(cell: TrainCell, ctx: Any) -> Any:
    from invlab.sweep import CellResult

    _, meta, reused = trained_model(cell.train, cell.data, cell.checkpoints)
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


def open_study(out: str | Path, study: str, config: dict[str, Any]) -> tuple[Path, Any]:
    """Create ``out``, write the resolved config beside the results, open the store."""
    from invlab.sweep import ResultsStore, write_resolved_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(out, study, config)
    return out, ResultsStore(out / "store.sqlite")
