"""Reliability under distribution drift (M23 §4.3, Figure 4).

D1 = Transforming-MNIST's test split, D2 = Transforming-FMNIST (9 classes, padded, each
image with a seeded random group element). Both are taken back to pixel space and, for
``D(β)``, normalized with D1's training statistics (the models' input normalization):

- ``blend``: pixel interpolation ``(1 − β)·x1 + β·x2`` of seeded (D1, D2) pairs, D1 labels;
- ``mixture``: a seeded fraction β of the D1 samples is replaced by D2 samples (D2 labels).

The pairing and the replaced positions are fixed across β, so curves are smooth. Per model
(WT, DA, IR of the genuine study, trained on D1) and β: DI (``kl``), LI (``logit_l2``),
accuracy and the ratio ``Acc(D(β)) / Acc(D1)`` on all D1 test images; SI on ``n_si`` of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from invlab.data import DataConfig, DataError, Split
from invlab.metrics import measure
from invlab.studies import genuine
from invlab.studies.common import (
    NOT_IN_ID,
    TrainCell,
    add_sample_means,
    get_data,
    model_label,
    open_study,
    pin_source,
    resolve_train,
    run_train_cell,
    source_fingerprint,
    trained_model,
)
from invlab.studies.presets import load_preset
from invlab.sweep import CellContext, CellResult, Executor, check, choose_executor, run_study
from invlab.train import TrainConfig, evaluate_accuracy

log = logging.getLogger("invlab.studies")
STUDY = "drift"


@dataclass(frozen=True)
class DriftPreset:
    """Settings; no defaults here: every value comes from ``drift.yaml``."""

    genuine_preset: str
    modes: tuple[str, ...]
    betas: tuple[float, ...]
    n_si: int
    ig_steps: int
    pair_seed: int

    def __post_init__(self) -> None:
        for m in self.modes:
            check("modes", m in ("blend", "mixture"), f"unknown mode {m!r}; valid: blend, mixture")
        for b in self.betas:
            check("betas", 0.0 <= b <= 1.0, f"every beta must be in [0, 1], found {b}")
        check("n_si", self.n_si >= 1, f"must be >= 1, found {self.n_si}")
        check("ig_steps", self.ig_steps >= 1, f"must be >= 1, found {self.ig_steps}")


@dataclass(frozen=True)
class DriftCell:
    data: DataConfig
    train: TrainConfig
    d2: DataConfig
    mode: str
    beta: float
    n_si: int
    ig_steps: int
    pair_seed: int
    checkpoints: str = field(metadata=NOT_IN_ID)
    tune: Any = None  #: the genuine study's TuneCell whose ν the (IR) model uses, else None

    @property
    def threads(self) -> int:
        return self.train.threads

    def describe(self) -> str:
        return f"{model_label(self.data, self.train)} {self.mode} beta={self.beta}"


def drifted(cell: DriftCell) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_beta, y_beta, x_d1, y_d1)``: D(β) and D1, normalized with D1's statistics."""
    d1 = get_data(cell.data, cell.train.group)
    d2 = get_data(cell.d2, cell.train.group)
    p1 = d1.test.images * d1.std + d1.mean
    p2 = d2.test.images * d2.std + d2.mean
    n = len(d1.test)
    if len(d2.test) < n:
        raise ValueError(f"D2 test split has {len(d2.test)} images, fewer than D1's {n}")
    gen = torch.Generator().manual_seed(cell.pair_seed)
    pair = torch.randperm(len(d2.test), generator=gen)[:n]
    y1 = d1.test.labels
    if cell.mode == "blend":
        xb = (1.0 - cell.beta) * p1 + cell.beta * p2[pair]
        yb = y1
    else:
        order = torch.randperm(n, generator=gen)
        swap = order[: round(cell.beta * n)]
        xb, yb = p1.clone(), y1.clone()
        xb[swap] = p2[pair[swap]]
        yb[swap] = d2.test.labels[pair[swap]]
    norm = lambda x: (x - d1.mean) / d1.std  # noqa: E731
    return norm(xb), yb, d1.test.images, y1


def run_drift_cell(cell: DriftCell, ctx: CellContext) -> CellResult:
    model, _, reused = trained_model(resolve_train(cell.train, cell.tune, ctx), cell.data,
                                     cell.checkpoints)
    xb, yb, x1, y1 = drifted(cell)
    zeros = torch.zeros(len(yb), dtype=torch.long)
    acc = evaluate_accuracy(model, Split(xb, yb, zeros))
    acc1 = evaluate_accuracy(model, Split(x1, y1, zeros))
    res = CellResult(extra={"checkpoint_reused": reused})
    res.add("accuracy", acc, n=len(yb)).add("accuracy_d1", acc1, n=len(y1))
    res.add("accuracy_ratio", acc / acc1 if acc1 > 0 else float("nan"))
    m = measure(model, xb, labels=yb, transform=cell.train.group, metrics=["kl", "logit_l2"])
    add_sample_means(res, m, "kl", "logit_l2")
    gen = torch.Generator().manual_seed(cell.pair_seed + 1)
    idx = torch.randperm(len(yb), generator=gen)[: cell.n_si]
    si = measure(model, xb[idx], labels=yb[idx], transform=cell.train.group,
                 metrics=["saliency_similarity"],
                 options={"n_si": None, "saliency_similarity": {"n_steps": cell.ig_steps}})
    return add_sample_means(res, si, "saliency_similarity")


def preset(name: str, **overrides: Any) -> DriftPreset:
    return load_preset(DriftPreset, "drift", name, overrides)


def run_drift(p: DriftPreset, out: str | Path, checkpoints: str, workers: int = 1,
              progress: bool = True, preset_name: str = "custom",
              genuine_overrides: dict[str, Any] | None = None,
              executor: str | Executor | None = None) -> Path:
    """Run the study's cells into ``out`` (store ``out/store.sqlite``, resolved config);
    returns ``out``. The report is the next step (:func:`invlab.build_report`)."""
    gp = genuine.preset(p.genuine_preset, **(genuine_overrides or {}))
    try:  # before anything runs: the drift target is not bundled with invlab
        fps = {d: source_fingerprint(d) for d in ("mnist", "fashion-mnist")}
    except DataError as e:
        raise DataError(f"study drift measures models under the drift MNIST → Fashion-MNIST "
                        f"and needs the Fashion-MNIST files (not bundled): {e}") from None
    config = {"preset": preset_name, **asdict(p), "genuine": asdict(gp),
              "checkpoints": checkpoints, "data": fps}
    with open_study(out, STUDY, config) as (out, store):
        t0 = time.perf_counter()
        executor = choose_executor(executor, workers)
        models = genuine.trained_cells(gp, store, checkpoints, out, workers, progress,
                                       executor=executor)
        run_study([TrainCell(m.data, m.train, checkpoints, m.tune) for m in models],
                  run_train_cell, store, "drift-models", executor=executor, workers=workers,
                  progress=progress, root=out)
        d2 = pin_source(replace(models[0].data, dataset="fashion-mnist", source_hash=None))
        cells = [DriftCell(mc.data, mc.train, d2, mode, float(beta), p.n_si, p.ig_steps,
                           p.pair_seed, checkpoints, mc.tune)
                 for mc in models for mode in p.modes for beta in p.betas]
        log.info("drift: %d models x %d modes x %d betas = %d cells", len(models), len(p.modes),
                 len(p.betas), len(cells))
        run_study(cells, run_drift_cell, store, STUDY, executor=executor, workers=workers,
                  progress=progress, root=out)
        log.info("drift finished in %.1f min", (time.perf_counter() - t0) / 60)
    return out

