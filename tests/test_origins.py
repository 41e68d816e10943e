"""Origins study (B21): profile vs a per-image brute force, derangement, augmentations, the
training hook, bring-your-own models and folders, and the quick preset end to end."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invlab.factors import B21_FAMILIES
from invlab.metrics.functional import derangement
from invlab.models import create_model
from invlab.studies import origins as O
from invlab.studies.origins import (
    PENULTIMATE,
    ModelSpec,
    profile,
    profile_stats,
    reinitialized,
)
from invlab.studies.origins_augment import REGIMES, AugConfig, augment_pixels, make_augment
from invlab.transforms import create_transform

NORM = {"mean": [0.3], "std": [0.35]}


def _brute_force(model: nn.Module, x: torch.Tensor, name: str, seed: int) -> torch.Tensor:
    """B21's score one image at a time (as the official code): ``[N, M]``."""
    fam = create_transform(name)
    perm = derangement(x.shape[0], torch.Generator().manual_seed(seed))
    mean, std = NORM["mean"][0], NORM["std"][0]

    def phi(img: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.forward_features((img - mean) / std)[0]

    out = torch.ones(x.shape[0], len(fam.members), dtype=torch.float64)
    for mi, mag in enumerate(fam.members[1:], start=1):
        t = fam.at(mag)
        zt = [phi(t(x[i:i + 1])) for i in range(x.shape[0])]
        for i in range(x.shape[0]):
            z = phi(x[i:i + 1])
            d_same = 1 - F.cosine_similarity(z, zt[i], 0)
            d_other = 1 - F.cosine_similarity(z, zt[int(perm[i])], 0)
            out[i, mi] = 1 - d_same / d_other
    return out


@pytest.mark.parametrize("name", ["rotate", "translate_x", "posterize", "contrast_down"])
def test_profile_matches_a_per_image_brute_force(name: str) -> None:
    torch.manual_seed(0)
    model = create_model("cnn_small", in_shape=[1, 28, 28], num_classes=10, width=4)
    model = model.double().eval()  # float64 end to end: the ratio amplifies float32 error
    x = torch.rand(12, 1, 28, 28, dtype=torch.float64)
    got = profile(model, x, NORM, [PENULTIMATE], seed=3, transforms=(name,))[PENULTIMATE][0]
    ref = _brute_force(model, x, name, seed=3 * 1000)  # family j uses seed*1000 + j
    assert got.shape == (12, 10)
    assert torch.allclose(got.double(), ref, atol=1e-5), (got - ref).abs().max()


def test_inner_layer_profile_keeps_the_penultimate_values() -> None:
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=[1, 28, 28], num_classes=10).eval()
    x = torch.rand(16, 1, 28, 28)
    fams = ("rotate", "brightness_up")
    one = profile(model, x, NORM, [PENULTIMATE], transforms=fams)
    two = profile(model, x, NORM, [PENULTIMATE, "hidden.1"], transforms=fams)
    assert torch.allclose(one[PENULTIMATE], two[PENULTIMATE], atol=1e-5)
    assert two["hidden.1"].shape == (2, 16, 10)
    assert not torch.allclose(two["hidden.1"], two[PENULTIMATE])


def test_profile_stats_are_the_quantiles() -> None:
    v = torch.rand(2, 101, 3)
    st = profile_stats(v)
    assert st.shape == (2, 3, 6)
    assert st[1, 2, 0].item() == pytest.approx(float(np.median(v[1, :, 2].numpy())), abs=1e-6)
    assert st[0, 1, 1].item() == pytest.approx(float(np.quantile(v[0, :, 1].numpy(), 0.25)),
                                               abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_derangement_has_no_fixed_points_and_is_seeded(n: int) -> None:
    for seed in range(5):
        p = derangement(n, torch.Generator().manual_seed(seed))
        assert sorted(p.tolist()) == list(range(n))
        assert not (p == torch.arange(n)).any()
        assert torch.equal(p, derangement(n, torch.Generator().manual_seed(seed)))
    if n > 3:
        assert not torch.equal(derangement(n, torch.Generator().manual_seed(0)),
                               derangement(n, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


@pytest.mark.parametrize("regime", REGIMES)
def test_augmentations_are_seeded_and_shape_preserving(regime: str) -> None:
    x = torch.rand(32, 1, 28, 28)
    a = augment_pixels(x, regime, AugConfig(), torch.Generator().manual_seed(0))
    b = augment_pixels(x, regime, AugConfig(), torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
    if regime == "none":
        assert torch.equal(a, x) and make_augment(regime, AugConfig(), 0.3, 0.3) is None
    else:
        assert not torch.allclose(a, x)


def _draws(n: int, seed: int, k: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(n, generator=gen, dtype=torch.float64) for _ in range(k)]


def test_shift_and_scale_regimes_equal_the_library_transforms_applied_in_turn() -> None:
    """translate = translate_x then translate_y, zoom = zoom_in / zoom_out, with the same
    draws (bilinear shifts are separable); translate_zoom is the one composed affine."""
    cfg, n = AugConfig(), 16
    x = torch.rand(n, 1, 28, 28)
    lo, hi = math.log(cfg.zoom_min), math.log(cfg.zoom_max)

    (u,) = _draws(n, 3, 1)
    s = torch.exp(lo + (hi - lo) * u)
    want = create_transform("zoom_out").sample(
        create_transform("zoom_in").sample(x, magnitudes=s.clamp(min=1.0)),
        magnitudes=s.clamp(max=1.0))
    got = augment_pixels(x, "zoom", cfg, torch.Generator().manual_seed(3))
    assert torch.allclose(got, want, atol=1e-5)

    tx, ty = (-cfg.translate + 2 * cfg.translate * u for u in _draws(n, 4, 2))
    want = create_transform("translate_y").sample(
        create_transform("translate_x").sample(x, magnitudes=tx), magnitudes=ty)
    got = augment_pixels(x, "translate", cfg, torch.Generator().manual_seed(4))
    assert torch.allclose(got, want, atol=1e-5)

    # zoom then shift, one resampling: scipy's order-1 affine_transform (zero fill) reads
    # output pixel q at c + (q - c - (tx W, ty H)) / s, c the centre (rows = y, cols = x)
    from scipy import ndimage

    u, vx, vy = _draws(n, 5, 3)
    s = torch.exp(lo + (hi - lo) * u)
    tx, ty = (-cfg.translate + 2 * cfg.translate * v for v in (vx, vy))
    x = torch.rand(n, 1, 28, 30, dtype=torch.float64)  # non-square: W and H apart
    got = augment_pixels(x, "translate_zoom", cfg, torch.Generator().manual_seed(5))
    c = torch.tensor([13.5, 14.5], dtype=torch.float64)  # (row, col) centre
    for i in range(n):
        shift = torch.stack([ty[i] * 28, tx[i] * 30])
        ref = ndimage.affine_transform(x[i, 0].numpy(), [1 / float(s[i])] * 2,
                                       offset=(c - (c + shift) / s[i]).numpy(), order=1,
                                       mode="grid-constant", cval=0.0)
        assert np.allclose(got[i, 0].numpy(), ref, atol=1e-9), i


def test_rrc_with_the_full_crop_is_the_identity() -> None:
    x = torch.rand(8, 1, 28, 28)
    cfg = AugConfig(rrc_min_area=1.0)
    y = augment_pixels(x, "rrc", cfg, torch.Generator().manual_seed(0))
    # aspect ratio != 1 still stretches; area 1 with w, h clamped to 1 is the full image
    assert y.shape == x.shape
    with pytest.raises(ValueError, match="unknown augmentation regime 'flip'"):
        augment_pixels(x, "flip", cfg, torch.Generator())


def test_train_calls_the_augment_hook() -> None:
    from invlab.studies.origins import Splits, _train_config, _transforming
    from invlab.train import train

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 3, (64,), generator=g)
    s = Splits(x, y, x[:16], y[:16], x[:16], y[:16], 0.5, 0.3, 3, {})
    calls: list[int] = []

    def aug(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls.append(xb.shape[0])
        return xb.flip(-1)

    spec = ModelSpec("mlp5", "translate", 0, 2, 32, 1e-3, None, 1, AugConfig())
    r1 = train(_train_config(spec), _transforming(s), progress=False, augment=aug)
    assert calls == [32, 32, 32, 32]
    r0 = train(_train_config(spec), _transforming(s), progress=False)
    assert not torch.equal(r0.model.head.weight, r1.model.head.weight)


def test_reinitialized_changes_weights_deterministically() -> None:
    m = create_model("mlp5", in_shape=[1, 28, 28], num_classes=10)
    a, b = reinitialized(m, 0), reinitialized(m, 0)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, m.head.weight)


# ------------------------------------------------------------------ bring your own

MODELS_PY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.body(x))


def models():
    torch.manual_seed(0)
    yield "tiny_a", Tiny(), {"mean": [0.5], "std": [0.25]}
    yield "tiny_b", nn.Sequential(nn.Flatten(), nn.Linear(144, 8), nn.ReLU(),
                                  nn.Linear(8, 3)), {"mean": [0.5], "std": [0.25]}
'''


def _image_folder(root: Path, n_per_class: int = 8) -> Path:
    from PIL import Image

    g = np.random.default_rng(0)
    for c in range(3):
        (root / str(c)).mkdir(parents=True)
        for i in range(n_per_class):
            img = (g.random((12, 12)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(img, mode="L").save(root / str(c) / f"{i}.png")
    return root


@pytest.mark.slow
def test_bring_your_own_models_and_image_folder(tmp_path: Path) -> None:
    from invlab import build_report
    from invlab.studies.origins import preset, run_origins

    mf = tmp_path / "my_models.py"
    mf.write_text(MODELS_PY)
    folder = _image_folder(tmp_path / "imgs")
    p = preset("quick", n_profile=16, n_pairs=4, n_train=0, n_val=0)
    out = run_origins(p, tmp_path / "out", workers=1, progress=False, models_file=str(mf),
                      data=str(folder))
    build_report(out)  # running and reporting are two steps
    s = json.loads((out / "summary.json").read_text())
    prof = s["profiles_median"]["penultimate"]
    assert set(prof) == {"tiny_a", "tiny_b"}
    assert set(prof["tiny_a"]) == {"user", "untrained"}
    assert len(prof["tiny_a"]["user"]["rotate"]) == 10
    assert prof["tiny_a"]["user"]["rotate"][0] == pytest.approx(1.0)
    assert s["factors"]["classes"] == [0, 1, 2]
    assert [c["question"] for c in s["claims"]][-1] == "does invariance align with the factors?"
    assert (out / "fig_factors.png").exists()
    t0 = time.perf_counter()  # resumable: a second run skips every cell
    run_origins(p, tmp_path / "out", workers=1, progress=False, models_file=str(mf),
                data=str(folder))
    assert time.perf_counter() - t0 < 60


def test_your_own_folder_is_profiled_whole_not_capped_at_n_test(tmp_path: Path) -> None:
    """Issue 24: a folder of 1,797 images was reported as 1,000 (the quick n_test). Without
    training (your own models) every image is a test image."""
    from invlab.studies.origins import OriginsData, get_splits

    folder = _image_folder(tmp_path / "imgs", 7)  # 21 images
    s = get_splits(OriginsData("external", 3000, 500, 5, path=str(folder)))
    assert len(s.test_y) == 21 and len(s.train_y) == 0


def test_models_file_errors_name_the_contract(tmp_path: Path) -> None:
    from invlab.studies.origins import preset, run_origins

    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    folder = _image_folder(tmp_path / "imgs", 3)
    with pytest.raises(TypeError, match=r"models\(\)"):
        run_origins(preset("quick"), tmp_path / "o", progress=False, models_file=str(bad),
                    data=str(folder))


# ------------------------------------------------------------------ quick preset

@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path: Path) -> None:
    from invlab.cli import main

    out = tmp_path / "out"
    rc = main(["study", "origins", "--quick", "--out", str(out), "--checkpoints",
               str(tmp_path / "ck"), "--no-progress"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert {"profiles_median", "accuracy", "ablation", "factors", "alignment", "claims"} <= set(s)
    assert len(s["claims"]) == 4
    assert all(isinstance(c["answer"], bool) for c in s["claims"])
    pm = s["profiles_median"]["penultimate"]
    assert set(pm["mlp5"]) >= {"untrained", "none", "translate_zoom"}
    assert set(pm["mlp5"]["none"]) == set(B21_FAMILIES)
    assert any(k != "penultimate" for k in s["profiles_median"])  # an inner layer too
    for f in ("fig_profile_geometric", "fig_profile_appearance", "fig_heatmap_median",
              "fig_factors", "fig_specificity", "fig_alignment"):
        assert (out / f"{f}.png").exists() and (out / f"{f}.svg").exists()
    acc = {(a["arch"], a["regime"]): a["mean"] for a in s["accuracy"]}
    assert acc[("mlp5", "none")] > acc[("mlp5", "untrained")] + 0.2
    # one training row per trained model; quick trains 8 epochs without patience: the cap
    trained = {(m.arch, m.regime, m.seed) for m in O.model_specs(O.preset("quick"))
               if m.regime != "untrained"}
    tr = s["training"]
    assert {(r["arch"], r["regime"], r["seed"]) for r in tr} == trained
    assert all(r["epochs run"] == 8 and r["stopped by"] == "epoch cap" for r in tr)
    assert (out / "training.md").exists()


def test_the_convergence_diagnostic() -> None:
    curve = [0.5 + 0.01 * i for i in range(30)] + [0.7] * 5  # rising, then flat at the top
    c = O.convergence(curve, max_epochs=100)
    assert c["epochs_run"] == 35 and c["best_epoch"] == 30 and c["capped"] == 0
    assert c["val_gain_late"] == pytest.approx(0.79 - 0.64)  # best 0.79 vs 0.64 by epoch 15
    flat = O.convergence([0.8] + [0.7] * 25, max_epochs=26)
    assert flat["val_gain_late"] == 0 and flat["capped"] == 1
    assert math.isnan(O.convergence([0.1, 0.2], 2)["val_gain_late"])
    # the slope over the last 20 epochs, against numpy's least squares by hand
    rising = [0.5 + 0.002 * i + 0.001 * (-1) ** i for i in range(40)]
    slope, se = O.late_slope(rising)
    x = np.arange(20.0)
    y = 100 * np.asarray(rising[-20:])
    want = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert slope == pytest.approx(10 * want) and slope == pytest.approx(2.0, abs=0.05)
    assert 0 < se < slope / 2  # clearly rising
    assert O.convergence(rising, 100)["val_slope_late"] == pytest.approx(slope)
    flat_slope, flat_se = O.late_slope([0.8, 0.81] * 10)
    assert abs(flat_slope) < 2 * flat_se  # a plateau: within 2 s.e. of 0


def test_progress_labels_name_the_model_not_the_config_repr() -> None:
    from invlab.studies import origins as O
    from invlab.sweep.runner import describe

    pre = O.preset("quick")
    cells = O.model_specs(pre)
    spec = next(s for s in cells if s.regime == "translate_zoom")
    data = O.OriginsData()
    assert describe(O.OriginsTrainCell(data, spec), 40) == f"train {spec.arch}/translate_zoom/s{spec.seed}"
    assert describe(O.ProfileCell(data, spec, 10, True), 40).startswith(f"profile {spec.arch}/")
    user = O.UserModel("abc", "my_cnn", 0, untrained=True)
    assert describe(O.FactorCell(data, user, 5), 40) == "factors my_cnn (untrained)"
