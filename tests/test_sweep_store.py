"""ResultsStore: upsert semantics, atomicity, reading back, several processes."""

from __future__ import annotations

import multiprocessing
import pickle
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from invlab.sweep import ResultsStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sweep_worker_script as W


def _rows(**vals: float) -> list[dict]:
    return [{"metric": k, "value": v, "std": 0.1, "n": 10} for k, v in vals.items()]


def test_pragmas(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s = store._connection()
    assert s.execute("PRAGMA synchronous").fetchone()[0] in (1, 2)  # NORMAL or FULL
    assert s.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_upsert_keeps_created_at(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    store.put_cell("c1", "s", {"a": 1}, _rows(acc=0.5, li=2.0), wall_seconds=1.0)
    first = {r["metric"]: r for r in store.rows()}
    time.sleep(0.01)
    store.put_cell("c1", "s", {"a": 1}, _rows(acc=0.75), wall_seconds=2.0, extra={"nu": 3})
    rows = store.rows()
    assert [(r["cell_id"], r["metric"]) for r in rows] == [("c1", "acc"), ("c1", "li")]
    acc = rows[0]
    assert acc["value"] == 0.75
    assert acc["created_at"] == first["acc"]["created_at"]
    assert acc["updated_at"] > first["acc"]["updated_at"]
    assert rows[1]["value"] == 2.0  # metrics absent from the new write are kept
    cells = store.cells("s")
    assert len(cells) == 1 and cells[0]["wall_seconds"] == 2.0 and cells[0]["extra"] == {"nu": 3}
    n = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT COUNT(*) FROM results").fetchone()
    assert n[0] == 2


def test_put_cell_is_all_or_nothing(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    # make the *last* statement of the transaction (the done mark) fail
    store._connection().execute(
        "CREATE TRIGGER boom BEFORE INSERT ON cells WHEN NEW.cell_id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.DatabaseError, match="boom"):
        store.put_cell("bad", "s", {}, _rows(a=1.0, b=2.0), wall_seconds=0.0)
    assert store.rows() == [] and not store.is_done("bad")
    store.put_cell("good", "s", {}, _rows(a=1.0), wall_seconds=0.0)
    assert store.done_ids() == {"good"} and len(store.rows()) == 1


def test_bad_rows_rejected_before_writing(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    bad_rows = [
        [{"metric": "a", "value": "high"}],
        [{"metric": "a", "value": 1.0, "stdev": 0.1}],
        [{"metric": "a", "value": 1.0}, {"metric": "a", "value": 2.0}],
        [{"metric": "", "value": 1.0}],
        [{"metric": "a", "value": 1.0, "n": 2.5}],
        [{"value": 1.0}],
    ]
    for rows in bad_rows:
        with pytest.raises(ValueError):
            store.put_cell("c", "s", {}, rows, wall_seconds=0.0)
    with pytest.raises(TypeError):
        store.put_cell("c", "s", {}, [("a", 1.0)], wall_seconds=0.0)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.put_cell("c", "s", {}, _rows(a=1.0), wall_seconds=0.0, extra={"x": object()})
    assert store.rows() == [] and store.done_ids() == set()


def test_reading_back(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    store.put_cell("c2", "genuine", {"group": "t3", "model": {"width": 64}, "nus": [1, 2]},
                   [{"metric": "acc", "value": float("nan"), "std": None, "n": None}],
                   wall_seconds=0.5)
    store.put_cell("c1", "genuine", {"group": "r4", "model": {"width": 128}, "nus": [1]},
                   _rows(acc=0.9, si=1.0), wall_seconds=0.5, seed=7)
    store.put_cell("c3", "drift", {"beta": 0.5}, _rows(di=0.1), wall_seconds=0.5)
    assert store.is_done("c1") and not store.is_done("zz")
    assert store.done_ids("genuine") == {"c1", "c2"} and store.done_ids() == {"c1", "c2", "c3"}
    rows = store.rows("genuine")
    assert [(r["cell_id"], r["metric"]) for r in rows] == [("c1", "acc"), ("c1", "si"),
                                                           ("c2", "acc")]
    assert rows[2]["value"] is None  # NaN has no SQLite form: NULL
    assert rows[0]["config"]["model"] == {"width": 128}
    assert rows[0]["invlab_version"]  # provenance recorded
    df = store.to_frame("genuine")
    assert len(df) == 3
    for col in ("cell_id", "study", "metric", "value", "std", "n", "cfg.group",
                "cfg.model.width", "cfg.nus", "git_rev", "invlab_version"):
        assert col in df.columns, col
    assert "config" not in df.columns
    assert set(df["cfg.group"]) == {"r4", "t3"}
    assert df.groupby("cfg.nus").size().to_dict() == {(1,): 2, (1, 2): 1}
    assert store.to_frame("nope").empty
    cells = store.cells("genuine")
    assert [c["cell_id"] for c in cells] == ["c1", "c2"] and cells[0]["seed"] == 7
    assert cells[0]["status"] == "done"
    assert store.delete_cells(["c1"]) == 1
    assert not store.is_done("c1") and all(r["cell_id"] != "c1" for r in store.rows())


def test_dump_is_order_independent_and_excludes_timestamps(tmp_path: Path) -> None:
    items = [(f"c{i}", {"i": i}, _rows(a=i * 1.5, b=-i)) for i in range(5)]
    a = ResultsStore(tmp_path / "a.sqlite")
    b = ResultsStore(tmp_path / "b.sqlite")
    for cid, cfg, rows in items:
        a.put_cell(cid, "s", cfg, rows, wall_seconds=1.0)
    for cid, cfg, rows in reversed(items):
        b.put_cell(cid, "s", cfg, rows[::-1], wall_seconds=9.0)
    da, db = a.dump(), b.dump()
    assert da == db
    assert len(da["results"]) == 10 and len(da["cells"]) == 5
    flat = str(da)
    for ts in ("created_at", "updated_at", "started_at", "finished_at", "wall_seconds"):
        assert ts not in flat
    b.put_cell("c0", "s", {"i": 0}, _rows(a=0.5, b=0), wall_seconds=1.0)
    assert a.dump() != b.dump()


def test_pickle_reopens(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    store.put_cell("c", "s", {}, _rows(a=1.0), wall_seconds=0.0)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.is_done("c") and clone.path == store.path
    with ResultsStore(tmp_path / "r.sqlite") as other:
        assert other.done_ids() == {"c"}


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "multi.sqlite")
    ResultsStore(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=W.write_many, args=(path, k * 60, 60)) for k in range(2)]
    for p in procs:
        p.start()
    reader = ResultsStore(path)
    seen = []
    while any(p.is_alive() for p in procs):  # reading while both write
        seen.append(len(reader.done_ids()))
        time.sleep(0.01)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reader.done_ids() == {f"cell{i:04d}" for i in range(120)}
    assert len(reader.rows()) == 240
    assert seen == sorted(seen)
