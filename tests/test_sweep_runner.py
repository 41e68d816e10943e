"""run_study: resume, failures, executors."""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from invlab.sweep import (
    CellContext,
    CellResult,
    ResultsStore,
    SerialExecutor,
    StudyError,
    cell_id,
    config_to_dict,
    run_study,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sweep_worker_script as W


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_TEST_SLEEP", "0")  # spawned workers inherit it


@pytest.fixture
def sweep_log() -> Iterator[list[str]]:
    """Messages logged on 'invlab.sweep' (the 'invlab' logger does not propagate)."""
    msgs: list[str] = []

    class H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msgs.append(record.getMessage())

    lg = logging.getLogger("invlab.sweep")
    h, old = H(level=logging.DEBUG), lg.level
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    yield msgs
    lg.removeHandler(h)
    lg.setLevel(old)


def test_resume_skips_done_cells(tmp_path: Path, sweep_log: list[str]) -> None:
    calls: Counter[int] = Counter()

    def fn(cfg: W.KCell, ctx: CellContext) -> CellResult:
        calls[cfg.i] += 1
        assert ctx.cell_id == cell_id(cfg) and ctx.study == "resume"
        assert ctx.dir == tmp_path / "cells" / ctx.cell_id and ctx.dir.is_dir()
        assert ctx.seed == cfg.seed
        return W.cell_fn(cfg, ctx)

    store = ResultsStore(tmp_path / "r.sqlite")
    cells = W.cells(6)
    s = run_study(cells + cells[:2], fn, store, "resume", progress=False)  # duplicates run once
    assert dict(calls) == {i: 1 for i in range(6)}
    assert (s.total, s.skipped, s.ran, s.failed) == (6, 0, 6, ())
    first = store.dump()

    calls.clear()
    s = run_study(cells, fn, store, "resume", progress=True)
    assert not calls and (s.skipped, s.ran) == (6, 0)
    assert store.dump() == first
    assert any("skip 6/6 done" in m for m in sweep_log), sweep_log

    more = W.cells(8)
    s = run_study(more, fn, store, "resume", progress=False)
    assert dict(calls) == {6: 1, 7: 1} and (s.skipped, s.ran) == (6, 2)
    assert any("skip 6/8 done" in m for m in sweep_log), sweep_log
    assert len(store.done_ids("resume")) == 8 and len(store.rows("resume")) == 8 * 3
    cell = {c["cell_id"]: c for c in store.cells("resume")}[cell_id(more[7])]
    assert cell["config"] == config_to_dict(more[7]) and cell["seed"] == more[7].seed
    assert cell["extra"] == {"i": 7, "nu": 0.7, "seed": more[7].seed}
    assert cell["wall_seconds"] >= 0 and cell["started_at"] <= cell["finished_at"]


def test_failing_cell_does_not_poison_the_store(tmp_path: Path, sweep_log: list[str]) -> None:
    cells = W.cells(6)
    bad = cell_id(cells[3])
    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(StudyError) as ei:
        run_study(cells, W.failing_cell_fn, store, "fail", progress=False)
    err = ei.value
    assert list(err.failures) == [bad] and "boom in cell 3" in err.failures[bad]
    assert bad in str(err) and err.summary.ran == 5
    assert any(bad in m and "boom" in m for m in sweep_log)
    assert store.done_ids() == {cell_id(c) for c in cells} - {bad}
    assert all(r["cell_id"] != bad for r in store.rows())

    # fixed: only the failed cell runs again
    run_study(cells, W.cell_fn, store, "fail", progress=False)
    assert {cell_id(c): W.calls_of(tmp_path, cell_id(c)) for c in cells} == {
        cell_id(c): 1 for c in cells}  # failing_cell_fn raised before recording a call
    clean = ResultsStore(tmp_path / "clean" / "r.sqlite")
    run_study(cells, W.cell_fn, clean, "fail", progress=False)
    assert store.dump() == clean.dump()


def test_unstorable_results_are_a_cell_failure(tmp_path: Path) -> None:
    def fn(cfg: W.KCell, ctx: CellContext) -> CellResult:
        if cfg.i == 1:
            return CellResult([{"metric": "a", "value": "not a number"}])
        if cfg.i == 2:
            return {"a": 1.0}  # type: ignore[return-value]
        return CellResult().add("a", float(cfg.i))

    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(StudyError) as ei:
        run_study(W.cells(4), fn, store, "bad", progress=False)
    assert set(ei.value.failures) == {cell_id(W.cells(4)[1]), cell_id(W.cells(4)[2])}
    assert "CellResult" in ei.value.failures[cell_id(W.cells(4)[2])]
    assert len(store.done_ids()) == 2 and len(store.rows()) == 2


def test_process_executor_matches_serial(tmp_path: Path) -> None:
    # one pool start only (each spawned worker imports torch): the failing cell shows that
    # worker errors are reported like serial ones and leave the same store behind
    cells = W.cells(8)
    dumps, failures = {}, {}
    for ex in ("serial", "process"):
        store = ResultsStore(tmp_path / ex / "r.sqlite")
        with pytest.raises(StudyError) as ei:
            run_study(cells, W.failing_cell_fn, store, "eq", executor=ex, workers=2,
                      progress=ex == "process")
        dumps[ex], failures[ex] = store.dump(), ei.value.failures
    assert list(failures["process"]) == list(failures["serial"]) == [cell_id(cells[3])]
    assert failures["process"] == failures["serial"]
    assert dumps["process"] == dumps["serial"]
    assert len(dumps["serial"]["results"]) == 7 * 3 and len(dumps["serial"]["cells"]) == 7
    # every cell ran exactly once, in worker processes other than this one
    pids = set()
    for c in cells[:3] + cells[4:]:
        lines = (tmp_path / "process" / "cells" / cell_id(c) / "calls").read_text().split()
        assert len(lines) == 1, (c, lines)
        pids.add(int(lines[0]))
    assert os.getpid() not in pids


def test_process_executor_needs_picklable_fn(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(TypeError, match="module-level"):
        run_study(W.cells(2), lambda cfg, ctx: CellResult(), store, "x", executor="process",
                  workers=2, progress=False)
    with pytest.raises(ValueError, match="unknown executor"):
        run_study(W.cells(2), W.cell_fn, store, "x", executor="threads", progress=False)
    assert store.done_ids() == set()


def _square(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


def test_executors_protocol() -> None:
    for ex in (SerialExecutor(),):  # the process backend runs in the test above
        out = dict(ex.map_unordered(_square, range(6)))
        assert isinstance(out.pop(3), ValueError)
        assert out == {0: 0, 1: 1, 2: 4, 4: 16, 5: 25}
