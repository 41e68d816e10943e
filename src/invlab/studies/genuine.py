"""Genuine invariance (M23 §4.1–4.2): DA vs WT vs IR on Transforming-MNIST/-FMNIST.

Cells: dataset × group × method × seed. Stage 1 tunes IR's ν per (dataset, group) on seed 0
(:func:`invlab.train.tune_nu`); stage 2 trains/measures the IR cells, each of which names its
tuning cell (``tune``) and reads the chosen ν from the store when it runs (ν is a measured
value, not part of the IR cell's id). Trained models go through the shared checkpoint cache,
so the tuning run that selected ν *is* the seed-0 IR model, and later studies reuse them all.
Every data config is pinned to the content hash of the source found (``source_hash``), and
every cell and model runs with ``threads`` intra-op threads (preset field, default 1), so the
results are bit-identical whatever ``--workers`` is.

Per cell (test split): accuracy, ``logit_l2`` (LI), ``kl`` (DI), ``effective_invariance``
(EI); ``saliency_similarity`` (SI) on a seeded subset of ``n_si`` test images; ``nu`` for IR.
Seed-0 cells also store the data of Figures 2 and 3 (orbit features, realigned saliency).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from invlab.data import DataConfig
from invlab.groups import create_group
from invlab.studies.common import (
    NOT_IN_ID,
    add_sample_means,
    get_data,
    model_label,
    open_study,
    pin_source,
    resolve_train,
    run_stages,
    source_fingerprint,
    trained_model,
)
from invlab.studies.presets import load_preset
from invlab.sweep import (
    CellContext,
    CellResult,
    Executor,
    ResultsStore,
    StudyError,
    choose_executor,
    run_study,
)
from invlab.train import TrainConfig, evaluate_accuracy, tune_nu

log = logging.getLogger("invlab.studies")

STUDY = "genuine"
OUTPUT_METRICS = ["logit_l2", "kl", "effective_invariance"]
N_FIG_SAMPLES = 40
N_SAL_SAMPLES = 4


@dataclass(frozen=True)
class GenuinePreset:
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    groups: tuple[str, ...] = ("r4", "t3")
    methods: tuple[str, ...] = ("wt", "da", "ir")
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    epochs: int = 300
    patience: int | None = 40
    batch_size: int = 512
    lr: float = 8e-4
    n_train: int = 10_000
    n_val: int = 2_000
    n_test_max: int = 50_000
    n_si: int = 2_000
    ig_steps: int = 50
    tune_target: float = 0.95
    tune_n_val_si: int = 500
    tune_nu_start: float = 1.0
    tune_max_trials: int = 6
    threads: int = 1  #: intra-op threads of every cell and training run (part of their ids)

    def __post_init__(self) -> None:
        from invlab.sweep import check

        for m in self.methods:
            check("methods", m in ("wt", "da", "ir"), f"unknown method {m!r}; valid: wt, da, ir")
        for g in self.groups:
            create_group(g)
        check("seeds", len(self.seeds) >= 1, "need at least one seed")
        check("epochs", self.epochs >= 1, f"must be >= 1, found {self.epochs}")
        check("n_si", self.n_si >= 1, f"must be >= 1, found {self.n_si}")
        check("ig_steps", self.ig_steps >= 1, f"must be >= 1, found {self.ig_steps}")
        check("tune_target", -1 <= self.tune_target <= 1, f"must be in [-1, 1], found "
              f"{self.tune_target}")
        check("threads", self.threads >= 1, f"must be >= 1, found {self.threads}")

    def data_config(self, dataset: str) -> DataConfig:
        """The dataset's config, pinned to the content hash of the source found now."""
        return pin_source(DataConfig(dataset=dataset, exclude_class=9, pad_to=36,
                                     n_train=self.n_train, n_val=self.n_val,
                                     n_test_max=self.n_test_max, data_seed=0))

    def train_config(self, method: str, group: str, seed: int, nu: float = 0.0,
                     regularizer: str = "logit_l2") -> TrainConfig:
        return TrainConfig(method=method, group=group, model="mlp5", epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, nu=nu,
                           regularizer=regularizer, seed=seed, patience=self.patience,
                           threads=self.threads)


@dataclass(frozen=True)
class TuneCell:
    """ν search for IR on one (dataset, group, regularizer); its ``nu`` row is the answer."""

    data: DataConfig
    train: TrainConfig
    target: float
    n_val_si: int
    nu_start: float
    max_trials: int
    checkpoints: str = field(metadata=NOT_IN_ID)

    @property
    def threads(self) -> int:
        return self.train.threads

    def describe(self) -> str:
        return f"tune nu {model_label(self.data, self.train)}"


@dataclass(frozen=True)
class GenuineCell:
    """Train (or load) and measure one model. IR cells name their tuning cell in ``tune``;
    their ``train.nu`` is a placeholder (0) replaced by the tuned ν when the cell runs."""

    data: DataConfig
    train: TrainConfig
    n_si: int
    ig_steps: int
    figures: bool
    checkpoints: str = field(metadata=NOT_IN_ID)
    tune: TuneCell | None = None

    @property
    def threads(self) -> int:
        return self.train.threads

    def describe(self) -> str:
        return model_label(self.data, self.train)


def run_tune_cell(cell: TuneCell, ctx: CellContext) -> CellResult:
    data = get_data(cell.data, cell.train.group)

    def fit(c: TrainConfig) -> torch.nn.Module:
        return trained_model(c, cell.data, cell.checkpoints)[0]

    s = tune_nu(cell.train, data, target=cell.target, nu_start=cell.nu_start,
                n_val_si=cell.n_val_si, max_trials=cell.max_trials, fit=fit, progress=False)
    res = CellResult(extra={"trials": s.trials, "reached": s.reached})
    res.add("nu", s.nu).add("val_si", s.si).add("val_accuracy", s.accuracy)
    res.add("reached", float(s.reached)).add("n_trials", float(len(s.trials)))
    return res


def _si_subset(n_test: int, n_si: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_test, generator=gen)[:n_si].sort().values


def figure_data(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                group: str, ig_steps: int) -> dict[str, Any]:
    """Fig. 2: penultimate features of the whole orbit of ``N_FIG_SAMPLES`` test images;
    Fig. 3: saliency maps of ``N_SAL_SAMPLES`` images over the orbit, realigned by g⁻¹."""
    from invlab.attribution import boundary_for_group, integrated_gradients, saliency_map

    grp = create_group(group)
    k = grp.order
    x = images[:N_FIG_SAMPLES]
    orbit = grp.orbit(x)  # [k, n, C, H, W]
    with torch.no_grad():
        feats = model.forward_features(orbit.flatten(0, 1))
    xs, ys = images[:N_SAL_SAMPLES], labels[:N_SAL_SAMPLES]
    so = grp.orbit(xs).flatten(0, 1)  # [k*n, ...]
    attr = integrated_gradients(model, so, target=ys.repeat(k), n_steps=ig_steps)
    maps = saliency_map(attr, boundary=boundary_for_group(grp))  # [k*n, H, W]
    maps = maps.view(k, N_SAL_SAMPLES, *maps.shape[-2:])
    realigned = torch.stack([grp.act_inverse(maps[e], e) for e in range(k)])
    return {
        "features": [[round(v, 4) for v in row] for row in feats.tolist()],
        "feature_element": [e for e in range(k) for _ in range(x.shape[0])],
        "feature_sample": [i for _ in range(k) for i in range(x.shape[0])],
        "feature_label": labels[:N_FIG_SAMPLES].repeat(k).tolist(),
        "saliency": [[[[round(v, 4) for v in r] for r in m] for m in el] for el in
                     realigned.tolist()],  # [k][n][H][W]
        "saliency_images": xs[:, 0].tolist(),
    }


def run_genuine_cell(cell: GenuineCell, ctx: CellContext) -> CellResult:
    from invlab.metrics import measure

    t0 = time.perf_counter()
    train_cfg = resolve_train(cell.train, cell.tune, ctx)
    model, meta, reused = trained_model(train_cfg, cell.data, cell.checkpoints)
    data = get_data(cell.data, cell.train.group)
    test = data.test
    res = CellResult()
    res.add("accuracy", evaluate_accuracy(model, test), n=len(test))
    m = measure(model, test.images, labels=test.labels, group=cell.train.group,
                metrics=OUTPUT_METRICS)
    add_sample_means(res, m, *OUTPUT_METRICS)
    idx = _si_subset(len(test), cell.n_si, seed=cell.data.data_seed + 17)
    si = measure(model, test.images[idx], labels=test.labels[idx], group=cell.train.group,
                 metrics=["saliency_similarity"], n_steps=cell.ig_steps)
    add_sample_means(res, si, "saliency_similarity")
    if cell.train.method == "ir":
        res.add("nu", train_cfg.nu)
    res.add("val_accuracy", float(meta.get("best_val_accuracy", float("nan"))))
    res.add("epochs_run", float(meta.get("epochs_run", 0)))
    res.add("best_epoch", float(meta.get("best_epoch", 0)))
    res.add("train_seconds", float(meta.get("wall_seconds", 0.0)))
    extra: dict[str, Any] = {"checkpoint_reused": reused, "val_curve": meta.get("val_curve"),
                             "data_fingerprint": meta.get("data_fingerprint"),
                             "measure_seconds": round(time.perf_counter() - t0, 2)}
    if cell.tune is not None:
        from invlab.sweep import cell_id

        extra["tune_cell"] = cell_id(cell.tune)
    if cell.figures:
        extra["figures"] = figure_data(model, test.images, test.labels, cell.train.group,
                                       cell.ig_steps)
    res.extra = extra
    return res


def tune_cells(p: GenuinePreset, checkpoints: str) -> list[TuneCell]:
    if "ir" not in p.methods:
        return []
    return [TuneCell(p.data_config(d), p.train_config("ir", g, p.seeds[0]), p.tune_target,
                     p.tune_n_val_si, p.tune_nu_start, p.tune_max_trials, checkpoints)
            for d in p.datasets for g in p.groups]


def genuine_cells(p: GenuinePreset, checkpoints: str) -> list[GenuineCell]:
    """Every (dataset, group, method, seed) cell; IR cells refer to their tuning cell."""
    tunes = {(c.data.dataset, c.train.group): c for c in tune_cells(p, checkpoints)}
    cells = []
    for d in p.datasets:
        for g in p.groups:
            for method in p.methods:
                for s in p.seeds:
                    cells.append(GenuineCell(p.data_config(d), p.train_config(method, g, s),
                                             p.n_si, p.ig_steps, s == p.seeds[0], checkpoints,
                                             tunes[(d, g)] if method == "ir" else None))
    return cells


def run_stage1_cell(cell: TuneCell | GenuineCell, ctx: CellContext) -> CellResult:
    """Stage 1 runs ν tuning and the DA/WT cells side by side (they are independent)."""
    if isinstance(cell, TuneCell):
        return run_tune_cell(cell, ctx)
    return run_genuine_cell(cell, ctx)


def run_genuine(preset: GenuinePreset, out: str | Path, checkpoints: str | Path | None = None,
                workers: int = 1, progress: bool = True, preset_name: str = "custom",
                executor: str | Executor | None = None) -> Path:
    """Run the study into ``out`` (store ``out/store.sqlite``) and build its report.

    ``executor``: ``serial``, ``process``, ``ray`` or an Executor; default from ``workers``
    (:func:`invlab.sweep.choose_executor`). Relative ``out``/``checkpoints`` are resolved
    where each cell runs, against the driver's working directory (``CellContext.cwd``)."""
    from invlab.report.genuine import build_report

    ckpt = str(Path(checkpoints) if checkpoints else Path(out) / "checkpoints")
    config = {"preset": preset_name, **asdict(preset), "checkpoints": ckpt, "workers": workers,
              "data": {d: source_fingerprint(d) for d in preset.datasets}}
    with open_study(out, STUDY, config) as (out, store):
        executor = choose_executor(executor, workers)
        t0 = time.perf_counter()
        tcells = tune_cells(preset, ckpt)
        cells = genuine_cells(preset, ckpt)
        base = [c for c in cells if c.train.method != "ir"]
        log.info("stage 1/2: tuning IR's nu for %d (dataset, group) pairs + %d DA/WT cells",
                 len(tcells), len(base))

        def stage1() -> Any:
            return run_study([*tcells, *base], run_stage1_cell, store, STUDY,
                             executor=executor, workers=workers, progress=progress, root=out)

        def stage2() -> Any:
            from invlab.sweep import cell_id

            tuned = store.done_ids(STUDY)  # IR cells whose tuning failed cannot run
            ir = [c for c in cells if c.train.method == "ir" and cell_id(c.tune) in tuned]
            log.info("stage 2/2: %d IR cells with the tuned nu", len(ir))
            if not ir:
                return None
            return run_study(ir, run_genuine_cell, store, STUDY, executor=executor,
                             workers=workers, progress=progress, root=out)

        try:
            run_stages(STUDY, [stage1, stage2])
        except StudyError:
            build_report(out)  # report whatever finished, then name the failures
            raise
        log.info("study finished in %.1f min", (time.perf_counter() - t0) / 60)
        build_report(out)
        from invlab.report.html import write_html_report

        write_html_report(out, wall_seconds=time.perf_counter() - t0)
    return out


def trained_cells(preset: GenuinePreset, store: ResultsStore, checkpoints: str, out: Path,
                  workers: int = 1, progress: bool = True, datasets: tuple[str, ...] = ("mnist",),
                  methods: tuple[str, ...] = ("wt", "da", "ir"),
                  executor: str | Executor | None = None) -> list[GenuineCell]:
    """The genuine study's cells for ``datasets`` and ``methods``, with IR's ν tuned.

    Runs the ν-tuning cells into ``store`` (study ``genuine``); with the shared checkpoint
    cache every trial the genuine study already trained is loaded, not retrained. Used by
    the drift and spectral studies to get exactly the genuine study's models.
    """
    p = replace(preset, datasets=datasets, methods=methods)
    tcells = tune_cells(p, checkpoints)
    if tcells:
        ex = choose_executor(executor, workers) if executor is not None else \
            choose_executor(None, min(workers, len(tcells)))
        run_study(tcells, run_tune_cell, store, STUDY + "-tune", executor=ex,
                  progress=progress, root=out)
    return genuine_cells(p, checkpoints)


def preset(name: str, **overrides: Any) -> GenuinePreset:
    """``quick`` or ``full`` from ``genuine.yaml``, with overrides (e.g. ``datasets=...``)."""
    return load_preset(GenuinePreset, "genuine", name, overrides)


__all__ = ["GenuinePreset", "GenuineCell", "TuneCell", "run_genuine", "preset",
           "run_genuine_cell", "run_tune_cell", "replace"]
