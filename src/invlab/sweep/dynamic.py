"""Run cells whose set grows as results arrive: ν searches, cells that need a tuned value.

A :class:`Scheduler` hands out the cells that can run now and learns of each one that
finished; :func:`run_dynamic` feeds them to one executor pool — at most ``workers`` in
flight, lowest ``priority`` first — and writes every result to the store as it finishes
(the same rows :func:`invlab.sweep.run_study` writes). No stage waits for the slowest cell
of the one before: while one search waits for its trial, the other core trains the next
trial of another search or a cell that needs no tuned value.

Which cells run, with which configs, depends only on the scheduler's decisions, and a
scheduler that decides from stored results alone (as :class:`invlab.studies.tuning.
TuningScheduler` does) gives the same cells and the same numbers for any executor, worker
count or completion order; only the order in which they run differs. Cells already done in
the store are not run again (they are reported to the scheduler as finished), so an
interrupted run resumes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from invlab.config import cell_id as _cell_id
from invlab.config import config_to_dict
from invlab.sweep.executors import WAIT, Executor, make_executor
from invlab.sweep.runner import (
    CellContext,
    StudyError,
    StudySummary,
    _cell_bar,
    _close,
    _execute,
    _make_task,
    _record,
    _tick,
    describe,
)
from invlab.sweep.store import ResultsStore

__all__ = ["DynamicCell", "Scheduler", "run_dynamic"]

log = logging.getLogger("invlab.sweep")


@dataclass(frozen=True)
class DynamicCell:
    """A cell for :func:`run_dynamic`: its config, cell function and store study name.

    ``priority``: lower runs first among the cells ready at the same time (ties in the
    order the scheduler returned them)."""

    cfg: Any
    fn: Callable[[Any, CellContext], Any]
    study: str
    priority: int = 0


class Scheduler(Protocol):
    """What :func:`run_dynamic` asks while it runs."""

    def ready(self) -> list[DynamicCell]:
        """Cells that can run now, each returned once (may be empty)."""
        ...

    def finished(self, cell: DynamicCell, ok: bool) -> None:
        """``cell`` is done: its rows are in the store (``ok``) or it failed."""
        ...

    def done(self) -> bool:
        """No cell will become ready any more."""
        ...


def run_dynamic(scheduler: Scheduler, store: ResultsStore, executor: str | Executor = "serial",
                workers: int = 1, progress: bool = True, *, root: str | Path | None = None,
                label: str = "study", start_method: str = "spawn") -> StudySummary:
    """Run every cell ``scheduler`` makes ready, until it has nothing left (module docstring).

    Args:
        scheduler: see :class:`Scheduler`.
        store: where results go, written by this process in completion order.
        executor, workers, start_method: as for :func:`invlab.sweep.run_study`; at most
            ``workers`` cells are in flight, so a newly ready high-priority cell is never
            queued behind cells already handed to the pool.
        root: output root for cell artifacts (default: the store's directory).
        label: name of the run in the log, the progress bar and the summary.

    Returns:
        A :class:`StudySummary` over all cells seen (skipped: already in the store).

    Raises:
        StudyError: after everything else that could run did, if any cell failed.
        RuntimeError: if the scheduler is not done but has nothing ready and nothing runs.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, found {workers}")
    ex = make_executor(executor, workers, start_method=start_method)
    root_path = (Path(root) if root is not None else store.path.parent).absolute()
    t_start = time.perf_counter()
    run = _DynamicRun(scheduler, store, workers, root_path, label, progress)
    it = ex.map_unordered(_execute, run.tasks())
    try:
        for task, outcome in it:
            run.finish(task, outcome)
    finally:
        _close(it, run.bar)
    return run.conclude(time.perf_counter() - t_start)


class _DynamicRun:
    """The bookkeeping of one :func:`run_dynamic` call: which cells are queued (a heap by
    priority, then arrival), running, done or failed, and who asked for each."""

    def __init__(self, scheduler: Scheduler, store: ResultsStore, workers: int,
                 root: Path, label: str, progress: bool) -> None:
        self.scheduler, self.store, self.workers = scheduler, store, workers
        self.root, self.label = root, label
        self.done_ids = store.done_ids()
        self.heap: list[tuple[int, int, str]] = []
        self.order = itertools.count()
        self.waiters: dict[str, list[DynamicCell]] = {}  # queued or running cell id -> who asked
        self.configs: dict[str, tuple[DynamicCell, dict[str, Any]]] = {}
        self.failures: dict[str, str] = {}
        self.skipped = self.ran = self.in_flight = 0
        self.per_study: dict[str, list[int]] = {}  # study -> [cells seen, skipped]
        self.bar = _cell_bar(0, label) if progress else None

    def pull(self) -> None:
        """Take every ready cell: done ones are reported at once (which may ready more)."""
        while cells := self.scheduler.ready():
            for dc in cells:
                self._take(dc)

    def _take(self, dc: DynamicCell) -> None:
        """Queue one ready cell, or answer it at once if it is queued, failed or done."""
        cid = _cell_id(dc.cfg)
        if cid not in self.configs and cid not in self.waiters:
            self.per_study.setdefault(dc.study, [0, 0])[0] += 1
        if cid in self.waiters:  # already queued or running (asked for twice)
            self.waiters[cid].append(dc)
        elif cid in self.failures:  # failed in this run: not retried until the next
            self.scheduler.finished(dc, False)
        elif cid in self.done_ids:
            if cid not in self.configs:
                self.per_study[dc.study][1] += 1
                self.skipped += 1
            self.configs.setdefault(cid, (dc, {}))
            self.scheduler.finished(dc, True)
        else:
            self.configs[cid] = (dc, config_to_dict(dc.cfg))
            self.waiters[cid] = [dc]
            heapq.heappush(self.heap, (dc.priority, next(self.order), cid))
            if self.bar is not None:
                self.bar.total += 1
                self.bar.refresh()

    def tasks(self) -> Iterator[Any]:
        """The executor's source: the next cell while fewer than ``workers`` run, ``WAIT``
        while the rest depend on running ones, until the scheduler is done."""
        while True:
            self.pull()
            if self.heap and self.in_flight < self.workers:
                _, _, cid = heapq.heappop(self.heap)
                dc = self.configs[cid][0]
                self.in_flight += 1
                yield _make_task(dc.fn, dc.cfg, cid, dc.study, self.root, self.store)
            elif self.in_flight:
                yield WAIT
            elif self.scheduler.done():
                return
            else:
                raise RuntimeError(f"{self.label}: the scheduler is not done but has no cell "
                                   "ready and none is running")

    def finish(self, task: Any, outcome: Any) -> None:
        """Record a finished cell and tell everyone who asked for it."""
        self.in_flight -= 1
        cid = task.ctx.cell_id
        ok = _record(self.store, task, outcome, self.configs[cid][1], self.root, self.failures)
        if ok:
            self.ran += 1
            self.done_ids.add(cid)
        for dc in self.waiters.pop(cid, []):
            self.scheduler.finished(dc, ok)
        _tick(self.bar, task.cfg, self.failures)

    def conclude(self, wall_seconds: float) -> StudySummary:
        """Log the outcome; the summary, or :class:`StudyError` if any cell failed."""
        summary = StudySummary(self.label, len(self.configs), self.skipped, self.ran,
                               tuple(self.failures), wall_seconds)
        for name, (seen, skipped) in self.per_study.items():
            log.info("study %s: skip %d/%d done (%s)", name, skipped, seen, self.label)
        log.info("%s: %d ran, %d skipped, %d failed in %.1f s", self.label, self.ran,
                 self.skipped, len(self.failures), summary.wall_seconds)
        if self.failures:
            raise StudyError(self.label, self.failures, summary,
                             {cid: describe(self.configs[cid][0].cfg, 80)
                              for cid in self.failures})
        return summary
