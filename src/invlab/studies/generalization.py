"""Invariance ↔ generalization across a model zoo and shifted test sets (Deng et al. 2022).

Stages (each resumable through the results store):

1. ``generalization-zoo``: train the zoo and the reference panel (stacks of same-shape
   models, :mod:`invlab.zoo`) into the checkpoint cache; ``zoo.csv`` lists every member;
2. test sets (parent process, cached as ``.npz``): the ID split, ``digits`` in MNIST format,
   the synthetic shifts of :mod:`invlab.data.shifts`, ``natadv`` (ID test images the reference
   panel misclassifies), plus ``--test-set NAME=PATH`` sets;
3. ``generalization``: one cell per model measuring every test set
   (:func:`invlab.studies.generalization_measures.measure_model`);
4. report (:mod:`invlab.report.generalization`): statistics, estimation, selection, figures.

With ``models_file`` (``--models FILE.py``: ``models()`` yields ``(name, nn.Module,
normalization)``) the user's models replace the zoo. Cell identities hold fingerprints of
data, test sets and model files, never paths.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from invlab.data import load_images, shifts
from invlab.data.shifts import cache_path, cached, fingerprint, load_cached
from invlab.data.sources import cache_dir
from invlab.errors import UserCodeError, UserCodeTypeError, check_writable, user_code_error
from invlab.studies.common import open_study
from invlab.studies.generalization_measures import measure_model, pixel_transform
from invlab.sweep import (
    CellContext,
    CellResult,
    ConfigError,
    atomic_write_json,
    cell_id,
    check,
    choose_executor,
    from_dict,
    run_study,
)
from invlab.zoo import ZooModel, expand_zoo, load_zoo_checkpoint, train_zoo, write_zoo_table, zoo_data

log = logging.getLogger("invlab.studies")
STUDY = "generalization"
BUILTIN_SETS = ("id", "digits", "blur", "sketch", "thick", "thin", "natadv", "noise", "contrast")


@dataclass(frozen=True)
class GeneralizationPreset:
    """Everything but the zoo grids (``zoo``/``reference`` keys of the YAML preset)."""

    n_pool: int = 10_000
    data_seed: int = 0
    test_sets: tuple[str, ...] = BUILTIN_SETS
    n_eval: int = 2000
    shift_seed: int = 0
    natadv_rule: str = "any"
    transforms: tuple[str, ...] = ()
    n_boot: int = 1000
    boot_seed: int = 0
    stacked: bool = True
    stack_archs: tuple[str, ...] = ("mlp", "vit_tiny")
    """Architectures trained stacked (``benchmarks/bench_zoo.py``: CNNs under ``vmap`` become
    grouped convolutions, which are not faster on CPU)."""
    max_stack: int = 16
    threads: int = 1
    """Intra-op threads of every cell (part of each cell's identity, whatever ``--workers``)."""

    def __post_init__(self) -> None:
        for s in self.test_sets:
            check("test_sets", s in BUILTIN_SETS, f"unknown built-in test set {s!r}; valid: "
                  + ", ".join(BUILTIN_SETS))
        check("natadv_rule", self.natadv_rule in ("any", "majority"),
              f"expected any or majority, found {self.natadv_rule!r}")
        check("n_eval", self.n_eval >= 10, f"must be >= 10, found {self.n_eval}")
        for spec in self.transforms:  # a misspelled spec fails here, not after training
            try:
                pixel_transform(spec)
            except ValueError as e:
                check("transforms", False, str(e))


@dataclass(frozen=True)
class Preset:
    settings: GeneralizationPreset
    zoo: tuple[ZooModel, ...]
    reference: tuple[ZooModel, ...]


def preset(name: str, **overrides: Any) -> Preset:
    """Preset ``name`` of ``generalization.yaml`` (``quick``, ``full``) plus overrides."""
    doc = yaml.safe_load(resources.files("invlab.studies").joinpath(f"{STUDY}.yaml").read_text())
    if name not in doc:
        raise ConfigError("preset", f"unknown preset {name!r} for study {STUDY!r}; valid: "
                          + ", ".join(doc))
    values = dict(doc[name])
    zoo, ref = values.pop("zoo"), values.pop("reference")
    n_train = overrides.pop("n_train", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if n_train is not None:  # --n-train N: every zoo/reference n_train above N becomes N
        if not isinstance(n_train, int) or n_train < 1:
            raise ConfigError("n_train", f"--n-train must be a positive int, found {n_train!r}")
        cap = lambda grid: [{**g, "n_train": [min(int(n), n_train) for n in (  # noqa: E731
            g["n_train"] if isinstance(g["n_train"], list) else [g["n_train"]])]}
            if "n_train" in g else g for g in grid]
        zoo, ref = cap(zoo), cap(ref)
    return Preset(from_dict(GeneralizationPreset, values), tuple(expand_zoo(zoo)),
                  tuple(expand_zoo(ref)))


# ----------------------------------------------------------------------------- cells

def _nonid(default: Any = "") -> Any:
    return field(default=default, metadata={"cell_id": False}, compare=False)


@dataclass(frozen=True)
class StackCell:
    """Train one stack of same-shape zoo members (or load them from the cache)."""

    members: tuple[ZooModel, ...]
    n_pool: int
    data_seed: int
    data_fingerprint: str
    stacked: bool = True
    checkpoints: str = _nonid()
    threads: int = 1  # intra-op threads per cell: part of the identity (issue 9)

    def describe(self) -> str:
        return f"{len(self.members)}x {self.members[0].model_id}"


@dataclass(frozen=True)
class TestSetRef:
    name: str
    digest: str  #: cache file ``<name>-<digest>.npz`` (digest of its key incl. data fingerprint)


@dataclass(frozen=True)
class ZooMeasureCell:
    model: ZooModel
    data_fingerprint: str
    test_sets: tuple[TestSetRef, ...]
    transforms: tuple[str, ...]
    n_pool: int = 10_000
    data_seed: int = 0
    checkpoints: str = _nonid()
    sets_dir: str = _nonid()
    threads: int = 1  # intra-op threads per cell: part of the identity (issue 9)

    def describe(self) -> str:
        return self.model.model_id


@dataclass(frozen=True)
class ExternalMeasureCell:
    name: str
    file_fingerprint: str
    test_sets: tuple[TestSetRef, ...]
    transforms: tuple[str, ...]
    file: str = _nonid()
    sets_dir: str = _nonid()
    threads: int = 1  # intra-op threads per cell: part of the identity (issue 9)

    def describe(self) -> str:
        return self.name


def _threads(n: int) -> None:
    """The runner already sets ``n`` threads per cell; kept for direct calls of a cell."""
    torch.set_num_threads(n)


def run_stack_cell(cell: StackCell, ctx: CellContext) -> CellResult:
    _threads(cell.threads)
    data = zoo_data(cell.n_pool, cell.data_seed)
    if data.fingerprint != cell.data_fingerprint:
        raise RuntimeError(f"MNIST split fingerprint {data.fingerprint} differs from the study's "
                           f"{cell.data_fingerprint}: the data changed; use a new --out")
    rows = train_zoo(cell.members, data, cell.checkpoints, stacked=cell.stacked,
                     max_stack=len(cell.members))
    res = CellResult(extra={"members": [r["model_id"] for r in rows]})
    for r in rows:
        res.add(f"{r['model_id']}|id_accuracy", r["id_accuracy"])
    return res


def _load_sets(refs: tuple[TestSetRef, ...], sets_dir: str) -> Iterator[tuple[str, Any, Any]]:
    for ref in refs:
        x, y = load_cached(Path(sets_dir) / f"{ref.name}-{ref.digest}.npz")
        yield ref.name, x, y


def _measure_all(model: nn.Module, norm: Mapping[str, Any], refs: tuple[TestSetRef, ...],
                 sets_dir: str, transforms: tuple[str, ...], extra: dict[str, Any]) -> CellResult:
    res = CellResult(extra=extra)
    for name, x, y in _load_sets(refs, sets_dir):
        for k, v in measure_model(model, x, y, norm["mean"], norm["std"], transforms).items():
            res.add(f"{name}|{k}", v, n=len(y))
    return res


def run_zoo_measure_cell(cell: ZooMeasureCell, ctx: CellContext) -> CellResult:
    _threads(cell.threads)
    model, meta = load_zoo_checkpoint(cell.model, cell.data_fingerprint, cell.checkpoints,
                                      lambda: zoo_data(cell.n_pool, cell.data_seed))
    m = cell.model
    extra = {"model_id": m.model_id, "family": m.family, "arch": m.arch, "augment": m.augment,
             "n_train": m.n_train, "epochs": m.epochs, "seed": m.seed, "width": m.width,
             "depth": m.depth}
    return _measure_all(model, meta["normalization"], cell.test_sets, cell.sets_dir,
                        cell.transforms, extra)


def run_external_measure_cell(cell: ExternalMeasureCell, ctx: CellContext) -> CellResult:
    _threads(cell.threads)
    for name, model, norm in iter_user_models(cell.file):
        if name == cell.name:
            extra = {"model_id": name, "family": "external", "arch": type(model).__name__,
                     "augment": "unknown"}
            return _measure_all(model, norm, cell.test_sets, cell.sets_dir, cell.transforms,
                                extra)
    raise KeyError(f"{cell.file}: models() no longer yields a model named {cell.name!r}")


# ----------------------------------------------------------------------- user models

def _stats(v: Any) -> list[float] | None:
    """A normalization's per-channel mean or std as finite floats; None if it is not one."""
    try:
        vals = [float(x) for x in v]
    except (TypeError, ValueError):
        return None
    return vals if vals and all(math.isfinite(x) for x in vals) else None


def file_fingerprint(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def iter_user_models(path: str | Path) -> Iterator[tuple[str, nn.Module, dict[str, list[float]]]]:
    """Import ``path`` and yield its ``models()`` items, validated.

    Each item must be ``(name: str, model: nn.Module, {"mean": [...], "std": [...]})`` with
    one mean/std per input channel (std > 0).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--models {p}: no such file (expected a .py defining models())")
    spec = importlib.util.spec_from_file_location(f"invlab_user_models_{file_fingerprint(p)}", p)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"--models {p}: not a Python file (expected a .py defining models())")
    mod = importlib.util.module_from_spec(spec)
    try:  # the user's code: whatever it raises (or sys.exit) is one line naming the file
        spec.loader.exec_module(mod)
    except (Exception, SystemExit) as e:
        raise user_code_error(f"--models {p}", "importing the file", e) from e
    if not callable(getattr(mod, "models", None)):
        raise UserCodeTypeError(f"--models {p}: the file must define a function models() "
                                "yielding (name, torch.nn.Module, {'mean': [...], 'std': [...]})")
    try:
        found = mod.models()
    except (Exception, SystemExit) as e:
        raise user_code_error(f"--models {p}", "models()", e) from e
    try:
        items = iter(found)
    except TypeError as e:
        raise UserCodeTypeError(f"--models {p}: models() must return or yield (name, module, "
                                f"normalization) triples, returned {type(found).__name__} "
                                f"{found!r:.60}") from e
    except (Exception, SystemExit) as e:  # a user-defined __iter__ that raises
        raise user_code_error(f"--models {p}", "iterating over models()", e) from e
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except (Exception, SystemExit) as e:
            raise user_code_error(f"--models {p}", "models()", e) from e
        if not (isinstance(item, tuple) and len(item) == 3):
            raise UserCodeTypeError(f"--models {p}: models() must yield (name, module, "
                                    f"normalization) triples, got {type(item).__name__}")
        name, model, norm = item
        if not isinstance(name, str) or not isinstance(model, nn.Module):
            raise UserCodeTypeError(f"--models {p}: expected (str, nn.Module, dict), got "
                                    f"({type(name).__name__}, {type(model).__name__}, ...)")
        mean = _stats(norm.get("mean")) if isinstance(norm, Mapping) else None
        std = _stats(norm.get("std")) if isinstance(norm, Mapping) else None
        if mean is None or std is None or len(mean) != len(std) or min(std) <= 0:
            raise UserCodeError(f"--models {p}: model {name!r}: normalization must be "
                                "{'mean': [per channel], 'std': [per channel, > 0]}, got "
                                + repr(norm)[:200])
        yield name, model, {"mean": mean, "std": std}


# ------------------------------------------------------------------------- test sets

def _subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(y) <= n:
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def _reference_predictions(ref: tuple[ZooModel, ...], data: Any, checkpoints: str) -> torch.Tensor:
    preds = []
    for m in ref:
        model, _ = load_zoo_checkpoint(m, data.fingerprint, checkpoints, lambda: data)
        with torch.inference_mode():
            preds.append(model(data.normalize(data.test_x)).argmax(1))
    return torch.stack(preds)


def builtin_test_sets(p: Preset, data: Any, checkpoints: str, sets_dir: str) -> list[TestSetRef]:
    """Build (or find cached) every built-in test set of the preset; return their refs."""

    s = p.settings
    base = {"data": data.fingerprint, "n_eval": s.n_eval, "seed": s.shift_seed}
    idx, idy = _subset(data.test_x, data.test_y, s.n_eval, s.shift_seed)
    refs = []
    for name in s.test_sets:
        if name == "id":
            key, build = base, (lambda: (idx, idy))
        elif name == "digits":
            key = {"n_eval": s.n_eval, "seed": s.shift_seed, "box": 20}
            build = lambda: _subset(*shifts.digits_mnist_format(), s.n_eval, s.shift_seed)  # noqa: E731
        elif name == "natadv":
            key = {**base, "rule": s.natadv_rule,
                   "reference": [m.model_id for m in p.reference]}

            def build() -> tuple[torch.Tensor, torch.Tensor]:
                pr = _reference_predictions(p.reference, data, checkpoints)
                x, y, _ = shifts.natural_adversarial(data.test_x, data.test_y, pr, s.natadv_rule)
                return _subset(x, y, s.n_eval, s.shift_seed)
        else:
            key = {**base, "params": shifts.DEFAULT_PARAMS[name]}
            build = lambda name=name: (shifts.make_shift(name, idx, s.shift_seed), idy)  # noqa: E731
        x, y = shifts.cached(name, key, build, root=sets_dir)
        log.info("test set %s: %d images", name, len(y))
        refs.append(TestSetRef(name, shifts.cache_path(name, key, sets_dir).stem.split("-")[-1]))
    return refs


def check_test_sets(items: Mapping[str, str] | Iterable[tuple[str, str]],
                    builtin: Iterable[str] = BUILTIN_SETS) -> dict[str, str]:
    """``--test-set`` ``(name, path)`` pairs as a dict, after checking every name: not one of
    the ``builtin`` sets the study also measures (none with ``--models`` and test sets of
    your own), no ``|``, ``=``, ``/``, ``\\`` or whitespace (names key results and cache
    files), not empty, not given twice.

    Raises:
        ConfigError: the first bad name, saying why and how to fix it.
    """

    out: dict[str, str] = {}
    builtin = tuple(builtin)
    for name, path in (items.items() if isinstance(items, Mapping) else items):
        if name in builtin:
            why = ("is a built-in test set; choose another name (built-ins: "
                   + ", ".join(builtin) + ")")
        elif not name or any(c in name for c in "|=/\\") or any(c.isspace() for c in name):
            why = "must be non-empty without '|', '=', '/', '\\' or whitespace, e.g. my_set"
        elif name in out:
            why = f"is given twice ({out[name]} and {path}); give each test set its own name"
        else:
            out[name] = str(path)
            continue
        raise ConfigError("--test-set", f"name {name!r} {why}")
    return out


def external_test_sets(specs: Mapping[str, str], sets_dir: str, n_eval: int, seed: int,
                       in_shape: tuple[int, ...] | None, num_classes: int | None,
                       preprocess: str | None = None) -> list[TestSetRef]:
    """``--test-set NAME=PATH`` sets read with :func:`invlab.data.load_images`, cached by
    content fingerprint (the path is not part of any identity). Only the ``n_eval`` images
    of the seeded subset are decoded; ``preprocess`` (e.g. ``"resize=36,crop=32"``) applies
    to every set."""

    refs = []
    for name, path in specs.items():
        ds = load_images(path, num_classes=num_classes, in_shape=in_shape,
                         preprocess=preprocess, subset=n_eval, seed=seed)
        x, y = _subset(ds.images, ds.labels, n_eval, seed)  # already subset: a no-op
        key = {"fingerprint": fingerprint(x, y)}
        cached(name, key, lambda x=x, y=y: (x, y), root=sets_dir)
        refs.append(TestSetRef(name, cache_path(name, key, sets_dir).stem.split("-")[-1]))
    return refs


# ----------------------------------------------------------------------------- run

def _stacks(models: list[ZooModel], s: GeneralizationPreset) -> list[tuple[ZooModel, ...]]:
    groups: dict[tuple[Any, ...], list[ZooModel]] = {}
    for m in models:
        groups.setdefault(m.stack_key(), []).append(m)
    out = []
    for g in groups.values():
        size = s.max_stack if s.stacked and g[0].arch in s.stack_archs else 1
        out += [tuple(g[i:i + size]) for i in range(0, len(g), size)]
    return out


def _train_stage(models: list[ZooModel], p: Preset, data: Any, store: Any, out: Path,
                 checkpoints: str, workers: int, progress: bool, executor: Any) -> None:
    s = p.settings
    threads = s.threads
    cells = [StackCell(st, s.n_pool, s.data_seed, data.fingerprint, s.stacked, checkpoints,
                       threads) for st in _stacks(models, s)]
    log.info("generalization: training %d models in %d stacks", len(models), len(cells))
    run_study(cells, run_stack_cell, store, f"{STUDY}-zoo",
              executor=executor, workers=workers,
              progress=progress, root=out)


def _user_model_names(models_file: str) -> list[str]:
    """The names of the models ``models_file`` yields (unique, at least one): a broken file
    fails here, before the reference panel trains."""
    names = [n for n, _, _ in iter_user_models(models_file)]
    if not names:
        raise UserCodeError(f"--models {models_file}: models() yielded no models")
    if len(set(names)) != len(names):
        raise ValueError(f"--models {models_file}: model names must be unique, got {names}")
    return names


def _check_pool(p: Preset, zoo: list[ZooModel]) -> None:
    """Every zoo and reference model trains on at most ``n_pool`` images (else fail before
    any training, not cell by cell)."""
    too_big = sorted({m.n_train for m in zoo + list(p.reference) if m.n_train > p.settings.n_pool})
    if too_big:
        raise ValueError(
            f"zoo or reference models train on n_train = {', '.join(map(str, too_big))} images, more "
            f"than the training pool n_pool = {p.settings.n_pool}; use a larger pool (it needs "
            "more MNIST: `invlab data fetch mnist` or the IDX files in $INVLAB_DATA/mnist)"
            " or a zoo whose n_train fits")


def _builtin_stage(p: Preset, own_models: bool, store: Any, out: Path, checkpoints: str,
                   sets_dir: str, workers: int, progress: bool, executor: Any
                   ) -> tuple[Any, list[TestSetRef]]:
    """Train the zoo (none with your own models) and the reference panel, write ``zoo.csv``,
    and build the built-in test sets; returns ``(zoo data, built-in test-set refs)``."""
    s = p.settings
    data = zoo_data(s.n_pool, s.data_seed)
    zoo = [] if own_models else list(p.zoo)
    _check_pool(p, zoo)
    _train_stage(zoo + list(p.reference), p, data, store, out, checkpoints, workers,
                 progress, executor)
    if zoo:
        write_zoo_table(train_zoo(zoo, data, checkpoints), out / "zoo.csv")
    return data, builtin_test_sets(p, data, checkpoints, sets_dir)


def _measure_cells(p: Preset, refs: list[TestSetRef], data: Any, models_file: str | None,
                   names: list[str], checkpoints: str, sets_dir: str) -> tuple[list[Any], Any]:
    """The measuring cells (one per zoo model, or per model of ``models_file``) and their
    cell function."""
    s = p.settings
    if models_file is None:
        return ([ZooMeasureCell(m, data.fingerprint, tuple(refs), s.transforms, s.n_pool,
                                s.data_seed, checkpoints, sets_dir, s.threads) for m in p.zoo],
                run_zoo_measure_cell)
    fp = file_fingerprint(models_file)
    return ([ExternalMeasureCell(n, fp, tuple(refs), s.transforms,
                                 str(Path(models_file).resolve()), sets_dir, s.threads)
             for n in names], run_external_measure_cell)


def run_generalization(p: Preset, out: str | Path, checkpoints: str, workers: int = 1,
                       progress: bool = True, preset_name: str = "custom",
                       test_sets: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                       models_file: str | None = None,
                       executor: Any = None, preprocess: str | None = None) -> Path:
    """Run the study's cells into ``out`` (resumable); returns ``out``. The report is the
    next step (:func:`invlab.build_report`).

    Args:
        p: preset (:func:`preset`).
        out: output folder (store, resolved config, ``zoo.csv``, ``current_cells.json``: the
            cells and test sets of this run, which the report reads).
        checkpoints: checkpoint cache root (zoo checkpoints under ``<checkpoints>/zoo/``).
        workers: process-pool size.
        test_sets: extra ``{name: path}`` test sets (``.npz`` or image folders), or
            ``(name, path)`` pairs; names are checked by :func:`check_test_sets`.
        models_file: a ``.py`` whose ``models()`` yields the models to study instead of the zoo.
        preprocess: spec applied to the ``test_sets`` (e.g. ``"resize=36,crop=32"``).
    """
    s = p.settings
    executor = choose_executor(executor, workers)
    test_sets = check_test_sets(test_sets or {}, BUILTIN_SETS if models_file is None else ())
    sets_dir = str(check_writable(cache_dir() / "generalization", "$INVLAB_CACHE"))
    cfg = {"preset": preset_name, **asdict(s), "zoo": [asdict(m) for m in p.zoo],
           "reference": [asdict(m) for m in p.reference], "checkpoints": checkpoints,
           "external_test_sets": test_sets, "models_file": models_file,
           **({"preprocess": preprocess} if preprocess else {})}
    with open_study(out, STUDY, cfg) as (out, store):
        t0 = time.perf_counter()
        # read and check the external sets before any training (shape/classes of the zoo)
        shape, classes = ((1, 28, 28), 10) if models_file is None else (None, None)
        ext_refs = external_test_sets(test_sets, sets_dir, s.n_eval, s.shift_seed, shape, classes,
                                      preprocess)
        names = [] if models_file is None else _user_model_names(models_file)
        data, refs = None, []
        if models_file is None or not test_sets:
            data, refs = _builtin_stage(p, models_file is not None, store, out, checkpoints,
                                        sets_dir, workers, progress, executor)
        refs += ext_refs
        cells, fn = _measure_cells(p, refs, data, models_file, names, checkpoints, sets_dir)
        log.info("generalization: %d models x %d test sets", len(cells), len(refs))
        atomic_write_json(out / "current_cells.json", {"cells": [cell_id(c) for c in cells],
                                                       "test_sets": [r.name for r in refs]})
        run_study(cells, fn, store, STUDY, executor=executor,
                  workers=workers, progress=progress, root=out)
        log.info("generalization finished in %.1f min", (time.perf_counter() - t0) / 60)
    return out
