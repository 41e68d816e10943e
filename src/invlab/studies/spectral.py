"""Invariance-induced spectral decay (M23 §4.4, Figure 5).

IR with each regularizer — ``kl`` (DI), ``logit_l2`` (LI), ``logit_l2_normalized`` (as
M23 define it) and ``logit_l2_normalized_detached`` (a labelled variant: same value,
stop-gradient denominator) — each with ν tuned so that validation SI ≥ 0.95 (the genuine
study's search, :mod:`invlab.studies.tuning`),
against DA, per group, all seeds of the genuine preset, on Transforming-MNIST. Per model:
``sigma_max`` = mean over ``n_eval`` test images (null: all) of the spectral norm of the
exact per-sample input Jacobian of the logits
(:func:`invlab.metrics.functional.jacobian_spectral_norm`), plus accuracy and the tuned ν.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from invlab.data import DataConfig
from invlab.devices import model_device
from invlab.metrics.functional import jacobian_spectral_norm
from invlab.studies import genuine
from invlab.studies.common import (
    NOT_IN_ID,
    get_data,
    model_label,
    open_study,
    resolve_train,
    source_fingerprint,
    trained_model,
)
from invlab.studies.presets import load_preset
from invlab.studies.tuning import tune_all
from invlab.sweep import CellContext, CellResult, DynamicCell, Executor, check, choose_executor
from invlab.train import TrainConfig, evaluate_accuracy
from invlab.train.loop import REGULARIZERS

log = logging.getLogger("invlab.studies")
STUDY = "spectral"


@dataclass(frozen=True)
class SpectralPreset:
    """Settings; no defaults here: every value comes from ``spectral.yaml``."""

    genuine_preset: str
    regularizers: tuple[str, ...]
    n_eval: int | None  #: test images for σ_max (None: the whole test split)

    def __post_init__(self) -> None:
        for r in self.regularizers:
            check("regularizers", r in REGULARIZERS, f"unknown regularizer {r!r}; valid: "
                  + ", ".join(REGULARIZERS))
        check("n_eval", self.n_eval is None or self.n_eval >= 1,
              f"must be >= 1 or null (all test images), found {self.n_eval}")


@dataclass(frozen=True)
class SpectralCell:
    data: DataConfig
    train: TrainConfig
    n_eval: int | None
    checkpoints: str = field(metadata=NOT_IN_ID)
    tune: Any = None  #: the TuneCell whose ν this (IR) model uses, else None

    @property
    def threads(self) -> int:
        return self.train.threads

    def describe(self) -> str:
        return model_label(self.data, self.train)


def run_spectral_cell(cell: SpectralCell, ctx: CellContext) -> CellResult:
    train_cfg = resolve_train(cell.train, cell.tune, ctx)
    model, meta, reused = trained_model(train_cfg, cell.data, cell.checkpoints)
    test = get_data(cell.data, cell.train.group).test
    x = test.images if cell.n_eval is None else test.images[: cell.n_eval]

    sig = jacobian_spectral_norm(model, x.to(model_device(model))).cpu()
    res = CellResult(extra={"checkpoint_reused": reused})
    res.add("sigma_max", float(sig.mean()), float(sig.std()), len(sig))
    res.add("accuracy", evaluate_accuracy(model, test), n=len(test))
    if cell.train.method == "ir":
        res.add("nu", train_cfg.nu)
    return res


def preset(name: str, **overrides: Any) -> SpectralPreset:
    return load_preset(SpectralPreset, "spectral", name, overrides)


def run_spectral(p: SpectralPreset, out: str | Path, checkpoints: str, workers: int = 1,
                 progress: bool = True, preset_name: str = "custom",
                 genuine_overrides: dict[str, Any] | None = None,
                 executor: str | Executor | None = None) -> Path:
    """Run the study's cells into ``out`` (store ``out/store.sqlite``, resolved config);
    returns ``out``. The report is the next step (:func:`invlab.build_report`)."""
    gp = replace(genuine.preset(p.genuine_preset, **(genuine_overrides or {})),
                 datasets=("mnist",))
    config = {"preset": preset_name, **asdict(p), "genuine": asdict(gp),
              "checkpoints": checkpoints, "data": {"mnist": source_fingerprint("mnist")}}
    with open_study(out, STUDY, config) as (out, store):
        executor = choose_executor(executor, workers)
        t0 = time.perf_counter()
        # the same tuning cells as the genuine study's (logit_l2): identical ids, trials and
        # checkpoints, so with the shared cache nothing genuine trained is trained again
        tcells = {(g, r): genuine.tune_cell(gp, "mnist", g, checkpoints, regularizer=r)
                  for g in gp.groups for r in p.regularizers}
        cells = []
        for g in gp.groups:
            for s in gp.seeds:
                cells.append(SpectralCell(gp.data_config("mnist"), gp.train_config("da", g, s),
                                          p.n_eval, checkpoints))
                for r in p.regularizers:
                    cells.append(SpectralCell(gp.data_config("mnist"),
                                              gp.train_config("ir", g, s, regularizer=r),
                                              p.n_eval, checkpoints, tcells[(g, r)]))
        log.info("spectral: %d nu searches and %d cells on one pool", len(tcells), len(cells))
        # tuning cells in "spectral-tune", trials in "spectral-tune-nu-trials" (as before);
        # DA cells (cached genuine checkpoints) run last, IR cells once their nu is known
        tune_all(list(tcells.values()), store, "spectral-tune", executor=executor,
                 workers=workers, progress=progress, root=out,
                 cells=[DynamicCell(c, run_spectral_cell, STUDY, 2 if c.tune is None else 1)
                        for c in cells])
        log.info("spectral finished in %.1f min", (time.perf_counter() - t0) / 60)
    return out


__all__ = ["SpectralPreset", "SpectralCell", "run_spectral", "preset"]
