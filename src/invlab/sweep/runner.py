"""The study runner: run every cell not yet in the store, write each as it finishes."""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import random
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invlab.config import cell_id as _cell_id
from invlab.config import config_to_dict
from invlab.errors import InvlabError
from invlab.io import atomic_write
from invlab.progress import progress_bar
from invlab.sweep.executors import Executor, SerialExecutor, make_executor
from invlab.sweep.store import ResultsStore

__all__ = [
    "CellContext",
    "CellResult",
    "StudyError",
    "StudySummary",
    "describe",
    "run_study",
    "threads_for",
]

log = logging.getLogger("invlab.sweep")


@dataclass
class CellResult:
    """What a cell function returns.

    Attributes:
        rows: metric rows ``{"metric": str, "value": float, "std": float | None,
            "n": int | None}``.
        extra: JSON data stored with the cell (e.g. ``{"nu": 0.3}``).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] | None = None

    def add(self, metric: str, value: float, std: float | None = None,
            n: int | None = None) -> CellResult:
        """Append one metric row; returns self for chaining."""
        self.rows.append({"metric": metric, "value": value, "std": std, "n": n})
        return self


@dataclass(frozen=True)
class CellContext:
    """What the runner gives a cell function besides its config.

    Attributes:
        cell_id: the cell's id.
        study: the study name.
        root: the study's output root; the cell's artifacts go in ``root/cells/<cell_id>/``.
        seed: the seed the cell runs with: ``cfg.seed`` if the config has an int ``seed``
            field, else derived from the cell id. The runner has already seeded ``random``,
            numpy and torch with it; prefer explicit generators
            (:meth:`torch_generator`).
    """

    cell_id: str
    study: str
    root: Path
    seed: int
    threads: int = 1
    store_path: Path | None = None
    device: str = "cpu"
    """Where the cell trains and measures (``invlab study --device``; ``$INVLAB_DEVICE``)."""
    reader: Callable[[str, str], float | None] | None = field(default=None, compare=False,
                                                                repr=False)
    cwd: str | None = None
    """The driver's working directory (absolute): the cell runs in it, so relative paths in
    its config (``--out``, ``--checkpoints``) mean the same on every worker and node."""
    """Where :meth:`value` reads when set (the Ray executor serves the store from the driver's
    node, so workers on other nodes never open the SQLite file); else ``store_path``."""

    def value(self, cfg: Any, metric: str) -> float:
        """A metric of the already-finished cell ``cfg`` (e.g. the ν a tuning cell chose), read
        from the study's store: a derived value is fetched from its producing cell, so it is
        never part of the consuming cell's identity.

        Raises:
            LookupError: the producing cell has not been run (or lacks ``metric``).
        """
        cid = _cell_id(cfg)
        if self.reader is not None:
            v = self.reader(cid, metric)
        elif self.store_path is None:
            raise LookupError("this cell context has no results store")
        else:
            with ResultsStore(self.store_path) as store:
                v = store.value(cid, metric)
        if v is None:
            raise LookupError(f"cell {cid} ({type(cfg).__name__}) has no {metric!r} in "
                              f"{self.store_path}; run it first (an earlier study stage)")
        return v

    @property
    def dir(self) -> Path:
        """``root/cells/<cell_id>/`` for checkpoints and other artifacts (created)."""
        d = self.root / "cells" / self.cell_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def torch_generator(self) -> Any:
        """A ``torch.Generator`` seeded with :attr:`seed`."""
        return torch.Generator().manual_seed(self.seed)


class StudyError(InvlabError, RuntimeError):
    """Some cells of a study failed; nothing was recorded for them.

    Attributes:
        study: the study name.
        failures: ``{cell_id: "ExcType: message"}`` of the failed cells.
        summary: the :class:`StudySummary` of the run.
    """

    def __init__(self, study: str, failures: Mapping[str, str], summary: StudySummary,
                 labels: Mapping[str, str] | None = None) -> None:
        self.study = study
        self.failures = dict(failures)
        self.summary = summary
        self.labels = dict(labels or {})  #: ``{cell_id: short description}``
        lines = "\n".join(
            f"  {cid}{f' ({self.labels[cid]})' if cid in self.labels else ''}: {_one_line(msg)}"
            for cid, msg in self.failures.items())
        super().__init__(
            f"{len(self.failures)} of {summary.total} cells of study {study!r} failed "
            f"(nothing recorded for them; {summary.ran} others were written):\n{lines}\n"
            "Fix the cause and rerun: finished cells are skipped, only these run again."
        )


def _one_line(msg: str, width: int = 300) -> str:
    s = " ".join(str(msg).split())
    return s if len(s) <= width else s[: width - 1] + "…"


@dataclass(frozen=True)
class StudySummary:
    """Outcome of :func:`run_study`."""

    study: str
    total: int  #: distinct cells in the study
    skipped: int  #: already done before this run
    ran: int  #: run and written now
    failed: tuple[str, ...]  #: ids of cells that raised
    wall_seconds: float


@dataclass(frozen=True)
class _Task:
    fn: Callable[[Any, CellContext], Any]
    cfg: Any
    ctx: CellContext


@dataclass(frozen=True)
class _Outcome:
    result: CellResult | None
    error: str | None  # "ExcType: message"
    traceback: str | None
    started_at: datetime
    wall_seconds: float


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _coerce_result(res: Any) -> CellResult:
    if isinstance(res, CellResult):
        return res
    if isinstance(res, list):
        return CellResult(rows=res)
    raise TypeError(
        f"a cell function must return a CellResult (or a list of metric rows), "
        f"got {type(res).__name__}"
    )


def threads_for(cfg: Any) -> int:
    """Intra-op threads a cell runs with: its config's ``threads`` (a field or property,
    e.g. ``cfg.train.threads``), else 1. Fixed per cell, whatever the executor, so results
    do not depend on ``--workers``; being in the config, it is part of the cell id."""
    t = getattr(cfg, "threads", 1)
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"{type(cfg).__name__}.threads must be an int >= 1, found {t!r}")
    return t


def _execute(task: _Task) -> _Outcome:
    """Run one cell (in whichever process the executor chose); never raises Exceptions.

    The cell runs with exactly ``task.ctx.threads`` torch intra-op threads (restored after,
    for the serial executor's sake)."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    here = os.getcwd()
    try:
        _enter(task.ctx.cwd)
        os.environ["INVLAB_DEVICE"] = task.ctx.device  # the cell's device, in any worker
        torch.set_num_threads(task.ctx.threads)
        _seed_everything(task.ctx.seed)
        res = _coerce_result(task.fn(task.cfg, task.ctx))
        # fail here, in the worker, if the result cannot travel back or be stored
        pickle.dumps(res)
        return _Outcome(res, None, None, started, time.perf_counter() - t0)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a failing cell (user code calling
        # sys.exit too) must not stop the study
        err = (f"SystemExit: the cell called sys.exit({e.code!r})" if isinstance(e, SystemExit)
               else f"{type(e).__name__}: {e}")
        return _Outcome(None, err, traceback.format_exc(), started, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
        if os.getcwd() != here:
            os.chdir(here)


def _enter(cwd: str | None) -> None:
    """chdir into the driver's working directory (a no-op in the driver's own processes)."""
    if cwd is None or os.getcwd() == cwd:
        return
    if not os.path.isdir(cwd):
        raise FileNotFoundError(
            f"the driver's working directory {cwd} does not exist on this worker's node; run "
            "the study from a folder on the shared filesystem (same path on every node) or "
            "give absolute --out/--checkpoints on it")
    os.chdir(cwd)


def _save_traceback(root: Path, cid: str, cfg: Any, tb: str | None) -> Path | None:
    """Keep a failed cell's traceback in ``root/failures/<cell_id>.txt`` (best effort)."""
    if not tb:
        return None

    try:
        return atomic_write(root / "failures" / f"{cid}.txt",
                            f"{type(cfg).__name__}: {describe(cfg, 10_000)}\n\n{tb}")
    except OSError:
        return None


def describe(cfg: Any, width: int = 60) -> str:
    """Short one-line description of a cell config (its ``describe()`` if it has one)."""
    d = getattr(cfg, "describe", None)
    if callable(d):
        s = str(d())
    elif dataclasses.is_dataclass(cfg):
        s = " ".join(f"{f.name}={getattr(cfg, f.name)!s}" for f in dataclasses.fields(cfg))
    else:
        s = str(cfg)
    return s if len(s) <= width else s[: width - 1] + "…"


def _seed_for(cfg: Any, cid: str) -> int:
    s = getattr(cfg, "seed", None)
    if isinstance(s, int) and not isinstance(s, bool):
        return s
    return int(cid[:8], 16)


def _make_task(fn: Callable[[Any, CellContext], Any], cfg: Any, cid: str, study: str,
               root: Path, store: ResultsStore) -> _Task:
    """The executor item for one cell: its function, config and context."""
    return _Task(fn, cfg, CellContext(cid, study, root, _seed_for(cfg, cid), threads_for(cfg),
                                      store.path.absolute(), cwd=os.getcwd(),
                                      device=os.environ.get("INVLAB_DEVICE") or "cpu"))


def _tick(bar: Any, cfg: Any, failures: Mapping[str, str]) -> None:
    """Advance the progress bar (if any) by one finished cell."""
    if bar is not None:
        bar.set_postfix_str(describe(cfg, 40) + (f" | {len(failures)} failed" if failures else ""))
        bar.update(1)


def _close(it: Any, bar: Any) -> None:
    """Stop the executor's iterator (cancels pending cells) and close the bar."""
    close = getattr(it, "close", None)
    if close is not None:
        close()
    if bar is not None:
        bar.close()


def _record(store: ResultsStore, task: _Task, outcome: Any, config: dict[str, Any],
            root: Path, failures: dict[str, str]) -> bool:
    """Write one finished cell to ``store`` (True), or note its failure in ``failures``."""
    cid, study = task.ctx.cell_id, task.ctx.study
    if isinstance(outcome, BaseException):  # executor-level failure (worker died)
        err = f"{type(outcome).__name__}: {outcome}"
        if isinstance(outcome, BrokenProcessPool):
            err = ("BrokenProcessPool: a worker process died while this cell was in "
                   "flight (this cell or another one running at the same time crashed "
                   "it: segfault, out-of-memory kill, os._exit)")
        failures[cid] = err
        log.error("study %s: cell %s (%s) failed: %s", study, cid, describe(task.cfg), err)
        return False
    if outcome.error is not None:
        failures[cid] = outcome.error
        where = _save_traceback(root, cid, task.cfg, outcome.traceback)
        log.error("study %s: cell %s (%s) failed: %s%s", study, cid, describe(task.cfg),
                  _one_line(outcome.error), f" (traceback: {where})" if where else "")
        return False
    assert outcome.result is not None
    try:
        store.put_cell(cid, study, config, outcome.result.rows, outcome.wall_seconds,
                       outcome.result.extra, started_at=outcome.started_at,
                       seed=task.ctx.seed, kind=type(task.cfg).__name__,
                       threads=task.ctx.threads, device=task.ctx.device)
    except (ValueError, TypeError) as e:  # bad rows/extra: the cell's fault
        failures[cid] = f"{type(e).__name__}: {e}"
        log.error("study %s: cell %s returned results that cannot be stored: %s", study, cid, e)
        return False
    return True


def _check_picklable(ex: Executor, fn: Callable[[Any, CellContext], Any]) -> None:
    """A pool executor sends ``fn`` to its workers: refuse one that cannot be pickled."""
    if isinstance(ex, SerialExecutor):
        return
    try:
        pickle.dumps(fn)
    except Exception as e:
        raise TypeError(
            f"{ex!r} needs a picklable cell function (a module-level def, not a lambda "
            f"or a nested function); got {fn!r}: {e}"
        ) from e


def _expand(cells: Sequence[Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``{cell_id: (cfg, config dict)}`` in first-seen order, duplicates once: ids and
    configs are resolved up front so bad configs fail before any work."""
    by_id: dict[str, tuple[Any, dict[str, Any]]] = {}
    for cfg in cells:
        cid = _cell_id(cfg)
        if cid not in by_id:
            by_id[cid] = (cfg, config_to_dict(cfg))
    return by_id


def _cell_bar(total: int, desc: str) -> Any:
    """The progress bar over a run's cells, on stderr."""
    return progress_bar(total=total, desc=desc, unit="cell", file=sys.stderr,
                        dynamic_ncols=True)


def _run_tasks(ex: Executor, tasks: Sequence[_Task], store: ResultsStore,
               by_id: Mapping[str, tuple[Any, dict[str, Any]]], root: Path,
               failures: dict[str, str], bar: Any) -> int:
    """Run ``tasks`` on ``ex`` and record each as it finishes (failures into ``failures``);
    returns how many were written. The bar is closed and pending cells cancelled at the end,
    also on an exception."""
    ran = 0
    it = ex.map_unordered(_execute, tasks)
    try:
        for task, outcome in it:
            if _record(store, task, outcome, by_id[task.ctx.cell_id][1], root, failures):
                ran += 1
            _tick(bar, task.cfg, failures)
    finally:
        _close(it, bar)
    return ran


def run_study(
    cells: Sequence[Any],
    fn: Callable[[Any, CellContext], CellResult],
    store: ResultsStore,
    study: str,
    executor: str | Executor = "serial",
    workers: int = 1,
    progress: bool = True,
    *,
    root: str | Path | None = None,
    start_method: str = "spawn",
) -> StudySummary:
    """Run ``fn`` on every cell not already done in ``store``; write each as it finishes.

    Args:
        cells: cell configs (frozen dataclasses); duplicates (same :func:`cell_id`) run once.
        fn: ``fn(cfg, ctx) -> CellResult``. For the process executor it must be a
            module-level function (it is pickled by reference).
        store: where results go; written only by this (parent) process, one transaction
            per cell, in completion order.
        study: study name recorded with every row.
        executor: ``"serial"``, ``"process"``, ``"ray"`` or an :class:`Executor` instance
            (see :func:`invlab.sweep.choose_executor`).
        workers: process count for ``"process"`` (CPUs of a local Ray instance).
        progress: show a tqdm bar on stderr.
        root: output root for cell artifacts (``root/cells/<cell_id>/``); default: the
            store's directory.
        start_method: ``"spawn"`` or ``"forkserver"`` for the process executor.

    Returns:
        A :class:`StudySummary`.

    Raises:
        StudyError: after all other cells ran, if any cell raised. Nothing is written for
            a failed cell, so rerunning retries exactly the failures.
    """
    if not isinstance(study, str) or not study:
        raise ValueError(f"study must be a non-empty name, got {study!r}")
    ex = make_executor(executor, workers, start_method=start_method)
    _check_picklable(ex, fn)
    # absolute: cells may run in another working directory or on another node (Ray)
    root_path = (Path(root) if root is not None else store.path.parent).absolute()
    t_start = time.perf_counter()

    by_id = _expand(cells)
    total = len(by_id)
    done = store.done_ids()
    todo = [cid for cid in by_id if cid not in done]
    skipped = total - len(todo)
    log.info("study %s: skip %d/%d done, %d to run (%r)", study, skipped, total, len(todo), ex)

    tasks = [
        _make_task(fn, by_id[cid][0], cid, study, root_path, store) for cid in todo
    ]
    failures: dict[str, str] = {}
    bar = _cell_bar(len(tasks), study) if progress and tasks else None
    ran = _run_tasks(ex, tasks, store, by_id, root_path, failures, bar)

    summary = StudySummary(study, total, skipped, ran, tuple(failures),
                           time.perf_counter() - t_start)
    log.info("study %s: %d ran, %d skipped, %d failed in %.1f s", study, ran, skipped,
             len(failures), summary.wall_seconds)
    if failures:
        raise StudyError(study, failures, summary,
                         {cid: describe(by_id[cid][0], 80) for cid in failures})
    return summary
