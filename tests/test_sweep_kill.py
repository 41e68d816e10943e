"""kill -9 a running study at random moments; a rerun must complete it exactly.

The study runs in a subprocess (tests/_sweep_worker_script.py); the test polls the store
from this process (a concurrent WAL reader), sends SIGKILL once some cells are done, checks
that what survived is exactly the uninterrupted result restricted to the done cells (every
done cell complete, no rows without a done mark), reruns, and compares the full dump with an
uninterrupted run's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from invlab.sweep import ResultsStore, run_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sweep_worker_script as W

SCRIPT = Path(W.__file__).resolve()


def _reference(tmp_path: Path, mp: pytest.MonkeyPatch, n: int, mode: str) -> dict:
    """Dump of an uninterrupted run (in this process, without the sleeps)."""
    with mp.context() as m:
        m.setenv("SWEEP_TEST_SLEEP", "0")
        store = ResultsStore(tmp_path / f"ref-{mode}" / "r.sqlite")
        run_study(W.cells(n, mode), W.cell_fn, store, "kill", progress=False)
    return store.dump()


def _restrict(dump: dict, ids: set[str]) -> dict:
    return {"cells": [c for c in dump["cells"] if c["cell_id"] in ids],
            "results": [r for r in dump["results"] if r["cell_id"] in ids]}


def _kill_and_resume(tmp_path: Path, mp: pytest.MonkeyPatch, name: str, *, n: int, mode: str, min_done: int,
                     extra_delay: float, ref: dict, args: tuple[str, ...] = ()) -> int:
    path = tmp_path / name / "r.sqlite"
    reader = ResultsStore(path)  # schema exists before the child starts
    log = path.parent / "stderr.txt"
    env = dict(os.environ)
    env.pop("SWEEP_TEST_SLEEP", None)  # slow cells sleep 0.05-0.1 s
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(path), "--n", str(n), "--mode", mode, *args],
            stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(reader.done_ids()) < min_done:
            assert proc.poll() is None, f"study exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no progress:\n{log.read_text()}"
            time.sleep(0.005)
        time.sleep(extra_delay)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and any pool workers
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()

    # what survived the kill: complete cells only, identical to the uninterrupted run
    reader.close()
    survived = ResultsStore(path)
    done = survived.done_ids()
    assert min_done <= len(done) < n, (len(done), "kill came too late to test anything")
    assert {r["cell_id"] for r in survived.rows()} <= done, "rows without a done mark"
    assert survived.dump() == _restrict(ref, done)

    # resume: only the missing cells run, and the result equals the uninterrupted run
    with mp.context() as m:
        m.setenv("SWEEP_TEST_SLEEP", "0")
        s = run_study(W.cells(n, mode), W.cell_fn, survived, "kill", progress=False)
    assert (s.skipped, s.ran, s.failed) == (len(done), n - len(done), ())
    final = survived.dump()
    assert final == ref
    keys = [(r["cell_id"], r["metric"]) for r in final["results"]]
    assert len(keys) == len(set(keys)) == n * len(W.metric_names(mode))
    return len(done)


def test_kill9_between_cells_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ref = _reference(tmp_path, monkeypatch, 30, "slow")
    for trial in range(2):
        k, delay = rng.randint(2, 18), rng.uniform(0, 0.1)
        try:
            _kill_and_resume(tmp_path, monkeypatch, f"t{trial}", n=30, mode="slow", min_done=k,
                             extra_delay=delay, ref=ref)
        except AssertionError as e:
            raise AssertionError(f"seed={seed} trial={trial} k={k} delay={delay:.3f}: {e}") \
                from e


def test_kill9_during_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No sleeping: the study spends its time computing and committing 40-row cells, so
    the kill lands inside write transactions as often as not."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # 400 cells take ~0.5 s on a quiet machine: keep the kill well inside the run
    n = 1500
    ref = _reference(tmp_path, monkeypatch, n, "fast")
    for trial in range(2):
        delay = rng.uniform(0, 0.05)
        try:
            _kill_and_resume(tmp_path, monkeypatch, f"f{trial}", n=n, mode="fast", min_done=1,
                             extra_delay=delay, ref=ref)
        except AssertionError as e:
            raise AssertionError(f"seed={seed} trial={trial} delay={delay:.3f}: {e}") from e


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups")
def test_kill9_process_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _reference(tmp_path, monkeypatch, 30, "slow")
    _kill_and_resume(tmp_path, monkeypatch, "p", n=30, mode="slow", min_done=random.randint(2, 12),
                     extra_delay=random.uniform(0, 0.1), ref=ref,
                     args=("--executor", "process", "--workers", "2"))
