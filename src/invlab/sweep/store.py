"""Results store: one SQLite file, safe for several processes, crash-consistent per cell.

Two tables::

    results(cell_id, metric) PRIMARY KEY — study, value REAL, std REAL, n INTEGER,
        config JSON, invlab_version, git_rev, created_at, updated_at
    cells(cell_id) PRIMARY KEY — study, config JSON, status ('done'), started_at,
        finished_at, wall_seconds, seed, extra JSON

A cell's metric rows and its ``done`` mark are written in one ``BEGIN IMMEDIATE``
transaction, so a process killed at any moment leaves either all of a cell or nothing of it.
The database runs in WAL mode with a busy timeout: readers never block the writer, and
several processes may write (each waits its turn). Timestamps are UTC ISO 8601.

    >>> store = ResultsStore("runs/demo/results.sqlite")              # doctest: +SKIP
    >>> store.put_cell(cid, "genuine", {"group": "r4"},
    ...                [{"metric": "acc", "value": 0.95, "std": None, "n": 2000}],
    ...                wall_seconds=12.5, extra={"nu": 0.3})            # doctest: +SKIP
    >>> store.to_frame("genuine")[["cfg.group", "metric", "value"]]     # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invlab.errors import InvlabError
from invlab.sweep.provenance import git_revision, invlab_version

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SCHEMA_VERSION", "ResultsStore", "StorageError", "StoreError"]

SCHEMA_VERSION = 2  # 2: cells.kind (config type) and cells.threads


class StoreError(InvlabError, RuntimeError):
    """The results store file cannot be used (not a database, read-only, newer schema)."""


class StorageError(StoreError, sqlite3.OperationalError):
    """Reading or writing the store failed (disk full, I/O error, locked too long): one line
    naming the file; cells committed before it are kept. Also an ``sqlite3`` error, as the
    store raised before."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS results (
    cell_id        TEXT NOT NULL,
    study          TEXT NOT NULL,
    metric         TEXT NOT NULL,
    value          REAL,
    std            REAL,
    n              INTEGER,
    config         TEXT NOT NULL,
    invlab_version TEXT,
    git_rev        TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (cell_id, metric)
);
CREATE INDEX IF NOT EXISTS results_study ON results (study);
CREATE TABLE IF NOT EXISTS cells (
    cell_id      TEXT PRIMARY KEY,
    study        TEXT NOT NULL,
    config       TEXT NOT NULL,
    status       TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    wall_seconds REAL,
    seed         INTEGER,
    extra        TEXT,
    kind         TEXT,
    threads      INTEGER,
    device       TEXT
);
CREATE INDEX IF NOT EXISTS cells_study ON cells (study);
"""

_UPSERT_RESULT = """
INSERT INTO results (cell_id, study, metric, value, std, n, config, invlab_version, git_rev,
                     created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (cell_id, metric) DO UPDATE SET
    study = excluded.study,
    value = excluded.value,
    std = excluded.std,
    n = excluded.n,
    config = excluded.config,
    invlab_version = excluded.invlab_version,
    git_rev = excluded.git_rev,
    updated_at = excluded.updated_at
"""

_UPSERT_CELL = """
INSERT INTO cells (cell_id, study, config, status, started_at, finished_at, wall_seconds,
                   seed, extra, kind, threads, device)
VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (cell_id) DO UPDATE SET
    study = excluded.study,
    config = excluded.config,
    status = excluded.status,
    started_at = excluded.started_at,
    finished_at = excluded.finished_at,
    wall_seconds = excluded.wall_seconds,
    seed = excluded.seed,
    extra = excluded.extra,
    kind = excluded.kind,
    threads = excluded.threads,
    device = excluded.device
"""

_ROW_KEYS = {"metric", "value", "std", "n"}
_RESULT_COLS = ("cell_id", "study", "metric", "value", "std", "n", "config",
                "invlab_version", "git_rev", "created_at", "updated_at")
_CELL_COLS = ("cell_id", "study", "config", "status", "started_at", "finished_at",
              "wall_seconds", "seed", "extra", "kind", "threads", "device")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _float_or_none(x: Any, what: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool):
        raise TypeError(f"{what}: expected a number or None, got bool {x!r}")
    item = getattr(x, "item", None)  # numpy / 0-d torch
    if callable(item) and not isinstance(x, (int, float)):
        x = item()
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a number or None, got {type(x).__name__} {x!r}") \
            from None
    return None if math.isnan(v) else v  # SQLite has no NaN: stored as NULL


def _normalize_rows(cell_id: str, rows: Iterable[Mapping[str, Any]]) -> list[tuple]:
    out: list[tuple] = []
    seen: set[str] = set()
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"cell {cell_id}: row {i} must be a dict with keys metric, value, "
                             f"std, n; got {type(r).__name__}")
        extra = set(r) - _ROW_KEYS
        if extra:
            raise ValueError(f"cell {cell_id}: row {i} has unknown key(s) {sorted(extra)}; "
                             f"expected {sorted(_ROW_KEYS)}")
        metric = r.get("metric")
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"cell {cell_id}: row {i} needs a non-empty str 'metric', "
                             f"got {metric!r}")
        if metric in seen:
            raise ValueError(f"cell {cell_id}: metric {metric!r} appears twice")
        seen.add(metric)
        if "value" not in r:
            raise ValueError(f"cell {cell_id}: row {metric!r} has no 'value'")
        n = r.get("n")
        if n is not None:
            if isinstance(n, bool) or int(n) != n:
                raise ValueError(f"cell {cell_id}: row {metric!r}: n must be an int, got {n!r}")
            n = int(n)
        out.append((metric,
                    _float_or_none(r["value"], f"cell {cell_id}: {metric}.value"),
                    _float_or_none(r.get("std"), f"cell {cell_id}: {metric}.std"),
                    n))
    return out


def _flatten(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        elif isinstance(v, list):
            out[key] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        else:
            out[key] = v
    return out


MIGRATION_NOTE = ("migrated from schema 1, which did not record them: cells.kind = 'unknown'; "
                  "cells.threads from the cell's config where it has a threads field, else NULL "
                  "(unknown)")


def _threads_in(config: Any) -> int | None:
    """A schema-1 cell's intra-op threads: its config's ``threads`` field, top level or one
    level down (``train.threads``); None when the config has none."""
    if not isinstance(config, dict):
        return None
    for d in [config, *(v for v in config.values() if isinstance(v, dict))]:
        t = d.get("threads")
        if isinstance(t, int) and not isinstance(t, bool) and t >= 1:
            return t
    return None


def _fill_migrated(conn: sqlite3.Connection) -> None:
    """Schema 1 → 2 inside the opening transaction: fill ``kind`` and ``threads`` of the old
    cells (``'unknown'`` / the config's ``threads``) and state it in ``meta``."""
    rows = conn.execute("SELECT cell_id, config FROM cells WHERE threads IS NULL").fetchall()
    for cid, cfg in rows:
        try:
            t = _threads_in(json.loads(cfg))
        except ValueError:
            t = None
        if t is not None:
            conn.execute("UPDATE cells SET threads = ? WHERE cell_id = ?", (t, cid))
    conn.execute("UPDATE cells SET kind = 'unknown' WHERE kind IS NULL")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('migration_note', ?)",
                 (MIGRATION_NOTE,))


class ResultsStore:
    """SQLite results store (see module docstring for the schema).

    Args:
        path: database file; parent directories are created.
        timeout: seconds to wait for another process's write lock before failing.
        synchronous: ``"NORMAL"`` (durable against process crashes; the default) or
            ``"FULL"`` (also against power loss, slower).

    The store may be pickled (the connection is reopened lazily in the new process) and
    used as a context manager. One connection per process; calls are serialized by a lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0,
                 synchronous: str = "NORMAL") -> None:
        sync = synchronous.upper()
        if sync not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self.timeout = float(timeout)
        self.synchronous = sync
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()
        self._connection()  # create the file and schema now, so errors surface early

    # ------------------------------------------------------------------ connection

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            return self._open()
        except sqlite3.DatabaseError as e:
            hint = ("the file is not an SQLite database; move it away or choose another --out"
                    if "not a database" in str(e) or "malformed" in str(e) else
                    "check that the folder exists, is writable and has free space")
            raise StoreError(f"{self.path}: cannot use this results store ({e}); {hint}") \
                from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        mode = None
        for attempt in range(50):  # first open of a new file can race with another process
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    conn.close()
                    raise
                time.sleep(0.05 * (attempt + 1))
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(
                f"could not put {self.path} in WAL journal mode (got {mode!r}); the store "
                "needs a local filesystem that supports shared memory (not NFS)"
            )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row[0]}, newer than this invlab "
                    f"understands ({SCHEMA_VERSION}); upgrade invlab"
                )
            have = {r[1] for r in conn.execute("PRAGMA table_info(cells)")}
            # schema 1 -> 2: kind, threads; device (where the cell ran; NULL for cells
            # written before it existed, which ran on the CPU) is a nullable column that
            # older invlab versions ignore, so it needs no schema version of its own
            for col, tp in (("kind", "TEXT"), ("threads", "INTEGER"), ("device", "TEXT")):
                if col not in have:
                    conn.execute(f"ALTER TABLE cells ADD COLUMN {col} {tp}")
            if not {"kind", "threads"} <= have:
                _fill_migrated(conn)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version' AND "
                         "CAST(value AS INTEGER) < ?", (str(SCHEMA_VERSION), SCHEMA_VERSION))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _storage_error(self, e: sqlite3.Error) -> StorageError:
        """One line for an SQLite failure while reading or writing (disk full, I/O error,
        locked too long); the store keeps every cell committed before it."""
        text = str(e)
        hint = ("free some space and rerun: finished cells are kept" if "full" in text else
                "check the disk or filesystem and rerun: finished cells are kept")
        return StorageError(f"{self.path}: storage error: {text} ({hint})")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:  # the original error is the one to report
                            pass
                    raise
            except sqlite3.Error as e:  # disk full, I/O error: one line, store intact
                raise self._storage_error(e) from e

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise self._storage_error(e) from e

    def close(self) -> None:
        """Close this process's connection (reopened automatically on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultsStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout, "synchronous": self.synchronous}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.timeout = state["timeout"]
        self.synchronous = state["synchronous"]
        self._conn, self._pid = None, None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # ------------------------------------------------------------------ writing

    def put_cell(
        self,
        cell_id: str,
        study: str,
        config: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
        wall_seconds: float,
        extra: Mapping[str, Any] | None = None,
        *,
        started_at: datetime | None = None,
        seed: int | None = None,
        kind: str | None = None,
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        """Write a finished cell: its metric rows and its ``done`` mark, atomically.

        Args:
            cell_id: the cell's id (:func:`invlab.sweep.cell_id`).
            study: study name.
            config: the cell's resolved config as JSON data (:func:`config_to_dict`).
            rows: ``[{"metric": str, "value": float, "std": float | None, "n": int | None}]``;
                NaN values are stored as NULL.
            wall_seconds: time the cell took.
            extra: JSON data to keep with the cell (e.g. the tuned ``nu``).
            started_at: start time (default: now − wall_seconds).
            seed: the seed the cell ran with.
            kind: the cell's config type (e.g. ``"GenuineCell"``).
            threads: intra-op threads the cell ran with.
            device: where the cell trained and measured (``cpu``, ``cuda:0``, ...).

        Rows are upserted on ``(cell_id, metric)``: a second write of the same cell updates
        values and ``updated_at`` and keeps ``created_at``. Metrics absent from the new rows
        are kept. Either everything is written or nothing (one transaction).
        """
        if not isinstance(cell_id, str) or not cell_id:
            raise ValueError(f"cell_id must be a non-empty str, got {cell_id!r}")
        if not isinstance(study, str) or not study:
            raise ValueError(f"study must be a non-empty str, got {study!r}")
        norm = _normalize_rows(cell_id, rows)
        config_json = _dumps(dict(config))
        extra_json = None if extra is None else _dumps(dict(extra))
        finished = _now()
        wall = float(wall_seconds)
        started = started_at or (finished - timedelta(seconds=max(wall, 0.0)))
        ts = _iso(finished)
        version, rev = invlab_version(), git_revision()
        with self._tx() as conn:
            conn.executemany(
                _UPSERT_RESULT,
                [(cell_id, study, m, v, s, n, config_json, version, rev, ts, ts)
                 for (m, v, s, n) in norm],
            )
            conn.execute(
                _UPSERT_CELL,
                (cell_id, study, config_json, _iso(started), ts, wall,
                 None if seed is None else int(seed), extra_json, kind,
                 None if threads is None else int(threads), device),
            )

    def delete_cells(self, cell_ids: Iterable[str]) -> int:
        """Forget cells (their rows and done marks) so the next run recomputes them.

        Returns the number of cells removed.
        """
        ids = list(cell_ids)
        with self._tx() as conn:
            n = 0
            for cid in ids:
                conn.execute("DELETE FROM results WHERE cell_id = ?", (cid,))
                n += conn.execute("DELETE FROM cells WHERE cell_id = ?", (cid,)).rowcount
        return n

    # ------------------------------------------------------------------ reading

    def is_done(self, cell_id: str) -> bool:
        """Whether the cell has been written (and so will be skipped by the runner)."""
        return bool(self._query(
            "SELECT 1 FROM cells WHERE cell_id = ? AND status = 'done'", (cell_id,)))

    def value(self, cell_id: str, metric: str) -> float | None:
        """The stored value of one metric of one cell (None if absent or NULL)."""
        q = self._query("SELECT value FROM results WHERE cell_id = ? AND metric = ?",
                        (cell_id, metric))
        return None if not q else q[0][0]

    def done_ids(self, study: str | None = None) -> set[str]:
        """Ids of done cells, of one study or of all."""
        if study is None:
            q = self._query("SELECT cell_id FROM cells WHERE status = 'done'")
        else:
            q = self._query("SELECT cell_id FROM cells WHERE status = 'done' AND study = ?",
                            (study,))
        return {r[0] for r in q}

    def rows(self, study: str | None = None) -> list[dict[str, Any]]:
        """All result rows (one per cell × metric), ``config`` parsed, ordered by
        study, cell_id, metric."""
        where, params = ("WHERE study = ?", (study,)) if study is not None else ("", ())
        q = self._query(
            f"SELECT {', '.join(_RESULT_COLS)} FROM results {where} "
            "ORDER BY study, cell_id, metric", params)
        out = []
        for r in q:
            d = dict(zip(_RESULT_COLS, r))
            d["config"] = json.loads(d["config"])
            out.append(d)
        return out

    def cells(self, study: str | None = None) -> list[dict[str, Any]]:
        """All cell records, ``config`` and ``extra`` parsed, ordered by study, cell_id."""
        where, params = ("WHERE study = ?", (study,)) if study is not None else ("", ())
        q = self._query(f"SELECT {', '.join(_CELL_COLS)} FROM cells {where} "
                        "ORDER BY study, cell_id", params)
        out = []
        for r in q:
            d = dict(zip(_CELL_COLS, r))
            d["config"] = json.loads(d["config"])
            d["extra"] = None if d["extra"] is None else json.loads(d["extra"])
            out.append(d)
        return out

    def to_frame(self, study: str | None = None) -> pd.DataFrame:
        """Result rows as a DataFrame; config fields flattened to ``cfg.<key>`` columns
        (nested as ``cfg.a.b``, lists as tuples so they can be grouped on)."""
        import pandas as pd  # lazy: import time (0.24 s), only for this method

        base = [c for c in _RESULT_COLS if c != "config"]
        records = []
        for r in self.rows(study):
            rec = {k: r[k] for k in base}
            rec.update(_flatten(r["config"], "cfg"))
            records.append(rec)
        if not records:
            return pd.DataFrame(columns=base)
        df = pd.DataFrame.from_records(records)
        cfg_cols = sorted(c for c in df.columns if c.startswith("cfg."))
        return df[base + cfg_cols]

    def dump(self, *, include_provenance: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Deterministic content of the store for comparisons.

        ``{"cells": [...], "results": [...]}`` sorted by (study, cell_id[, metric]), without
        timestamps and wall times, and without ``invlab_version``/``git_rev`` unless
        ``include_provenance``. Two runs of the same cells give equal dumps.
        """
        drop_r = {"created_at", "updated_at"}
        if not include_provenance:
            drop_r |= {"invlab_version", "git_rev"}
        drop_c = {"started_at", "finished_at", "wall_seconds"}
        results = [{k: v for k, v in r.items() if k not in drop_r} for r in self.rows()]
        cells = [{k: v for k, v in c.items() if k not in drop_c} for c in self.cells()]
        return {"cells": cells, "results": results}
