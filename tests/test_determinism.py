"""Same config, same numbers: results do not depend on the executor or the worker count.

Every cell and every training run uses a fixed number of intra-op threads (``threads``,
default 1, part of each cell id and checkpoint key) set by the runner before the cell runs,
and the normalization statistics are exact integer sums, so the serial executor and a
process pool of any size give bit-identical stores and checkpoints.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from invlab.studies.genuine import run_genuine
from invlab.sweep import ResultsStore
from test_study_genuine import PRESET, chdir, comparable, shared_tiny_study


def _tensors(ck: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(str(p)) for p in sorted(ck.glob("*.safetensors"))}


def assert_same_results(a: Path, b: Path, all_checkpoints: bool = True) -> None:
    """Stores equal row by row (exact floats, timing excluded); checkpoints equal tensor by
    tensor, byte for byte (those of ``b``, which must be all of ``a``'s unless
    ``all_checkpoints=False``)."""
    da = comparable(ResultsStore(a / "out" / "store.sqlite").dump())
    db = comparable(ResultsStore(b / "out" / "store.sqlite").dump())
    assert [c["cell_id"] for c in da["cells"]] == [c["cell_id"] for c in db["cells"]]
    for ra, rb in zip(da["results"], db["results"], strict=True):
        assert ra == rb, (ra, rb)  # == on floats: bit-identical values
    assert da == db
    ta, tb = _tensors(a / "ck"), _tensors(b / "ck")
    assert tb and (ta.keys() == tb.keys() if all_checkpoints else tb.keys() <= ta.keys())
    for name in tb:
        assert ta[name].keys() == tb[name].keys()
        for k in ta[name]:
            assert ta[name][k].numpy().tobytes() == tb[name][k].numpy().tobytes(), (name, k)


TINIER = replace(PRESET, methods=("da", "ir"), epochs=1, n_train=300, n_val=100,
                 n_test_max=100, n_si=8, ig_steps=4, tune_n_val_si=8, tune_max_trials=1)


def test_process_pool_with_two_workers_equals_serial(mnist_test_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name, workers in (("serial", 1), ("pool", 2)):
        (tmp_path / name).mkdir()
        with chdir(tmp_path / name):
            run_genuine(TINIER, "out", checkpoints="ck", workers=workers, progress=False)
    assert_same_results(tmp_path / "serial", tmp_path / "pool")
    cells = ResultsStore(tmp_path / "pool" / "out" / "store.sqlite").cells()
    assert len(cells) == 4 and {c["threads"] for c in cells} == {1}  # tune, 1 ν trial, DA, IR


@pytest.mark.slow
def test_resuming_with_another_worker_count_mixes_nothing(
        mnist_test_dir: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Half the cells from a serial run, the rest from a pool: still the serial result."""
    serial = shared_tiny_study(tmp_path_factory)
    shutil.copytree(serial, tmp_path / "r")
    store = ResultsStore(tmp_path / "r" / "out" / "store.sqlite")
    ir = [c["cell_id"] for c in store.cells() if c["kind"] == "GenuineCell"
          and c["config"]["train"]["method"] in ("ir", "da")]
    store.delete_cells(ir)
    for p in (tmp_path / "r" / "ck").glob("*.safetensors"):  # retrain DA and IR in the pool
        p.unlink()
    with chdir(tmp_path / "r"):
        run_genuine(PRESET, "out", checkpoints="ck", workers=2, progress=False)
    assert_same_results(serial, tmp_path / "r", all_checkpoints=False)
    assert len(list((tmp_path / "r" / "ck").glob("*.safetensors"))) == 2


def test_threads_are_part_of_the_identity(mnist_test_dir: Path) -> None:
    from invlab.studies.common import model_key
    from invlab.studies.genuine import genuine_cells
    from invlab.sweep import cell_id

    one = genuine_cells(PRESET, "ck")
    two = genuine_cells(replace(PRESET, threads=2), "ck")
    assert all(c.threads == 1 for c in one) and all(c.threads == 2 for c in two)
    assert not {cell_id(c) for c in one} & {cell_id(c) for c in two}
    assert model_key(one[0].train, one[0].data) != model_key(two[0].train, two[0].data)


@pytest.mark.slow
def test_quick_genuine_preset_serial_equals_pool(mnist_test_dir: Path, tmp_path: Path) -> None:
    """``invlab study genuine --quick``: serial and ``--workers 2`` give identical results."""
    from invlab.cli import main

    for name, workers in (("serial", "1"), ("pool", "2")):
        (tmp_path / name).mkdir()
        with chdir(tmp_path / name):  # same relative paths: the stored configs are equal too
            assert main(["study", "genuine", "--quick", "--out", "out", "--checkpoints", "ck",
                         "--workers", workers, "--no-progress"]) == 0
    assert_same_results(tmp_path / "serial", tmp_path / "pool")
