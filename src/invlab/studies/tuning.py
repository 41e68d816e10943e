"""Tuning IR's weight ν in the studies: every trial is a cell, the search is :func:`search_nu`.

The genuine, spectral and drift studies all tune ν with :func:`tune_all`:

- a :class:`TuneCell` (dataset, group, regularizer, search settings) is the *answer* cell:
  its ``nu`` row is the chosen ν, its ``extra["trials"]`` every trial (ν, validation SI,
  validation accuracy, stage) for the SI(ν) / accuracy(ν) figure;
- each trial is a :class:`TrialCell` (study ``<study>-nu-trials``): it trains (or loads from
  the shared checkpoint cache) the IR model with that ν and stores ``nu``, ``val_si`` (mean
  SI on the first ``n_val_si`` validation images) and ``val_accuracy``, with the stage
  (``bracket``/``refine``) in its extra. One store row set per trial.

:func:`tune_all` runs the searches of all tuning cells, and the study cells that wait for
their answers, on one executor pool (:class:`TuningScheduler` with
:func:`invlab.sweep.run_dynamic`): a search's next trial starts as soon as a core is free,
and cells that need no ν (DA, WT) fill the cores while searches wait, so no stage waits for
the slowest trial of another. The ν sequence of a search depends only on its settings
(``parallel`` is a preset field, not ``--workers``) and on the trial results, which are
deterministic, so the chosen ν is the same for any executor or worker count. A killed run
resumes: finished trials are done cells (and cached checkpoints) and are not re-run.
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
from invlab.sweep import CellContext, CellResult, ResultsStore, cell_id, run_dynamic
from invlab.sweep.dynamic import DynamicCell
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


class _Searches:
    """One thread per search, each blocked in its ``evaluate`` until its trials are answered.

    A search's state is ``running`` (computing its next ν), ``waiting`` (posted ν values in
    :attr:`requests`), ``done`` or ``failed``. :meth:`settle` waits until none is running, so
    the scheduler always sees every search's next request: the searches' decisions depend on
    the trial results only, never on timing."""

    def __init__(self, tcells: Sequence[TuneCell]) -> None:
        self.cond = threading.Condition()
        self.state = ["running"] * len(tcells)
        self.requests: dict[int, list[float]] = {}
        self.answers: dict[int, Any] = {}
        for i, tc in enumerate(tcells):
            threading.Thread(target=self._body, args=(i, tc), daemon=True,
                             name=f"nu-search-{i}").start()

    def _body(self, i: int, tc: TuneCell) -> None:
        state = "failed"
        try:
            tc.search(lambda nus: self._evaluate(i, nus))
            state = "done"
        except BaseException:  # noqa: BLE001 - reported by the trial or the tuning cell
            pass
        finally:
            with self.cond:
                self.state[i] = state
                self.cond.notify_all()

    def _evaluate(self, i: int, nus: Sequence[float]) -> list[tuple[float, float]]:
        with self.cond:
            self.requests[i] = list(nus)
            self.state[i] = "waiting"
            self.cond.notify_all()
            self.cond.wait_for(lambda: i in self.answers)
            r = self.answers.pop(i)
        if isinstance(r, BaseException):
            raise r
        return r

    def answer(self, i: int, result: Any) -> None:
        with self.cond:
            self.answers[i] = result
            self.state[i] = "running"
            self.cond.notify_all()

    def cancel(self) -> None:
        """End every waiting search (its ``evaluate`` raises), so no thread stays blocked
        after the run stopped early (an error, Ctrl-C)."""
        with self.cond:
            for i, state in enumerate(self.state):
                if state == "waiting" and i not in self.answers:
                    self.answers[i] = RuntimeError("the tuning run stopped")
                    self.state[i] = "running"
            self.cond.notify_all()

    def settle(self) -> tuple[dict[int, list[float]], list[str]]:
        """Wait until no search is running; return (new requests, every search's state)."""
        with self.cond:
            self.cond.wait_for(lambda: "running" not in self.state)
            requests, self.requests = self.requests, {}
            return requests, list(self.state)


class TuningScheduler:
    """The ν searches of ``tcells`` and the ``cells`` that use their answers, as one
    :class:`invlab.sweep.Scheduler` for :func:`invlab.sweep.run_dynamic`.

    Each search asks for ``parallel`` trials at a time (study ``<study>-nu-trials``,
    priority 0: a waiting search is never starved by other work); when a search ends and
    none of its trials failed, its :class:`TuneCell` runs (study ``study``, priority -1);
    when that is stored, every cell of ``cells`` whose ``cfg.tune`` is that tuning cell
    becomes ready. Cells with no ``tune`` (e.g. DA, WT) are ready from the start and fill
    the cores while searches wait for their trials.
    """

    def __init__(self, tcells: Sequence[TuneCell], store: ResultsStore, study: str,
                 cells: Sequence[DynamicCell] = ()) -> None:
        self.tcells = list(tcells)
        self.store = store
        self.study = study
        self._cid = cell_id
        self._index = {cell_id(tc): i for i, tc in enumerate(self.tcells)}
        self._after: dict[int, list[DynamicCell]] = {}
        self._out: list[DynamicCell] = []
        for dc in cells:
            tune = getattr(dc.cfg, "tune", None)
            if tune is None:
                self._out.append(dc)
            else:
                i = self._index.get(cell_id(tune))
                if i is None:
                    raise ValueError(f"{dc.cfg.describe()}: its tuning cell is not among the "
                                     "searches of this run")
                self._after.setdefault(i, []).append(dc)
        self._waiting: dict[int, list[TrialCell]] = {}  # search -> trials of its request
        self._left: dict[int, set[str]] = {}  # search -> trial ids not finished yet
        self._failed: set[int] = set()  # searches with a failed trial
        self._ended: set[int] = set()  # searches whose end was handled
        self._searches = _Searches(self.tcells)

    def ready(self) -> list[DynamicCell]:
        requests, states = self._searches.settle()
        for i, nus in requests.items():
            trials = [self.tcells[i].trial(nu) for nu in nus]
            self._waiting[i] = trials
            self._left[i] = {self._cid(t) for t in trials}
            trial_study = f"{self.study}-nu-trials"
            self._out.extend(DynamicCell(t, run_trial_cell, trial_study, 0) for t in trials)
        for i, state in enumerate(states):
            if state in ("done", "failed") and i not in self._ended:
                self._ended.add(i)
                if i not in self._failed:  # a search error proper is the tuning cell's
                    self._out.append(DynamicCell(self.tcells[i], run_tune_cell, self.study, -1))
        out, self._out = self._out, []
        return out

    def finished(self, cell: DynamicCell, ok: bool) -> None:
        cfg = cell.cfg
        if isinstance(cfg, TuneCell):
            if ok:
                self._out.extend(self._after.pop(self._index[self._cid(cfg)], []))
            return
        if not isinstance(cfg, TrialCell):
            return
        cid = self._cid(cfg)
        for i, left in list(self._left.items()):
            if cid not in left:
                continue
            left.discard(cid)
            if not ok:
                self._failed.add(i)
            if not left:
                del self._left[i]
                trials = self._waiting.pop(i)
                if i in self._failed:
                    self._searches.answer(i, RuntimeError("a nu trial failed"))
                else:
                    self._searches.answer(i, [(_value(self.store, t, "val_si"),
                                               _value(self.store, t, "val_accuracy"))
                                              for t in trials])

    def close(self) -> None:
        """Release the search threads of a run that stopped early (no-op after a full run)."""
        self._searches.cancel()

    def done(self) -> bool:
        _, states = self._searches.settle()
        return not self._out and not self._left and all(
            s in ("done", "failed") for s in states) and len(self._ended) == len(states)


def tune_all(tcells: Sequence[TuneCell], store: ResultsStore, study: str, executor: str = "serial",
             workers: int = 1, progress: bool = True, root: str | Path | None = None,
             cells: Sequence[DynamicCell] = ()) -> StudySummary | None:
    """Run every tuning cell's search (trials as cells of ``<study>-nu-trials``), the tuning
    cells themselves (study ``study``) and ``cells`` (each once its ``cfg.tune`` is done),
    all on one pool (:class:`TuningScheduler`, :func:`invlab.sweep.run_dynamic`). Raises one
    ``StudyError`` naming every failed cell after everything that could run did."""

    if not tcells and not cells:
        return None
    scheduler = TuningScheduler(tcells, store, study, cells)
    try:
        return run_dynamic(scheduler, store, executor=executor, workers=workers,
                           progress=progress, root=root, label=study)
    finally:
        scheduler.close()


def _value(store: ResultsStore, cell: TrialCell, metric: str) -> float:
    v = store.value(cell_id(cell), metric)
    if v is None:
        raise LookupError(f"{cell.describe()} has no {metric!r}")
    return v


__all__ = ["TrialCell", "TuneCell", "TuningScheduler", "run_trial_cell", "run_tune_cell",
           "tune_all"]
