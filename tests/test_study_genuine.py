"""The genuine-invariance study end to end on a tiny configuration (real MNIST, 2 epochs).

One tiny study is run per test session (``shared_tiny_study``; test_report.py uses it too).
It runs in its own folder with the relative paths ``out/`` and ``ck/``. The checkpoint
folder is stored with every cell's config but is not part of its cell id (test_hostile.py
checks that spelling it differently reuses every cell).
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
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from invlab import build_report, run_study
from invlab.studies.genuine import preset, run_genuine
from invlab.sweep import ConfigError, ResultsStore

TINY: dict[str, Any] = dict(datasets=("mnist",), groups=("r4",), methods=("wt", "da", "ir"),
                            seeds=(0,), epochs=2, patience=None, n_train=600, n_val=200,
                            n_test_max=200, n_si=20, ig_steps=8, tune_n_val_si=20,
                            tune_max_trials=2)
PRESET = preset("quick", **TINY)
N_CELLS = 4  # study `genuine`: one ν-tuning cell + WT, DA, IR
N_TRIALS = 2  # study `genuine-nu-trials`: one cell per ν trial (tune_max_trials=2)
SUMMARY_KEYS = {"dataset", "group", "method", "metric", "mean", "std", "n_seeds"}
SUMMARY_METRICS = {"accuracy", "logit_l2", "kl", "effective_invariance", "saliency_similarity",
                   "nu", "epochs_run", "val_accuracy"}
REPORT_FILES = ["summary.json", "claims.md", "claims.json", "table1_mnist.md", "table1_mnist.csv", "table1_mnist.json",
                *[f"{stem}.{ext}" for stem in ("fig2_tsne_mnist_r4", "fig3_saliency_mnist_r4",
                                               "nu_search") for ext in ("png", "svg")]]
# Values that measure time, not results: they legitimately differ between two runs.
TIMING_METRICS = {"train_seconds"}
TIMING_EXTRA = {"measure_seconds", "checkpoint_reused"}


@contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def shared_tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root folder of the session's tiny study (``root/out``, ``root/ck``); runs it once.

    Memoized on disk (a marker file in the session's base temp), so test modules that
    import this helper share one run. Callers must not modify ``root``; copy it instead.
    """
    root = tmp_path_factory.getbasetemp() / "tiny_genuine"
    marker = root / "DONE"
    if not marker.exists():
        root.mkdir(exist_ok=True)
        with chdir(root):
            # the cells, provenance.json, then the report (tables, figures, report.html)
            run_study("genuine", {"base": "quick", **TINY}, out="out", checkpoints="ck",
                      workers=1, progress=False)
        marker.write_text("ok")
    return root


@pytest.fixture(scope="module")
def study(mnist_test_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_study(tmp_path_factory)


def comparable(dump: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """A store dump without timing values (see TIMING_METRICS / TIMING_EXTRA)."""
    results = [r for r in dump["results"] if r["metric"] not in TIMING_METRICS]
    cells = []
    for c in dump["cells"]:
        c = dict(c)
        if c.get("extra"):
            c["extra"] = {k: v for k, v in c["extra"].items() if k not in TIMING_EXTRA}
        cells.append(c)
    return {"cells": cells, "results": results}


# --------------------------------------------------------------------------- outputs


def test_summary_rows_and_invariance_of_wt(study: Path) -> None:
    summary = json.loads((study / "out" / "summary.json").read_text())
    assert summary
    for row in summary:
        assert set(row) == SUMMARY_KEYS
        assert row["metric"] in SUMMARY_METRICS
        assert (row["dataset"], row["group"]) == ("mnist", "r4")
        assert row["n_seeds"] == 1
    by = {(r["method"], r["metric"]): r["mean"] for r in summary}
    assert {m for m, _ in by} == {"wt", "da", "ir"}
    for method in ("wt", "da", "ir"):
        for metric in ("accuracy", "logit_l2", "kl", "effective_invariance",
                       "saliency_similarity"):
            assert (method, metric) in by, (method, metric)
        assert 0.0 <= by[(method, "accuracy")] <= 100.0  # stored as %
        assert by[(method, "epochs_run")] == PRESET.epochs
    # WT is invariant by construction: LI ≈ 0, DI ≈ 0, SI ≈ 1
    assert by[("wt", "logit_l2")] < 1e-6
    assert abs(by[("wt", "kl")]) < 1e-6
    assert by[("wt", "saliency_similarity")] > 0.999
    # DA is not
    assert by[("da", "logit_l2")] > 100 * max(by[("wt", "logit_l2")], 1e-9)
    assert by[("da", "saliency_similarity")] < 0.9
    # IR carries its tuned ν, which lies on the half-decade grid
    nu = by[("ir", "nu")]
    assert nu > 0 and abs(2 * __import__("math").log10(nu) % 1) < 1e-9
    assert ("da", "nu") not in by and ("wt", "nu") not in by


def test_store_cells_and_ir_uses_the_tuned_nu(study: Path) -> None:
    store = ResultsStore(study / "out" / "store.sqlite")
    cells = store.cells("genuine")
    assert len(cells) == N_CELLS and all(c["status"] == "done" for c in cells)
    tune = [c for c in cells if "n_val_si" in c["config"]]
    assert len(tune) == 1
    tuned_nu = next(r["value"] for r in store.rows("genuine")
                    if r["cell_id"] == tune[0]["cell_id"] and r["metric"] == "nu")
    trials = tune[0]["extra"]["trials"]
    assert 1 <= len(trials) <= PRESET.tune_max_trials
    assert tuned_nu in [t["nu"] for t in trials]
    # every trial is its own cell in the store: ν, validation SI, validation accuracy, stage
    tcells = store.cells("genuine-nu-trials")
    assert len(tcells) == len(trials) == N_TRIALS
    rows = store.rows("genuine-nu-trials")
    for c in tcells:
        got = {r["metric"]: r["value"] for r in rows if r["cell_id"] == c["cell_id"]}
        assert set(got) == {"nu", "val_si", "val_accuracy"}
        assert c["extra"]["stage"] == "bracket"
        t = next(t for t in trials if t["nu"] == got["nu"])
        assert (t["si"], t["accuracy"]) == (got["val_si"], got["val_accuracy"])
    ir = [c for c in cells if c["config"].get("train", {}).get("method") == "ir"
          and "n_si" in c["config"]]
    assert len(ir) == 1
    # ν is a measured value: the IR cell names its producing (tuning) cell, reads ν from the
    # store when it runs and records it, but ν is not part of its config or id
    assert ir[0]["config"]["tune"] == tune[0]["config"]
    assert ir[0]["config"]["train"]["nu"] == 0.0 and ir[0]["extra"]["tune_cell"] == tune[0]["cell_id"]
    ir_nu = next(r["value"] for r in store.rows("genuine")
                 if r["cell_id"] == ir[0]["cell_id"] and r["metric"] == "nu")
    assert ir_nu == tuned_nu
    # the store records each cell's kind and thread count
    assert {c["kind"] for c in cells} == {"TuneCell", "GenuineCell"}
    assert {c["threads"] for c in cells} == {1}
    # every trained model went through the checkpoint cache
    assert len(list((study / "ck").glob("*.safetensors"))) >= 3


def test_report_files_exist(study: Path) -> None:
    out = study / "out"
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    table = (out / "table1_mnist.md").read_text()
    for method in ("WT", "DA", "IR"):
        assert f"| R4 | {method} |" in table
    assert (out / "config.yaml").is_file()


def test_rerun_is_a_no_op(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from invlab.studies import common, genuine

    root = tmp_path / "copy"
    shutil.copytree(study, root)
    before = ResultsStore(root / "out" / "store.sqlite").dump(include_provenance=True)
    summary = (root / "out" / "summary.json").read_text()

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell ran again")

    from invlab.studies import tuning

    for name in ("run_genuine_cell", "run_tune_cell"):
        monkeypatch.setattr(genuine, name, no_work)
    for name in ("run_trial_cell", "run_tune_cell"):
        monkeypatch.setattr(tuning, name, no_work)
    monkeypatch.setattr(common, "train", no_work)
    with chdir(root):
        run_genuine(PRESET, "out", checkpoints="ck", workers=1, progress=False)
        build_report("out")
    after = ResultsStore(root / "out" / "store.sqlite").dump(include_provenance=True)
    assert after == before
    assert (root / "out" / "summary.json").read_text() == summary


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(("override", "field"), [
    ({"ig_steps": 0}, "ig_steps"), ({"n_si": 0}, "n_si"), ({"methods": ["xx"]}, "methods"),
    ({"seeds": []}, "seeds"), ({"tune_target": 2.0}, "tune_target"),
    ({"groups": ["r5"]}, "group"), ({"n_train": "many"}, "n_train"),
    ({"no_such_key": 1}, "no_such_key"),
])
def test_bad_preset_values_are_rejected_naming_the_field(override: dict[str, Any],
                                                          field: str) -> None:
    with pytest.raises(ValueError, match=field):
        preset("quick", **override)


def test_presets_load_and_override() -> None:
    q = preset("quick", epochs=3, groups=("t3",))
    assert q.epochs == 3 and q.groups == ("t3",) and q.datasets == ("mnist",)
    assert preset("full").seeds == (0, 1, 2, 3)


def test_unknown_preset_name_is_rejected() -> None:
    with pytest.raises(ConfigError, match="nope"):
        preset("nope")


def test_bad_train_values_fail_before_any_work(tmp_path: Path) -> None:
    # the preset passes epochs through; TrainConfig rejects it when the cells are built
    with pytest.raises(ValueError, match="epochs"):
        run_genuine(preset("quick", epochs=0), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "store.sqlite").exists() or not ResultsStore(
        tmp_path / "out" / "store.sqlite").cells()


# --------------------------------------------------------------------------- kill / resume

DRIVER = """
import json, sys
import invlab
invlab.configure_logging()  # the [invlab] lines the test reads (the library prints none by itself)
from invlab.studies.genuine import GenuinePreset, run_genuine
kw = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[1]).items()}
run_genuine(GenuinePreset(**kw), "out", checkpoints="ck", workers=1, progress=False)
"""


def _start(cwd: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(asdict(PRESET))],
                            cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_and_resume_matches_an_uninterrupted_run(study: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "killed"
    cwd.mkdir()
    db = cwd / "out" / "store.sqlite"
    proc = _start(cwd)
    try:
        deadline = time.monotonic() + 300
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    done = len(ResultsStore(db).done_ids("genuine"))
                except sqlite3.Error:  # the child may be creating the schema right now
                    done = 0
                if done >= 1:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, (
            f"the study ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            if proc.stderr else "ended early")
        assert done >= 1, "no cell finished within 300 s"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    partial = ResultsStore(db).done_ids("genuine")
    assert 1 <= len(partial) < N_CELLS + N_TRIALS, "the kill did not interrupt the study"

    resumed = _start(cwd)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-3000:]
    # finished cells were not redone: the resumed run skips exactly the cells the killed run
    # finished, summed over its stages (the tuning cell and the trained cells are separate
    # runner calls, so one kill can leave finished cells in both)
    skips = re.findall(r"study genuine: skip (\d+)/(\d+) done", err.decode())
    assert skips, err.decode()[-3000:]
    assert sum(int(k) for k, _ in skips) == len(partial), err.decode()[-3000:]

    got = ResultsStore(db).dump()
    ref = ResultsStore(study / "out" / "store.sqlite").dump()
    ids = [c["cell_id"] for c in got["cells"]]
    assert len(ids) == len(set(ids)) == N_CELLS + N_TRIALS
    keys = [(r["cell_id"], r["metric"]) for r in got["results"]]
    assert len(keys) == len(set(keys))
    # training is deterministic, so every value matches exactly (timing values excluded)
    assert comparable(got) == comparable(ref)
    assert {r["metric"] for r in got["results"]} >= {"accuracy", "logit_l2", "nu"}
