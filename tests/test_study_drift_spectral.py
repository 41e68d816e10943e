"""Drift (M23 Fig. 4) and spectral (M23 Fig. 5) studies on tiny presets of real data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from invlab import build_report
from invlab.data import load_source

TINY = dict(groups=("r4",), seeds=(0,), epochs=2, n_train=600, n_val=200, n_test_max=200,
            tune_n_val_si=10, tune_max_trials=1, n_si=10, ig_steps=4)


@pytest.fixture(scope="module")
def fashion_available() -> None:
    try:
        load_source("fashion-mnist")
    except ValueError as e:
        pytest.skip(f"Fashion-MNIST unavailable: {e}")


@pytest.fixture(scope="module")
def drift_dir(tmp_path_factory, mnist_test_dir, fashion_available) -> Path:  # type: ignore[no-untyped-def]
    from invlab.studies.drift import preset, run_drift

    out = tmp_path_factory.mktemp("drift")
    p = preset("quick", betas=(0.0, 0.5, 1.0), n_si=5, ig_steps=4)
    run_drift(p, out / "res", str(out / "ck"), progress=False, genuine_overrides=TINY)
    build_report(out / "res")  # running and reporting are two steps
    return out / "res"


def test_drift_summary_rows_and_figure(drift_dir: Path) -> None:
    rows = json.loads((drift_dir / "summary.json").read_text())
    assert rows and all(set(r) == {"group", "method", "mode", "beta", "metric", "mean", "std",
                                   "n_seeds"} for r in rows)
    assert {r["metric"] for r in rows} >= {"kl", "accuracy_ratio", "logit_l2",
                                           "saliency_similarity"}
    assert {r["mode"] for r in rows} == {"blend", "mixture"}
    assert {r["beta"] for r in rows} == {0.0, 0.5, 1.0}
    for mode in ("blend", "mixture"):
        assert (drift_dir / f"fig4_drift_{mode}.png").stat().st_size > 1000
        assert (drift_dir / f"drift_{mode}_kl.md").exists()


def test_drift_beta0_ratio_is_one_and_wt_stays_invariant(drift_dir: Path) -> None:
    rows = json.loads((drift_dir / "summary.json").read_text())
    for r in rows:
        if r["metric"] == "accuracy_ratio" and r["beta"] == 0.0:
            assert r["mean"] == pytest.approx(1.0)
        if r["method"] == "wt" and r["metric"] in ("kl", "logit_l2"):
            assert r["mean"] < 1e-6, r  # invariant by construction, on any input
    da_kl = {r["beta"]: r["mean"] for r in rows if r["method"] == "da" and r["metric"] == "kl"
             and r["mode"] == "blend"}
    # an MLP trained by augmentation is not invariant by construction: off-distribution its
    # DI is clearly above float noise (WT's is ~1e-9), even after the tiny 2-epoch training
    assert da_kl[1.0] > 1e-6


def test_drifted_blend_and_mixture_are_what_they_claim(mnist_test_dir, fashion_available) -> None:  # type: ignore[no-untyped-def]
    from invlab.data import DataConfig
    from invlab.studies.drift import DriftCell, drifted
    from invlab.train import TrainConfig

    d1 = DataConfig(n_train=600, n_val=200, n_test_max=200)
    d2 = DataConfig(dataset="fashion-mnist", n_train=600, n_val=200, n_test_max=200)
    cell = DriftCell(d1, TrainConfig(group="r4"), d2, "blend", 0.0, 5, 4, 0, "unused")
    xb, yb, x1, y1 = drifted(cell)
    assert torch.allclose(xb, x1, atol=1e-5) and torch.equal(yb, y1)
    x_half = drifted(DriftCell(d1, TrainConfig(group="r4"), d2, "blend", 0.5, 5, 4, 0, "u"))[0]
    x_full = drifted(DriftCell(d1, TrainConfig(group="r4"), d2, "blend", 1.0, 5, 4, 0, "u"))[0]
    assert torch.allclose(x_half, 0.5 * (x1 + x_full), atol=1e-5)  # linear in pixel space
    xm, ym, _, _ = drifted(DriftCell(d1, TrainConfig(group="r4"), d2, "mixture", 0.3, 5, 4, 0,
                                     "u"))
    changed = (xm != x1).flatten(1).any(1)
    assert int(changed.sum()) <= round(0.3 * len(y1)) and int(changed.sum()) > 0.2 * len(y1)


def test_drift_bad_preset_values_name_the_field() -> None:
    from invlab.studies.drift import preset
    from invlab.sweep import ConfigError

    with pytest.raises(ConfigError, match="modes"):
        preset("quick", modes=("sideways",))
    with pytest.raises(ConfigError, match="betas"):
        preset("quick", betas=(1.5,))


def test_spectral_tiny(tmp_path: Path, mnist_test_dir) -> None:  # type: ignore[no-untyped-def]
    from invlab.studies.spectral import preset, run_spectral

    p = preset("quick", regularizers=("kl", "logit_l2_normalized"), n_eval=16)
    out = run_spectral(p, tmp_path / "res", str(tmp_path / "ck"), progress=False,
                       genuine_overrides=TINY)
    build_report(out)  # running and reporting are two steps
    rows = json.loads((out / "summary.json").read_text())
    assert rows and all(set(r) == {"group", "method", "regularizer", "metric", "mean", "std",
                                   "n_seeds"} for r in rows)
    regs = {r["regularizer"] for r in rows if r["metric"] == "sigma_max"}
    assert regs == {"none", "kl", "logit_l2_normalized"}
    assert all(r["mean"] > 0 for r in rows if r["metric"] == "sigma_max")
    assert {r["regularizer"] for r in rows if r["metric"] == "nu"} == {"kl",
                                                                         "logit_l2_normalized"}
    assert (out / "fig5_spectral.png").stat().st_size > 1000
    assert "σ_max" in (out / "table_spectral.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("study", ["genuine", "drift", "spectral"])
def test_quick_presets_finish_under_ten_minutes(study: str, tmp_path: Path, mnist_test_dir,
                                                fashion_available) -> None:  # type: ignore[no-untyped-def]
    from invlab.cli import main

    t0 = time.perf_counter()
    assert main(["study", study, "--quick", "--out", str(tmp_path / study), "--checkpoints",
                 str(tmp_path / "ck"), "--no-progress"]) == 0
    assert time.perf_counter() - t0 < 600
    assert (tmp_path / study / "summary.json").exists()
