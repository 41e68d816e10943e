"""Tuning IR's weight ν in the studies: every trial is a cell, the search is :func:`search_nu`.

The genuine, spectral and drift studies all tune ν with :func:`tune_all`:

- a :class:`TuneCell` (dataset, group, regularizer, search settings) is the *answer* cell:
  its ``nu`` row is the chosen ν, its ``extra["trials"]`` every trial (ν, validation SI,
  validation accuracy, stage) for the SI(ν) / accuracy(ν) figure;
- each trial is a :class:`TrialCell` (study ``<study>-nu-trials``): it trains (or loads from
  the shared checkpoint cache) the IR model with that ν and stores ``nu``, ``val_si`` (mean
  SI on the first ``n_val_si`` validation images) and ``val_accuracy``, with the stage
  (``bracket``/``refine``) in its extra. One store row set per trial.

:func:`tune_all` runs the searches of all tuning cells in lock-step: each round collects the
next ``parallel`` trials of every unfinished search and runs them as one batch of cells on
the executor (so both cores are busy). The ν sequence of a search depends only on its
settings (``parallel`` is a preset field, not ``--workers``) and on the trial results, which
are deterministic, so the chosen ν is the same for any executor or worker count. A killed
tuning resumes: finished trials are done cells (and cached checkpoints) and are not re-run.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from invlab.data import DataConfig
from invlab.studies.common import NOT_IN_ID, get_data, model_label, trained_model
from invlab.sweep import CellContext, CellResult, ResultsStore, StudyError, run_study
from invlab.sweep.runner import StudySummary
from invlab.train import TrainConfig, evaluate_accuracy
from invlab.train.nu_search import NuSearchResult, search_nu
from invlab.train.tune import validation_si

NU_MIN, NU_MAX = 1e-2, 1e3


def _stage(nu: float) -> str:
    """``bracket`` for half-decade grid points (10^(k/2)), else ``refine``."""
    k = 2 * math.log10(nu)
    return "bracket" if abs(k - round(k)) < 1e-9 else "refine"


@dataclass(frozen=True)
class TrialCell:
    """One ν trial: train IR with ``train.nu`` and validate it (SI on ``n_val_si`` images)."""

    data: DataConfig
    train: TrainConfig
    n_val_si: int
    checkpoints: str = field(metadata=NOT_IN_ID)

    @property
    def threads(self) -> int:
        return self.train.threads

    def describe(self) -> str:
        return f"nu trial {model_label(self.data, self.train)} nu={self.train.nu:.4g}"


def run_trial_cell(cell: TrialCell, ctx: CellContext | None = None) -> CellResult:
    model, _, reused = trained_model(cell.train, cell.data, cell.checkpoints)
    data = get_data(cell.data, cell.train.group)
    si = validation_si(model, data, cell.train.group, cell.n_val_si)
    acc = evaluate_accuracy(model, data.val)
    res = CellResult(extra={"stage": _stage(cell.train.nu), "checkpoint_reused": reused})
    res.add("nu", cell.train.nu).add("val_si", si, n=min(cell.n_val_si, len(data.val)))
    res.add("val_accuracy", acc, n=len(data.val))
    return res


@dataclass(frozen=True)
class TuneCell:
    """ν search for IR on one (dataset, group, regularizer); its ``nu`` row is the answer.

    ``train`` is the IR config of the tuned seed with a placeholder ``nu``; the search
    (:func:`invlab.train.nu_search.search_nu`) starts at ``nu_start``, evaluates
    ``parallel`` trials per round and stops when the bracket is within ``tolerance``.
    """

    data: DataConfig
    train: TrainConfig
    target: float
    n_val_si: int
    nu_start: float
    max_trials: int
    parallel: int
    tolerance: float
    checkpoints: str = field(metadata=NOT_IN_ID)

    @property
    def threads(self) -> int:
        return self.train.threads

    def describe(self) -> str:
        return f"tune nu {model_label(self.data, self.train)}"

    def trial(self, nu: float) -> TrialCell:
        return TrialCell(self.data, replace(self.train, nu=float(nu)), self.n_val_si,
                         self.checkpoints)

    def search(self, evaluate: Any) -> NuSearchResult:
        return search_nu(evaluate, target=self.target, nu_start=self.nu_start, nu_min=NU_MIN,
                         nu_max=NU_MAX, tolerance=self.tolerance, parallel=self.parallel,
                         max_trials=self.max_trials)


def run_tune_cell(cell: TuneCell, ctx: CellContext) -> CellResult:
    """Replay the search on the recorded trials (computing any trial not in the store)."""

    def evaluate(nus: Sequence[float]) -> list[tuple[float, float]]:
        out = []
        for nu in nus:
            t = cell.trial(nu)
            try:
                out.append((ctx.value(t, "val_si"), ctx.value(t, "val_accuracy")))
            except LookupError:
                r = {row["metric"]: row["value"] for row in run_trial_cell(t).rows}
                out.append((r["val_si"], r["val_accuracy"]))
        return out

    s = cell.search(evaluate)
    trials = [{"nu": t.nu, "si": t.si, "accuracy": t.accuracy, "stage": t.stage}
              for t in s.trials]
    res = CellResult(extra={"trials": trials, "reached": s.reached, "bracket": list(s.bracket),
                            "chosen_nu": s.nu})
    res.add("nu", s.nu).add("val_si", s.si).add("val_accuracy", s.accuracy)
    res.add("reached", float(s.reached)).add("n_trials", float(len(s.trials)))
    return res


class _Rounds:
    """Lock-step coordinator: search threads post their next ν list and wait for results."""

    def __init__(self, n: int) -> None:
        self.cond = threading.Condition()
        self.alive = n
        self.pending: dict[int, list[float]] = {}
        self.results: dict[int, Any] = {}

    def evaluate(self, i: int, nus: Sequence[float]) -> list[tuple[float, float]]:
        with self.cond:
            self.pending[i] = list(nus)
            self.cond.notify_all()
            self.cond.wait_for(lambda: i in self.results)
            r = self.results.pop(i)
        if isinstance(r, BaseException):
            raise r
        return r

    def done(self) -> None:
        with self.cond:
            self.alive -= 1
            self.cond.notify_all()

    def next_batch(self) -> dict[int, list[float]] | None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.pending) >= self.alive)
            if not self.pending:
                return None
            batch, self.pending = self.pending, {}
            return batch

    def answer(self, results: dict[int, Any]) -> None:
        with self.cond:
            self.results.update(results)
            self.cond.notify_all()


def tune_all(tcells: Sequence[TuneCell], store: ResultsStore, study: str, executor: str = "serial",
             workers: int = 1, progress: bool = True, root: str | Path | None = None
             ) -> StudySummary | None:
    """Run every tuning cell's search (trials as cells of ``<study>-nu-trials``, in lock-step
    rounds), then the tuning cells themselves (study ``study``). Raises one ``StudyError``
    naming every failed trial or tuning cell after all searches that can finish did."""
    if not tcells:
        return None
    rounds = _Rounds(len(tcells))
    threads = []
    for i, tc in enumerate(tcells):
        def body(i: int = i, tc: TuneCell = tc) -> None:
            try:
                tc.search(lambda nus: rounds.evaluate(i, nus))
            except BaseException:  # noqa: BLE001 - reported through the trial's StudyError
                pass
            finally:
                rounds.done()
        threads.append(threading.Thread(target=body, daemon=True, name=f"nu-search-{i}"))
    for t in threads:
        t.start()
    failures: dict[str, str] = {}
    labels: dict[str, str] = {}
    failed_searches: set[int] = set()
    while (batch := rounds.next_batch()) is not None:
        cells = {i: [tcells[i].trial(nu) for nu in nus] for i, nus in batch.items()}
        flat = [c for cs in cells.values() for c in cs]
        try:
            run_study(flat, run_trial_cell, store, f"{study}-nu-trials", executor=executor,
                      workers=max(1, min(workers, len(flat))), progress=progress, root=root)
            err: StudyError | None = None
        except StudyError as e:
            err = e
            failures.update(e.failures)
            labels.update(e.labels)
        answers: dict[int, Any] = {}
        for i, cs in cells.items():
            try:
                answers[i] = [(_value(store, c, "val_si"), _value(store, c, "val_accuracy"))
                              for c in cs]
            except LookupError as e:
                failed_searches.add(i)
                answers[i] = RuntimeError(f"nu trial failed: {e}" if err is None else str(err))
        rounds.answer(answers)
    for t in threads:
        t.join()
    ok = [tc for i, tc in enumerate(tcells) if i not in failed_searches]
    summary = None
    if ok:
        try:
            summary = run_study(ok, run_tune_cell, store, study, executor="serial", workers=1,
                                progress=False, root=root)
        except StudyError as e:
            failures.update(e.failures)
            labels.update(e.labels)
            summary = e.summary
    if failures:
        n = len(tcells)
        raise StudyError(f"{study}-nu-trials", failures,
                         summary or StudySummary(study, n, 0, 0, tuple(failures), 0.0), labels)
    return summary


def _value(store: ResultsStore, cell: TrialCell, metric: str) -> float:
    from invlab.sweep import cell_id

    v = store.value(cell_id(cell), metric)
    if v is None:
        raise LookupError(f"{cell.describe()} has no {metric!r}")
    return v


__all__ = ["TrialCell", "TuneCell", "run_trial_cell", "run_tune_cell", "tune_all"]
