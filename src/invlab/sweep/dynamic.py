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
import sys
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
    done_ids = store.done_ids()
    heap: list[tuple[int, int, str]] = []
    order = itertools.count()
    waiters: dict[str, list[DynamicCell]] = {}  # queued or running cell id -> who asked
    configs: dict[str, tuple[DynamicCell, dict[str, Any]]] = {}
    failures: dict[str, str] = {}
    counts = {"skipped": 0, "ran": 0, "in_flight": 0}
    per_study: dict[str, list[int]] = {}  # study -> [cells seen, skipped]
    bar = None
    if progress:
        from invlab.progress import progress_bar

        bar = progress_bar(total=0, desc=label, unit="cell", file=sys.stderr,
                           dynamic_ncols=True)

    def pull() -> None:
        """Take every ready cell: done ones are reported at once (which may ready more)."""
        while cells := scheduler.ready():
            for dc in cells:
                cid = _cell_id(dc.cfg)
                if cid not in configs and cid not in waiters:
                    per_study.setdefault(dc.study, [0, 0])[0] += 1
                if cid in waiters:  # already queued or running (asked for twice)
                    waiters[cid].append(dc)
                elif cid in failures:  # failed in this run: not retried until the next
                    scheduler.finished(dc, False)
                elif cid in done_ids:
                    if cid not in configs:
                        per_study[dc.study][1] += 1
                        counts["skipped"] += 1
                    configs.setdefault(cid, (dc, {}))
                    scheduler.finished(dc, True)
                else:
                    configs[cid] = (dc, config_to_dict(dc.cfg))
                    waiters[cid] = [dc]
                    heapq.heappush(heap, (dc.priority, next(order), cid))
                    if bar is not None:
                        bar.total += 1
                        bar.refresh()

    def source() -> Iterator[Any]:
        while True:
            pull()
            if heap and counts["in_flight"] < workers:
                _, _, cid = heapq.heappop(heap)
                dc = configs[cid][0]
                counts["in_flight"] += 1
                yield _make_task(dc.fn, dc.cfg, cid, dc.study, root_path, store)
            elif counts["in_flight"]:
                yield WAIT
            elif scheduler.done():
                return
            else:
                raise RuntimeError(f"{label}: the scheduler is not done but has no cell "
                                   "ready and none is running")

    it = ex.map_unordered(_execute, source())
    try:
        for task, outcome in it:
            counts["in_flight"] -= 1
            cid = task.ctx.cell_id
            ok = _record(store, task, outcome, configs[cid][1], root_path, failures)
            if ok:
                counts["ran"] += 1
                done_ids.add(cid)
            for dc in waiters.pop(cid, []):
                scheduler.finished(dc, ok)
            _tick(bar, task.cfg, failures)
    finally:
        _close(it, bar)
    summary = StudySummary(label, len(configs), counts["skipped"], counts["ran"],
                           tuple(failures), time.perf_counter() - t_start)
    for name, (seen, skipped) in per_study.items():
        log.info("study %s: skip %d/%d done (%s)", name, skipped, seen, label)
    log.info("%s: %d ran, %d skipped, %d failed in %.1f s", label, counts["ran"],
             counts["skipped"], len(failures), summary.wall_seconds)
    if failures:
        raise StudyError(label, failures, summary,
                         {cid: describe(configs[cid][0].cfg, 80) for cid in failures})
    return summary
