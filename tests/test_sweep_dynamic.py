"""run_dynamic: cells that appear as results arrive, on one pool; the WAIT protocol;
TuningScheduler: searches and the cells that wait for their ν."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import _sweep_worker_script as W
from invlab.studies import genuine, tuning
from invlab.sweep import (
    WAIT,
    CellContext,
    CellResult,
    DynamicCell,
    ProcessPoolExecutorBackend,
    ResultsStore,
    SerialExecutor,
    StudyError,
    cell_id,
    run_dynamic,
)


class Chain:
    """A toy scheduler: cell ``k + 1`` of each chain is ready once cell ``k`` finished (as a
    search's next trial), plus ``fillers`` ready from the start at a lower priority."""

    def __init__(self, chains: int, length: int, fillers: int) -> None:
        self.length = length
        self.out = [DynamicCell(W.KCell(i=100 * c, seed=c), W.cell_fn, "chain", 0)
                    for c in range(chains)]
        self.out += [DynamicCell(W.KCell(i=10_000 + f, seed=f), W.cell_fn, "fill", 5)
                     for f in range(fillers)]
        self.finished_order: list[int] = []
        self.open = chains + fillers

    def ready(self) -> list[DynamicCell]:
        out, self.out = self.out, []
        return out

    def finished(self, cell: DynamicCell, ok: bool) -> None:
        i = cell.cfg.i
        self.finished_order.append(i)
        self.open -= 1
        if i < 10_000 and i % 100 + 1 < self.length:
            self.out.append(DynamicCell(W.KCell(i=i + 1, seed=cell.cfg.seed), W.cell_fn,
                                        "chain", 0))
            self.open += 1

    def done(self) -> bool:
        return self.open == 0


def _rows(store: ResultsStore) -> dict[str, Any]:
    return {c["cell_id"]: (c["study"], c["extra"]) for c in store.cells()}


def test_run_dynamic_runs_every_cell_the_scheduler_makes(tmp_path: Path) -> None:
    rows = {}
    for ex in ("serial", "process"):
        sched = Chain(chains=2, length=4, fillers=3)
        with ResultsStore(tmp_path / f"{ex}.sqlite") as store:
            s = run_dynamic(sched, store, executor=ex, workers=2, progress=False,
                            root=tmp_path / ex)
            assert (s.total, s.ran, s.skipped) == (2 * 4 + 3, 11, 0)
            rows[ex] = _rows(store)
            cells = store.cells()
        # each chain's cells finish in order (cell k+1 only exists after k finished)
        for c in (0, 100):
            chain = [i for i in sched.finished_order if c <= i < c + 100]
            assert chain == [c, c + 1, c + 2, c + 3]
        if ex == "process":
            # never more than `workers` cells at once: count overlapping [start, finish)
            spans = [(datetime.fromisoformat(c["started_at"]),
                      datetime.fromisoformat(c["finished_at"])) for c in cells]
            for a, _ in spans:
                assert sum(s <= a < f for s, f in spans) <= 2
    assert rows["serial"] == rows["process"]  # same cells, same results, any executor


def test_run_dynamic_resumes_and_reports_done_cells_as_finished(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "s.sqlite") as store:
        run_dynamic(Chain(1, 3, 1), store, progress=False, root=tmp_path)
        again = Chain(1, 3, 1)
        s = run_dynamic(again, store, progress=False, root=tmp_path)
    assert (s.ran, s.skipped) == (0, 4)
    assert sorted(again.finished_order) == [0, 1, 2, 10_000]
    assert sum(W.calls_of(tmp_path, cell_id(W.KCell(i=i, seed=0))) for i in range(3)) == 3


def test_run_dynamic_failure_stops_only_what_depends_on_it(tmp_path: Path) -> None:
    class Failing(Chain):
        def __init__(self) -> None:
            super().__init__(chains=1, length=6, fillers=2)
            self.out = [DynamicCell(c.cfg, W.failing_cell_fn, c.study, c.priority)
                        for c in self.out]

        def finished(self, cell: DynamicCell, ok: bool) -> None:
            self.open -= 1
            self.finished_order.append(cell.cfg.i)
            if ok and cell.cfg.i < 10_000 and cell.cfg.i + 1 < self.length:
                self.out.append(DynamicCell(W.KCell(i=cell.cfg.i + 1), W.failing_cell_fn,
                                            "chain"))
                self.open += 1

    sched = Failing()
    with ResultsStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(StudyError, match="boom in cell 3") as e:
            run_dynamic(sched, store, progress=False, root=tmp_path)
        assert e.value.summary.ran == 3 + 2  # chain cells 0-2 and both fillers
        assert len(store.done_ids()) == 5


def test_a_stuck_scheduler_is_an_error_not_a_hang(tmp_path: Path) -> None:
    class Stuck:
        def ready(self) -> list[DynamicCell]:
            return []

        def finished(self, cell: DynamicCell, ok: bool) -> None: ...

        def done(self) -> bool:
            return False

    with ResultsStore(tmp_path / "s.sqlite") as store, pytest.raises(RuntimeError,
                                                                      match="not done"):
        run_dynamic(Stuck(), store, progress=False, root=tmp_path)


@pytest.mark.parametrize("make", [SerialExecutor, lambda: ProcessPoolExecutorBackend(1)])
def test_wait_with_nothing_in_flight_raises(make: Any) -> None:
    with pytest.raises(RuntimeError, match="WAIT with nothing in flight"):
        list(make().map_unordered(abs, iter([WAIT])))


# ------------------------------------------------------------------ TuningScheduler


def _si(nu: float) -> float:
    return 0.95 + 0.1 * math.tanh(math.log(nu / 7.0))  # crosses 0.95 at ν = 7


def _fake_trial(cell: tuning.TrialCell, ctx: Any = None) -> CellResult:
    nu = cell.train.nu
    if cell.train.group == "t3" and cell.train.seed == 99:
        raise FloatingPointError("non-finite loss")
    return (CellResult(extra={"stage": tuning._stage(nu)}).add("nu", nu)
            .add("val_si", _si(nu)).add("val_accuracy", 1 / (1 + nu)))


def _user_of_nu(cell: Any, ctx: CellContext) -> CellResult:
    """A study cell that needs the tuned ν (as IR cells do): reads it from the store."""
    return CellResult().add("nu_used", ctx.value(cell.tune, "nu"))


def test_tuning_scheduler_runs_cells_after_their_nu_and_others_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass

    monkeypatch.setattr(tuning, "run_trial_cell", _fake_trial)
    monkeypatch.setattr(genuine, "pin_source", lambda cfg: cfg)

    @dataclass(frozen=True)
    class UseNu:
        name: str
        tune: Any = None

        def describe(self) -> str:
            return self.name

    p = genuine.preset("quick", tune_parallel=1, tune_max_trials=12)
    ok_tune = genuine.tune_cell(p, "mnist", "r4", "unused")
    bad_tune = genuine.tune_cell(genuine.preset("quick", seeds=(99,), tune_max_trials=12),
                                 "mnist", "t3", "unused")
    cells = [DynamicCell(UseNu("r4-ir", ok_tune), _user_of_nu, "study", 1),
             DynamicCell(UseNu("t3-ir", bad_tune), _user_of_nu, "study", 1),
             DynamicCell(UseNu("wt"), lambda c, ctx: CellResult().add("x", 1.0), "study", 2)]
    with ResultsStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(StudyError, match="non-finite loss"):
            tuning.tune_all([ok_tune, bad_tune], store, "study", progress=False,
                            root=tmp_path, cells=cells)
        nu = store.value(cell_id(ok_tune), "nu")
        assert nu is not None and _si(nu) >= 0.95 and _si(nu / 1.3) < 0.95
        assert store.value(cell_id(cells[0].cfg), "nu_used") == nu  # ran after its ν
        assert not store.is_done(cell_id(cells[1].cfg))  # its search failed: not run
        assert store.is_done(cell_id(cells[2].cfg))  # needs no ν: ran anyway
        assert not store.is_done(cell_id(bad_tune))


def test_a_run_that_stops_early_leaves_no_search_thread_blocked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    def interrupted(cell: tuning.TrialCell, ctx: Any = None) -> CellResult:
        raise KeyboardInterrupt  # Ctrl-C while a trial runs (the serial executor re-raises)

    monkeypatch.setattr(tuning, "run_trial_cell", interrupted)
    monkeypatch.setattr(genuine, "pin_source", lambda cfg: cfg)
    tc = genuine.tune_cell(genuine.preset("quick"), "mnist", "r4", "unused")
    with ResultsStore(tmp_path / "s.sqlite") as store, pytest.raises(KeyboardInterrupt):
        tuning.tune_all([tc], store, "study", progress=False, root=tmp_path)
    for t in threading.enumerate():
        if t.name.startswith("nu-search-"):
            t.join(timeout=5)
            assert not t.is_alive()
