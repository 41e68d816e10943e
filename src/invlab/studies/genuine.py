"""Genuine invariance (M23 §4.1–4.2): DA vs WT vs IR on Transforming-MNIST/-FMNIST.

Cells: dataset × group × method × seed. Stage 1 tunes IR's ν per (dataset, group) on seed 0
(:mod:`invlab.studies.tuning`: one cell per trial, bracketing on the half-decade grid then
log-space refinement to ×1.3); stage 2 trains/measures every WT, DA and IR cell. An IR cell
names its tuning cell (``tune``) and reads the chosen ν from the store when it runs (ν is a
measured value, not part of the IR cell's id); the ``demo`` preset fixes ν instead. Trained
models go through the shared checkpoint cache, so the trial that selected ν *is* the seed-0
IR model, and later studies reuse them all. Every data config is pinned to the content hash
of the source found (``source_hash``), and every cell and model runs with ``threads``
intra-op threads, so the results are bit-identical whatever ``--workers`` is.

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

from invlab.attribution import boundary_for_group, integrated_gradients, saliency_map
from invlab.data import DataConfig
from invlab.data.sources import canonical_source, load_source
from invlab.data.transforming import drop_class, split_sizes
from invlab.groups import create_group
from invlab.metrics import measure
from invlab.studies.common import (
    NOT_IN_ID,
    add_sample_means,
    get_data,
    model_label,
    open_study,
    pin_source,
    resolve_train,
    source_fingerprint,
    trained_model,
)
from invlab.studies.presets import load_preset
from invlab.studies.tuning import TuneCell, run_tune_cell, tune_all
from invlab.sweep import (
    CellContext,
    CellResult,
    DynamicCell,
    Executor,
    ResultsStore,
    cell_id,
    check,
    choose_executor,
)
from invlab.train import TrainConfig, evaluate_accuracy

log = logging.getLogger("invlab.studies")

STUDY = "genuine"
OUTPUT_METRICS = ["logit_l2", "kl", "effective_invariance"]
N_FIG_SAMPLES = 40
N_SAL_SAMPLES = 4


@dataclass(frozen=True)
class GenuinePreset:
    """The study's settings. No defaults here: every value comes from ``genuine.yaml``
    (:func:`preset`), the one place study defaults live."""

    datasets: tuple[str, ...]
    groups: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    patience: int | None  #: early-stopping patience (None: train all epochs, as the paper)
    batch_size: int
    lr: float
    n_train: int
    n_val: int
    n_test_max: int
    n_si: int
    ig_steps: int
    tune_target: float
    tune_n_val_si: int
    tune_nu_start: float
    tune_max_trials: int
    tune_parallel: int  #: ν trials per search round (fixed: results never depend on --workers)
    tune_tolerance: float  #: stop refining when hi/lo ≤ this
    threads: int  #: intra-op threads of every cell and training run (part of their ids)
    nu: dict[str, dict[str, float]] | None
    """Fixed ν per dataset and group (``{"mnist": {"r4": 31.6}}``) instead of tuning (the
    demo preset); None: tune."""

    def __post_init__(self) -> None:
        # a path to your own images counts by its resolved location, however it was spelled
        object.__setattr__(self, "datasets", tuple(canonical_source(d) for d in self.datasets))
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
        check("tune_parallel", self.tune_parallel >= 1, f"must be >= 1, found "
              f"{self.tune_parallel}")
        check("tune_tolerance", self.tune_tolerance > 1, f"must be > 1, found "
              f"{self.tune_tolerance}")
        for d in self.datasets if self.nu is not None and "ir" in self.methods else ():
            for g in self.groups:
                check("nu", g in self.nu.get(d, {}), f"a fixed nu is needed for {d}/{g}, found "
                      f"{self.nu}; give one or drop `nu` to tune it")

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


def _si_subset(n_test: int, n_si: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_test, generator=gen)[:n_si].sort().values


def figure_data(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                group: str, ig_steps: int) -> dict[str, Any]:
    """Fig. 2: penultimate features of the whole orbit of ``N_FIG_SAMPLES`` test images;
    Fig. 3: saliency maps of ``N_SAL_SAMPLES`` images over the orbit, realigned by g⁻¹."""

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

    si = measure(model, xs, labels=ys, transform=group, metrics=["saliency_similarity"],
                 options={"n_si": None, "saliency_similarity": {"n_steps": ig_steps}},
                 ).per_sample["saliency_similarity"].mean(1)
    return {
        "features": [[round(v, 4) for v in row] for row in feats.tolist()],
        "feature_element": [e for e in range(k) for _ in range(x.shape[0])],
        "feature_sample": [i for _ in range(k) for i in range(x.shape[0])],
        "feature_label": labels[:N_FIG_SAMPLES].repeat(k).tolist(),
        "saliency": [[[[round(v, 4) for v in r] for r in m] for m in el] for el in
                     realigned.tolist()],  # [k][n][H][W]
        "saliency_images": xs[:, 0].tolist(),
        "saliency_si": [round(float(v), 4) for v in si],  # per-sample SI of the rows of Fig. 3
    }


def run_genuine_cell(cell: GenuineCell, ctx: CellContext) -> CellResult:
    t0 = time.perf_counter()
    train_cfg = resolve_train(cell.train, cell.tune, ctx)
    model, meta, reused = trained_model(train_cfg, cell.data, cell.checkpoints)
    data = get_data(cell.data, cell.train.group)
    test = data.test
    res = CellResult()
    res.add("accuracy", evaluate_accuracy(model, test), n=len(test))
    m = measure(model, test.images, labels=test.labels, transform=cell.train.group,
                metrics=OUTPUT_METRICS)
    add_sample_means(res, m, *OUTPUT_METRICS)
    idx = _si_subset(len(test), cell.n_si, seed=cell.data.data_seed + 17)
    si = measure(model, test.images[idx], labels=test.labels[idx], transform=cell.train.group,
                 metrics=["saliency_similarity"],
                 options={"n_si": None, "saliency_similarity": {"n_steps": cell.ig_steps}})
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
        extra["tune_cell"] = cell_id(cell.tune)
    if cell.figures:
        extra["figures"] = figure_data(model, test.images, test.labels, cell.train.group,
                                       cell.ig_steps)
    res.extra = extra
    return res


def tune_cell(p: GenuinePreset, dataset: str, group: str, checkpoints: str,
              regularizer: str = "logit_l2") -> TuneCell:
    """The ν-tuning cell of (dataset, group, regularizer) on the preset's first seed."""
    return TuneCell(p.data_config(dataset),
                    p.train_config("ir", group, p.seeds[0], regularizer=regularizer),
                    p.tune_target, p.tune_n_val_si, p.tune_nu_start, p.tune_max_trials,
                    p.tune_parallel, p.tune_tolerance, checkpoints)


def tune_cells(p: GenuinePreset, checkpoints: str) -> list[TuneCell]:
    if "ir" not in p.methods or p.nu is not None:
        return []
    return [tune_cell(p, d, g, checkpoints) for d in p.datasets for g in p.groups]


def genuine_cells(p: GenuinePreset, checkpoints: str) -> list[GenuineCell]:
    """Every (dataset, group, method, seed) cell; IR cells refer to their tuning cell."""
    tunes = {(c.data.dataset, c.train.group): c for c in tune_cells(p, checkpoints)}
    cells = []
    for d in p.datasets:
        for g in p.groups:
            for method in p.methods:
                for s in p.seeds:
                    nu = p.nu[d][g] if method == "ir" and p.nu is not None else 0.0
                    cells.append(GenuineCell(p.data_config(d), p.train_config(method, g, s, nu),
                                             p.n_si, p.ig_steps, s == p.seeds[0], checkpoints,
                                             tunes.get((d, g)) if method == "ir" else None))
    return cells


def check_sizes(p: GenuinePreset) -> None:
    """Fail once, before any cell runs, when a dataset has too few images for the preset's
    ``n_train + n_val`` (else every cell would fail with the same error)."""

    for d in p.datasets:
        _, y = drop_class(load_source(d), 9)
        split_sizes(len(y), p.n_train, p.n_val, p.n_test_max, what=d)


def run_genuine(preset: GenuinePreset, out: str | Path, checkpoints: str | Path | None = None,
                workers: int = 1, progress: bool = True, preset_name: str = "custom",
                executor: str | Executor | None = None) -> Path:
    """Run the study's cells into ``out`` (store ``out/store.sqlite``, resolved config);
    returns ``out``. The report is the next step (:func:`invlab.build_report`).

    ``executor``: ``serial``, ``process``, ``ray`` or an Executor; default from ``workers``
    (:func:`invlab.sweep.choose_executor`). Relative ``out``/``checkpoints`` are resolved
    where each cell runs, against the driver's working directory (``CellContext.cwd``)."""
    check_sizes(preset)
    ckpt = str(Path(checkpoints) if checkpoints else Path(out) / "checkpoints")
    config = {"preset": preset_name, **asdict(preset), "checkpoints": ckpt, "workers": workers,
              "data": {d: source_fingerprint(d) for d in preset.datasets}}
    with open_study(out, STUDY, config) as (out, store):
        executor = choose_executor(executor, workers)
        t0 = time.perf_counter()
        tcells = tune_cells(preset, ckpt)
        cells = genuine_cells(preset, ckpt)
        log.info("%d nu searches and %d cells (WT, DA, IR with the tuned nu) on one pool",
                 len(tcells), len(cells))
        # IR cells start once their nu is known; WT (longest) then DA fill the cores meanwhile
        order = {"ir": 1, "wt": 2, "da": 3}
        jobs = [DynamicCell(c, run_genuine_cell, STUDY, order.get(c.train.method, 2))
                for c in cells]
        tune_all(tcells, store, STUDY, executor=executor, workers=workers,
                 progress=progress, root=out, cells=jobs)
        log.info("study finished in %.1f min", (time.perf_counter() - t0) / 60)
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
    check_sizes(p)
    tune_all(tune_cells(p, checkpoints), store, STUDY + "-tune",
             executor=choose_executor(executor, workers), workers=workers,
             progress=progress, root=out)
    return genuine_cells(p, checkpoints)


def preset(name: str, **overrides: Any) -> GenuinePreset:
    """``quick`` or ``full`` from ``genuine.yaml``, with overrides (e.g. ``datasets=...``)."""
    return load_preset(GenuinePreset, "genuine", name, overrides)


__all__ = ["GenuinePreset", "GenuineCell", "TuneCell", "run_genuine", "preset",
           "run_genuine_cell", "run_tune_cell", "tune_cell", "replace"]
