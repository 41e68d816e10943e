"""The Ray executor on a real local Ray instance (``ray.init(num_cpus=2)``, once per module).

Marked ``ray`` and ``slow`` (Ray takes 20-60 s to start on a loaded 2-core machine): run with
``make test-ray`` (installs the ``ray`` extra) or ``make test-slow``. Skipped when Ray is not
installed.

- a toy study through Ray stores exactly what the serial executor stores; a failing cell is
  run twice (retried once) and then reported;
- the tiny genuine study of ``test_study_genuine.py`` (``PRESET``: MNIST, r4, WT/DA/IR, 2
  epochs, 4 cells — the ``--quick`` preset takes too long here) through Ray gives a store
  bit-identical to the serial run's (timing values excluded);
- ``kill -9`` of a driver running that study on the Ray cluster, then a rerun, completes it
  with the same store.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'invlab[ray]' "
                                        "(make test-ray does)")

from invlab.studies.genuine import run_genuine  # noqa: E402
from invlab.sweep import ResultsStore, StudyError, run_study  # noqa: E402
from invlab.sweep.ray_executor import RayExecutor  # noqa: E402

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import _ray_cells as C  # noqa: E402
import _sweep_worker_script as W  # noqa: E402
from test_study_genuine import (  # noqa: E402
    N_CELLS,
    N_TRIALS,
    PRESET,
    chdir,
    comparable,
    shared_tiny_study,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]


def _same(dump: dict) -> dict:
    """``comparable(dump)``: the store without timing values (the relative checkpoint folder
    ``ck`` the cells record is the same in both runs)."""
    return comparable(dump)


@pytest.fixture(scope="module")
def cluster(mnist_test_dir: Path) -> Iterator[str]:
    """A local Ray instance for the module; yields its GCS address. Workers import the test
    helpers through PYTHONPATH and find the data through $INVLAB_DATA, both inherited from
    this process's environment: ``mnist_test_dir`` first, because on a fresh clone it points
    $INVLAB_DATA at the bundled subset, and workers started before would not see it."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), *([old] if old else [])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_toy_study_matches_serial_and_failures_are_retried_once(cluster: str,
                                                                tmp_path: Path) -> None:
    ref = ResultsStore(tmp_path / "serial" / "r.sqlite")
    run_study(W.cells(6), W.cell_fn, ref, "kill", progress=False)
    got = ResultsStore(tmp_path / "ray" / "r.sqlite")
    s = run_study(W.cells(6), W.cell_fn, got, "kill", executor=RayExecutor(2), progress=False)
    assert s.ran == 6
    assert got.dump()["results"] == ref.dump()["results"]

    store = ResultsStore(tmp_path / "fail" / "r.sqlite")
    with pytest.raises(StudyError, match="boom in cell 3") as e:
        run_study(W.cells(5), C.record_then_fail, store, "kill", executor="ray", progress=False)
    (cid,) = e.value.failures
    assert W.calls_of(store.path.parent, cid) == 2  # retried once, then reported
    assert len(store.done_ids()) == 4 and cid not in store.done_ids()
    assert all(W.calls_of(store.path.parent, c) == 1 for c in store.done_ids())


def test_cells_read_earlier_results_through_the_driver_node(cluster: str,
                                                             tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s" / "r.sqlite")
    ex = RayExecutor(2, address=cluster)
    run_study([C.Producer(i) for i in range(3)], C.produce, store, "p", executor=ex,
              progress=False)
    run_study([C.Consumer(i) for i in range(3)], C.consume, store, "c", executor=ex,
              progress=False)
    rows = {(r["cell_id"], r["metric"]): r["value"] for r in store.dump()["results"]}
    from invlab.sweep import cell_id

    for i in range(3):
        assert rows[(cell_id(C.Consumer(i)), "twice")] == 20.0 * i
        assert rows[(cell_id(C.Consumer(i)), "via_reader")] == 1.0  # not the SQLite file


def test_retry_runs_a_failing_cell_twice(cluster: str, tmp_path: Path) -> None:
    from invlab.sweep.ray_executor import _call_with_retry

    calls = tmp_path / "calls"

    def flaky(x: int) -> int:
        with open(calls, "a") as f:
            f.write("x")
        if len(calls.read_text()) == 1:
            raise RuntimeError("transient")
        return x + 1

    assert _call_with_retry(flaky, 1) == 2 and calls.read_text() == "xx"


def test_tiny_genuine_study_through_ray_is_bit_identical(
        cluster: str, mnist_test_dir: Path, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    serial = shared_tiny_study(tmp_path_factory)
    with chdir(tmp_path):
        run_genuine(PRESET, "out", checkpoints="ck", progress=False,
                    executor=RayExecutor(2, address=cluster))
    got = ResultsStore(tmp_path / "out" / "store.sqlite").dump()
    ref = ResultsStore(serial / "out" / "store.sqlite").dump()
    assert len(got["cells"]) == len(ref["cells"]) >= N_CELLS  # + the nu-trial cells
    assert _same(got) == _same(ref)


DRIVER = """
import json, sys
import invlab
invlab.configure_logging()  # the [invlab] lines the test reads (the library prints none by itself)
from invlab.studies.genuine import GenuinePreset, run_genuine
from invlab.sweep.ray_executor import RayExecutor
kw = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[1]).items()}
run_genuine(GenuinePreset(**kw), "out", checkpoints="ck", progress=False,
            executor=RayExecutor(2, address=sys.argv[2]))
"""


def _start(cwd: Path, address: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(asdict(PRESET)), address],
                            cwd=cwd, env=dict(os.environ), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_done(proc: subprocess.Popen[bytes], db: Path, timeout: float) -> int:
    deadline, done = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and proc.poll() is None and done < 1:
        if db.exists():
            try:
                done = len(ResultsStore(db).done_ids())  # any cell: trials finish first
            except sqlite3.Error:  # the driver may be creating the schema right now
                done = 0
        time.sleep(0.2)
    return done


def test_kill_the_driver_and_resume(cluster: str, mnist_test_dir: Path, tmp_path: Path,
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    serial = shared_tiny_study(tmp_path_factory)
    db = tmp_path / "out" / "store.sqlite"
    proc = _start(tmp_path, cluster)
    try:
        done = _wait_for_done(proc, db, 600)
        assert proc.poll() is None, (proc.stderr.read().decode()[-3000:] if proc.stderr
                                     else "the driver ended early")
        assert done >= 1, "no cell finished within 600 s"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: the cluster lives on
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # the trials, the tuning cell and the cells share one pool (run_dynamic), so count all
    partial = ResultsStore(db).done_ids()
    assert 1 <= len(partial) < N_CELLS + N_TRIALS, "the kill did not interrupt the study"

    resumed = _start(tmp_path, cluster)
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err.decode()[-3000:]
    # finished cells were not redone: the resumed run skips exactly them (one log line per
    # store study: `genuine` and `genuine-nu-trials`)
    skips = re.findall(r"study genuine(?:-nu-trials)?: skip (\d+)/(\d+) done", err.decode())
    assert skips and sum(int(k) for k, _ in skips) == len(partial), err.decode()[-3000:]
    got = ResultsStore(db).dump()
    ref = ResultsStore(serial / "out" / "store.sqlite").dump()
    assert _same(got) == _same(ref)
