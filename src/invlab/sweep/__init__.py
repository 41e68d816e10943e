"""Generic study runner and results store.

A study expands to *cells*; a cell is a frozen dataclass config whose id is a stable hash of
its resolved config (:func:`cell_id`). :func:`run_study` runs a cell function on every cell
not yet in the :class:`ResultsStore` (SQLite, WAL), serially or in a process pool, and
writes each cell's metric rows together with its ``done`` mark in one transaction as it
finishes. An interrupted study (Ctrl-C, ``kill -9``) resumes where it stopped; a failed cell
records nothing and is retried by the next run. :func:`run_dynamic` runs cells whose set
grows as results arrive (a :class:`Scheduler`: ν searches and the cells that wait for
their answers) on one pool.

Example::

    from dataclasses import dataclass
    from invlab.sweep import CellResult, ResultsStore, check, run_study, validate

    @dataclass(frozen=True)
    class Cell:
        group: str
        seed: int = 0

        def __post_init__(self) -> None:
            validate(self)                           # field types, naming the field
            check("group", self.group in ("r4", "t3"), f"expected r4 or t3, got {self.group!r}")

    def run_cell(cfg: Cell, ctx) -> CellResult:      # module level: picklable
        acc = ...                                    # train / measure; artifacts in ctx.dir
        return CellResult().add("acc", acc, n=2000)

    cells = [Cell(g, s) for g in ("r4", "t3") for s in range(4)]
    store = ResultsStore("runs/demo/results.sqlite")
    run_study(cells, run_cell, store, "genuine", executor="process", workers=2)
    df = store.to_frame("genuine")                   # columns: metric, value, cfg.group, ...

Configs from YAML/flags go through :func:`from_dict` (unknown keys and bad types raise
:class:`ConfigError` naming the field); :func:`write_resolved_config` writes
``config.yaml``/``config.json`` beside the results; :mod:`invlab.sweep.io` has the atomic
file writers.
"""

from __future__ import annotations

from invlab.config import (
    ConfigError,
    canonical_json,
    cell_id,
    check,
    config_to_dict,
    from_dict,
    validate,
)
from invlab.sweep.dynamic import DynamicCell, Scheduler, run_dynamic
from invlab.sweep.executors import (
    EXECUTORS,
    WAIT,
    Executor,
    ProcessPoolExecutorBackend,
    SerialExecutor,
    available_cores,
    choose_executor,
    make_executor,
)
from invlab.sweep.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    write_resolved_config,
)
from invlab.sweep.lock import OutputLocked, output_lock
from invlab.sweep.provenance import git_revision, invlab_version
from invlab.sweep.runner import (
    CellContext,
    CellResult,
    StudyError,
    StudySummary,
    describe,
    run_study,
    threads_for,
)
from invlab.sweep.store import ResultsStore, StoreError

__all__ = [
    "EXECUTORS",
    "WAIT",
    "CellContext",
    "CellResult",
    "ConfigError",
    "DynamicCell",
    "Executor",
    "OutputLocked",
    "ProcessPoolExecutorBackend",
    "ResultsStore",
    "Scheduler",
    "SerialExecutor",
    "StoreError",
    "StudyError",
    "StudySummary",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "available_cores",
    "canonical_json",
    "cell_id",
    "check",
    "choose_executor",
    "config_to_dict",
    "describe",
    "from_dict",
    "git_revision",
    "invlab_version",
    "make_executor",
    "output_lock",
    "run_dynamic",
    "run_study",
    "threads_for",
    "validate",
    "write_resolved_config",
]
