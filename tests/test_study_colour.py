"""Studies on colour data and `--device`: `invlab study origins --models FILE --data RGB.npz`
and `invlab study generalization --models FILE --test-set NAME=RGB.npz` end to end; the
exactly invariant GroupPooled RGB model comes out invariant; the device is recorded in the
store, and stores written before the column existed still resume."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from invlab.cli import main

MODELS = textwrap.dedent('''
    import torch
    from torch import nn
    import invlab


    def _cnn():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))


    def models():
        norm = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.25, 0.25]}
        yield "cnn_rgb", _cnn(), norm
        yield "pooled_rgb", invlab.GroupPooled(_cnn(), "r4"), norm
''')


@pytest.fixture()
def colour(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 3, 40)
    np.savez(tmp_path / "rgb.npz", images=x, labels=y)
    np.savez(tmp_path / "rgb_small.npz", images=x[:24], labels=y[:24])
    (tmp_path / "models.py").write_text(MODELS)
    return tmp_path


def _rows(store: Path, metric_like: str) -> list[tuple[str, str, float]]:
    with sqlite3.connect(store) as c:
        return c.execute("SELECT c.config, r.metric, r.value FROM results r JOIN cells c ON "
                         "c.cell_id = r.cell_id WHERE r.metric LIKE ?", (metric_like,)).fetchall()


def _devices(store: Path) -> set[str]:
    with sqlite3.connect(store) as c:
        return {r[0] for r in c.execute("SELECT device FROM cells")}


@pytest.fixture(autouse=True)
def _keep_env() -> None:
    before = os.environ.get("INVLAB_DEVICE")
    yield
    if before is None:
        os.environ.pop("INVLAB_DEVICE", None)
    else:
        os.environ["INVLAB_DEVICE"] = before


def test_generalization_models_on_rgb_test_set(colour: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    monkeypatch.chdir(colour)
    out = colour / "g"
    assert main(["study", "generalization", "--models", "models.py", "--test-set",
                 "rgbset=rgb_small.npz", "--transform", "grayscale", "--device", "cpu",
                 "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out / "store.sqlite", "rgbset|%")
    by = {(json.loads(cfg)["name"], m.split("|")[1]): v for cfg, m, v in rows}
    # GroupPooled over r4: exactly invariant to the rotations the study measures
    assert by[("pooled_rgb", "neg_kl")] > -1e-6 and by[("pooled_rgb", "neg_li")] > -1e-6
    assert by[("pooled_rgb", "agreement")] == 1.0
    assert by[("cnn_rgb", "neg_li")] < -1e-6  # the plain CNN is not (the test can fail)
    assert ("cnn_rgb", "ei_grayscale") in by  # the colour transform ran on RGB
    assert _devices(out / "store.sqlite") == {"cpu"}


@pytest.mark.slow
def test_origins_models_on_rgb_data(colour: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B21 profiles of both models on RGB data (~15 s of CPU; slow on a loaded machine):
    the pooled model's representation is exactly invariant at 90° and 180°."""
    monkeypatch.chdir(colour)
    out = colour / "o"
    assert main(["study", "origins", "--quick", "--models", "models.py", "--data", "rgb.npz",
                 "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out / "store.sqlite", "ri:mean:penultimate:rotate:%")
    # rotate's magnitudes: 0, -27, 45, -54, -81, 90, -108, -135, 135, 180 (index 5 = 90°)
    pooled = {m: v for cfg, m, v in rows if json.loads(cfg)["model"]["name"] == "pooled_rgb"
              and not json.loads(cfg)["model"]["untrained"]}
    # RI = 1 - d(z, z_T) / d(z, z_T∘π): d(z, z_T) is float noise (the features are
    # invariant to 1e-6, test_natural_images), divided by a small d(z, z_T∘π) of an
    # untrained net; the stored statistics are float16-rounded per sample
    assert abs(pooled["ri:mean:penultimate:rotate:5"] - 1) <= 1e-3
    assert abs(pooled["ri:mean:penultimate:rotate:9"] - 1) <= 1e-3
    assert pooled["ri:mean:penultimate:rotate:2"] < 0.9  # 45°: not a group element
    assert _devices(out / "store.sqlite") == {"cpu"}


def test_device_error_before_any_work(colour: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(colour)
    code = main(["study", "generalization", "--models", "models.py", "--test-set",
                 "rgbset=rgb_small.npz", "--device", "cuda", "--out", "g2", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and "CUDA is not available" in err[-1]
    assert not (colour / "g2").exists()


def test_store_without_device_column_resumes(tmp_path: Path) -> None:
    """A store written before the device column: opened, migrated, new cells get a device,
    old cells keep NULL (they ran on the CPU)."""
    from invlab.sweep.store import ResultsStore

    path = tmp_path / "store.sqlite"
    with ResultsStore(path) as s:
        s.put_cell("old", "st", {"a": 1}, [{"metric": "m", "value": 1.0}], 1.0, threads=1)
    with sqlite3.connect(path) as c:  # back to the earlier schema
        c.execute("ALTER TABLE cells DROP COLUMN device")
        assert "device" not in {r[1] for r in c.execute("PRAGMA table_info(cells)")}
    with ResultsStore(path) as s:
        assert s.is_done("old")
        s.put_cell("new", "st", {"a": 2}, [{"metric": "m", "value": 2.0}], 1.0, threads=1,
                   device="cuda:0")
        cells = {c["cell_id"]: c for c in s.cells()}
    assert cells["old"]["device"] is None and cells["new"]["device"] == "cuda:0"


def test_train_device_argument_cpu_is_identical() -> None:
    from invlab.data.transforming import DataConfig
    from invlab.studies.common import get_data
    from invlab.train.loop import TrainConfig, train

    data = get_data(DataConfig(dataset="mnist", n_train=256, n_val=64, n_test_max=64), "r4")
    cfg = TrainConfig(method="da", group="r4", model="mlp5", epochs=1, batch_size=64)
    a = train(cfg, data, progress=False)
    b = train(cfg, data, progress=False, device="cpu")
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="expected cpu, cuda"):
        train(cfg, data, progress=False, device="tpu")
