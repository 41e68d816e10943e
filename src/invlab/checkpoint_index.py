"""A readable index of a checkpoint cache: ``<checkpoints>/index.csv``.

The cache names models by content hash (``<hash>.safetensors``); the index says what each
one is: one row per checkpoint with its method, group, seed, dataset, regularizer, ν,
epochs and validation metrics, read from the checkpoint's own metadata. It is rebuilt from
the folder's checkpoints (so an update lost to a concurrent writer is repaired by the next
one) and written atomically (:func:`invlab.io.atomic_write`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from invlab.checkpoint import read_metadata
from invlab.io import atomic_write

log = logging.getLogger("invlab")

INDEX_NAME = "index.csv"
COLUMNS = ["file", "method", "model", "group", "seed", "dataset", "regularizer", "nu", "epochs",
           "epochs_run", "best_epoch", "best_val_accuracy", "wall_seconds", "n_train"]


def index_row(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """One index row from a checkpoint's metadata (missing fields left empty)."""
    tr, data = meta.get("train") or {}, meta.get("data") or {}
    return {"file": path.name, "method": tr.get("method", ""),
            "model": meta.get("model", tr.get("model", "")),
            "group": meta.get("group", tr.get("group", "")), "seed": meta.get("seed", ""),
            "dataset": data.get("dataset", (meta.get("data_fingerprint") or {}).get("name", "")),
            "regularizer": tr.get("regularizer", "") if tr.get("method") == "ir" else "",
            "nu": tr.get("nu", "") if tr.get("method") == "ir" else "",
            "epochs": tr.get("epochs", ""), "epochs_run": meta.get("epochs_run", ""),
            "best_epoch": meta.get("best_epoch", ""),
            "best_val_accuracy": meta.get("best_val_accuracy", ""),
            "wall_seconds": meta.get("wall_seconds", ""), "n_train": data.get("n_train", "")}


def write_index(checkpoints: str | os.PathLike[str]) -> Path | None:
    """Rebuild ``<checkpoints>/index.csv`` from every ``*.safetensors`` there (sorted by
    dataset, group, method, seed). Unreadable checkpoints are listed with an empty method.
    Returns the index path, or None if the folder does not exist."""

    folder = Path(checkpoints)
    if not folder.is_dir():
        return None
    rows = []
    for p in sorted(folder.glob("*.safetensors")):
        try:
            rows.append(index_row(p, read_metadata(p)))
        except Exception as e:  # noqa: BLE001 - a bad file must not break the index
            log.warning("checkpoint index: %s unreadable (%s)", p, e)
            rows.append({"file": p.name})
    rows.sort(key=lambda r: tuple(str(r.get(k, "")) for k in ("dataset", "group", "method",
                                                               "regularizer", "nu", "seed")))
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return atomic_write(folder / INDEX_NAME, buf.getvalue())


def read_index(checkpoints: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of ``<checkpoints>/index.csv`` ([] if there is none)."""
    p = Path(checkpoints) / INDEX_NAME
    if not p.exists():
        return []
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


def training_label(meta: dict[str, Any]) -> str:
    """`` [ir/logit_l2 ν=31.6, seed 0, mnist]`` from checkpoint metadata ('' if unknown):
    what ``invlab measure`` shows beside the model name."""
    tr = meta.get("train") or {}
    if not tr.get("method"):
        return ""
    how = tr["method"]
    if how == "ir":
        how += f"/{tr.get('regularizer', 'logit_l2')} ν={float(tr.get('nu', 0)):.3g}"
    parts = [how, f"seed {meta.get('seed', tr.get('seed', '?'))}"]
    dataset = (meta.get("data") or {}).get("dataset")
    if dataset:
        parts.append(str(dataset))
    return f" [{', '.join(parts)}]"
