"""Measures as their authors defined them: B21's summary statistics and alignment measure,
Gruver et al.'s Lie derivative (jvp), and measure's n_si cap with its cost line."""

from __future__ import annotations

import argparse
import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from torch import nn

import invlab
from invlab.metrics import MeasureError, lie_derivative, measure
from invlab.metrics.functional import equivariance_alignment
from invlab.metrics.functional.representation import derangement, shuffle_columns
from invlab.metrics.lie import bilinear_warp
from invlab.metrics.registry import REGISTRY, metric_rows
from invlab.models import create_model

SHAPE = (1, 12, 12)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp5", in_shape=SHAPE, num_classes=4, hidden=16).eval()


def _x(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 4, (n,), generator=g)


# ---------------------------------------------------------------- registry declarations
def test_every_metric_declares_direction_range_and_summary():
    for name, spec in REGISTRY.items():
        assert spec.higher_is_better in (True, False, None), name
        lo, hi = spec.value_range
        assert lo < hi, name
        assert spec.summary in ("mean", "median"), name
    assert REGISTRY["kl"].higher_is_better is False
    assert REGISTRY["effective_invariance"].value_range == (0.0, 1.0)
    assert REGISTRY["representation_invariance"].summary == "median"
    assert REGISTRY["equivariance_alignment"].higher_is_better is None
    rows = {r["name"]: r for r in metric_rows()}
    assert rows["kl"]["better"] == "lower" and rows["kl"]["range"] == "[0, inf)"
    assert rows["representation_invariance"]["range"] == "(-inf, 1]"


def test_cli_metrics_list(capsys):
    from invlab.cli import main

    assert main(["metrics", "list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("representation_invariance "))
    assert line.split()[1:5] == ["RI", "higher", "(-inf,", "1]"] and "median" in line
    assert main(["metrics", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(REGISTRY)


def test_values_stay_in_declared_ranges():
    x, y = _x(12)
    measured = [n for n, s in REGISTRY.items() if s.computed_by is None]  # not factors_of_variation
    m = measure(_model(), x, labels=y, transform="rotate:[0,30,60]", metrics=measured,
                n_steps=4, generator=torch.Generator().manual_seed(0))
    for key, v in m.per_sample.items():
        base = key.split("@")[0]
        if base not in REGISTRY:
            continue
        lo, hi = REGISTRY[base].value_range
        assert float(v.min()) >= lo - 1e-6 and float(v.max()) <= hi + 1e-6, key


# ---------------------------------------------------------------- summary statistics
def test_representation_invariance_summary_is_the_median_with_quartiles():
    x, _ = _x(40)
    m = measure(_model(), x, transform="rotate", metrics=["RI", "kl"],
                generator=torch.Generator().manual_seed(1))
    v = m.per_sample["representation_invariance"].double().numpy().reshape(-1)
    assert m.statistics["representation_invariance"] == "median"
    assert m.statistics["kl"] == "mean"
    assert m.statistics["representation_invariance_d_same"] == "median"
    assert m.summary["representation_invariance"] == pytest.approx(float(np.median(v)))
    assert m.means["representation_invariance"] == pytest.approx(float(v.mean()))
    assert m.summary["kl"] == pytest.approx(m.means["kl"])
    q1, med, q3 = m.quartiles("RI")
    np.testing.assert_allclose([q1, med, q3], np.quantile(v, [0.25, 0.5, 0.75]), rtol=1e-12)
    ri = m.per_sample["representation_invariance"].double().numpy()
    by = m.by_member("RI")
    np.testing.assert_allclose(list(by.values()), np.median(ri, axis=0), rtol=1e-12)
    np.testing.assert_allclose(list(m.by_member("RI", "mean").values()), ri.mean(0), rtol=1e-12)
    assert m.to_dict()["by_member"]["representation_invariance"] == pytest.approx(list(by.values()))
    with pytest.raises(ValueError, match="mean or median"):
        m.by_member("kl", "max")
    d = m.to_dict()["metrics"]["representation_invariance"]
    assert d["statistic"] == "median" and d["median"] == pytest.approx(med)
    assert d["mean"] == pytest.approx(float(v.mean())) and d["q1"] == pytest.approx(q1)


# ---------------------------------------------------------------- B21 alignment
def _their_alignment(d_matrix: np.ndarray, col_rows: np.ndarray, perms: np.ndarray) -> list:
    """embedding_alignments.py, one magnitude, written out sample by sample:
    shuffle_d_matrix (column i gets rows col_rows[:, i]), then
    compute_cos_distance(b, b[perms]) - compute_cos_distance(d, d[perms])."""
    n, dim = d_matrix.shape
    b = np.empty_like(d_matrix)
    for i in range(dim):
        b[:, i] = d_matrix[col_rows[:, i], i]

    def cos_dist(u: np.ndarray, w: np.ndarray) -> float:
        den = max(math.sqrt(float(u @ u)) * math.sqrt(float(w @ w)), 1e-8)  # F.cosine_sim
        return 1.0 - float(u @ w) / den

    return [cos_dist(b[j], b[perms[j]]) - cos_dist(d_matrix[j], d_matrix[perms[j]])
            for j in range(n)]


def test_equivariance_alignment_matches_their_code_sample_by_sample():
    g = torch.Generator().manual_seed(3)
    z, z_t = torch.randn(2, 9, 5, generator=g, dtype=torch.float64)
    perm = torch.randperm(9, generator=g)  # their randperm (fixed points allowed)
    cols = shuffle_columns(z, g)
    got = equivariance_alignment(z, z_t, perm, cols)
    ref = _their_alignment((z - z_t).numpy(), cols.numpy(), perm.numpy())
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    # each column of the baseline is a permutation of the same column of d
    d = z - z_t
    b = d.gather(0, cols)
    torch.testing.assert_close(b.sort(0).values, d.sort(0).values)
    # leading dims (members) share π; an invariant representation gives 0
    assert float(equivariance_alignment(z, z.clone(), perm, cols).abs().max()) == 0.0
    with pytest.raises(ValueError, match="equal shapes"):
        equivariance_alignment(z, z_t[:3])


def test_equivariance_alignment_in_measure_matches_brute_force_and_keeps_ri():
    model = _model(2)
    x, _ = _x(16, seed=4)
    t = invlab.create_transform("rotate:[0,20,45]")
    both = measure(model, x, transform=t, metrics=["RI", "equivariance_alignment"],
                   generator=torch.Generator().manual_seed(5))
    ri = measure(model, x, transform=t, metrics=["RI"],
                 generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(both.per_sample["representation_invariance"],
                               ri.per_sample["representation_invariance"], rtol=0, atol=0)
    # reproduce the engine's draws: one chunk, derangement then column shuffles
    g = torch.Generator().manual_seed(5)
    perm = derangement(16, g)
    feats = {}
    h = model.head.register_forward_hook(lambda m, i, o: feats.__setitem__("z", i[0]))
    with torch.no_grad():
        model(x)
        z = feats["z"].double()
        zt = []
        for mag in (20.0, 45.0):
            model(t.at(mag)(x))
            zt.append(feats["z"].double())
    h.remove()
    cols = shuffle_columns(torch.zeros(2, *z.shape), g)
    for j in range(2):
        ref = _their_alignment((z - zt[j]).numpy(), cols[j].numpy(), perm.numpy())
        np.testing.assert_allclose(both.per_sample["equivariance_alignment"][:, j].numpy(), ref,
                                   rtol=1e-4, atol=1e-5)
    assert both.statistics["equivariance_alignment"] == "median"


# ---------------------------------------------------------------- lie derivative (jvp)
@pytest.mark.parametrize("spec,mag", [("rotate", 17.0), ("translate_x", 2.3),
                                      ("translate_y", -1.6), ("shear_x", 12.0),
                                      ("zoom_in", 1.3), ("rotate", 0.0)])
def test_bilinear_warp_equals_the_transform(spec, mag):
    from invlab.metrics.lie import _positions

    x, _ = _x(3)
    op = invlab.create_transform(spec).op
    ix, iy = _positions(op, torch.tensor(mag, dtype=torch.float64), 12, 12)
    got = bilinear_warp(x, ix, iy)
    ref = op.apply_all(x, torch.tensor([mag], dtype=torch.float64), False)[0]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def _softmax_jvp(logits: torch.Tensor, dlogits: torch.Tensor) -> torch.Tensor:
    """Hand-written d softmax = p ⊙ (dz − ⟨p, dz⟩)."""
    p = torch.softmax(logits, -1)
    return p * (dlogits - (p * dlogits).sum(-1, keepdim=True))


def _linear(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    lin = nn.Linear(144, 5, bias=False).double()
    return nn.Sequential(nn.Flatten(), lin).eval(), lin.weight.detach()


def _bordered(n: int = 4, seed: int = 2) -> torch.Tensor:
    x = torch.zeros(n, *SHAPE, dtype=torch.float64)
    x[:, :, 2:10, 2:10] = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed),
                                     dtype=torch.float64)
    return x


def test_jvp_translation_against_the_analytic_derivative_of_bilinear_interpolation():
    """At t = 0 every sampling point is on the grid; the derivative of bilinear
    interpolation there (floor convention, as grid_sample) of T_t x (x read at j − t) is
    x[j] − x[j+1]; the model is linear, so d softmax = p ⊙ (Wv − ⟨p, Wv⟩)."""
    net, w = _linear()
    x = _bordered()
    v = x - torch.roll(x, -1, dims=-1)  # zero border: the roll's wrap adds nothing
    ref = _softmax_jvp(x.flatten(1) @ w.T, v.flatten(1) @ w.T).abs().mean(-1)
    got = lie_derivative(net, x, "translate_x", method="jvp")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # the same one-sided derivative as a backward difference with a tiny step (t → 0⁻)
    h = 1e-6
    p0 = torch.softmax(net(x), -1)
    pm = torch.softmax(net(invlab.create_transform(f"translate_x:{-h}")(x)), -1)
    torch.testing.assert_close(((p0 - pm) / h).abs().mean(-1), ref, rtol=1e-5, atol=1e-9)
    # translate_y: x[i] − x[i+1]
    vy = x - torch.roll(x, -1, dims=-2)
    refy = _softmax_jvp(x.flatten(1) @ w.T, vy.flatten(1) @ w.T).abs().mean(-1)
    torch.testing.assert_close(lie_derivative(net, x, "translate_y", method="jvp"), refy,
                               rtol=1e-10, atol=1e-12)


def test_jvp_rotation_against_the_analytic_derivative():
    """Rotation by θ degrees reads x at p = R(−θ)q; dp/dθ = (π/180)(−q_y, q_x) with q the
    pixel relative to the centre; d bilinear/dp at a grid point = forward differences."""
    net, w = _linear(1)
    x = _bordered(3, seed=5)
    hh, ww = SHAPE[1:]
    qy, qx = torch.meshgrid(torch.arange(hh, dtype=torch.float64) - (hh - 1) / 2,
                            torch.arange(ww, dtype=torch.float64) - (ww - 1) / 2, indexing="ij")
    k = math.pi / 180
    dix, diy = -k * qy, k * qx
    gx = torch.roll(x, -1, dims=-1) - x  # x[i, j+1] − x[i, j]
    gy = torch.roll(x, -1, dims=-2) - x
    v = gx * dix + gy * diy
    ref = _softmax_jvp(x.flatten(1) @ w.T, v.flatten(1) @ w.T).abs().mean(-1)
    got = lie_derivative(net, x, "rotate", method="jvp")
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_jvp_through_a_nonlinear_model_and_normalization_equals_finite_differences():
    """The model part: forward-mode AD equals a central difference in the input along the
    image tangent (the model is smooth in the input: tanh)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = _bordered(5, seed=7)
    norm = {"mean": [0.2], "std": [0.5]}
    got = lie_derivative(net, x, "rotate", method="jvp", normalization=norm)
    from invlab.metrics.lie import _image_jvp

    y, v = _image_jvp(invlab.create_transform("rotate"), x, 0.0)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)  # T_0 x = x

    def probs(z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net((z - 0.2) / 0.5), -1)

    h = 1e-5
    ref = ((probs(x + h * v) - probs(x - h * v)) / (2 * h)).abs().mean(-1)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-10)


def test_jvp_brightness_and_refusals():
    net, w = _linear()
    x = _bordered() * 0.5
    got = lie_derivative(net, x, "brightness_up", method="jvp", at=1.5)
    ref = _softmax_jvp(1.5 * x.flatten(1) @ w.T, x.flatten(1) @ w.T).abs().mean(-1)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(MeasureError, match="probabilities"):
        lie_derivative(net, x, "rotate", method="jvp", layer="1")
    with pytest.raises(MeasureError, match="method='central'"):
        lie_derivative(net, x, "posterize", method="jvp")


def test_central_and_jvp_differ_by_the_grid_kink_only():
    """On the probabilities, the central difference with a tiny eps is the mean of the two
    one-sided derivatives of bilinear interpolation; jvp is one of them."""
    net, w = _linear()
    x = _bordered()
    logits = x.flatten(1) @ w.T
    vb = x - torch.roll(x, -1, dims=-1)  # t → 0⁻ (jvp's side)
    vf = torch.roll(x, 1, dims=-1) - x  # t → 0⁺
    jb = _softmax_jvp(logits, vb.flatten(1) @ w.T)
    jf = _softmax_jvp(logits, vf.flatten(1) @ w.T)
    jvp = lie_derivative(net, x, "translate_x", method="jvp")
    torch.testing.assert_close(jvp, jb.abs().mean(-1), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(jvp, ((jb + jf) / 2).abs().mean(-1), rtol=1e-3)


# ---------------------------------------------------------------- n_si cap and cost
def test_n_si_does_not_change_results_when_n_is_within_the_cap():
    x, y = _x(10)
    a = measure(_model(), x, labels=y, metrics=["kl", "SI", "sensitivity"], n_steps=4)
    b = measure(_model(), x, labels=y, metrics=["kl", "SI", "sensitivity"], n_steps=4,
                n_si=None)
    c = measure(_model(), x, labels=y, metrics=["kl", "SI", "sensitivity"], n_steps=4,
                n_si=10)
    for m in a.per_sample:
        torch.testing.assert_close(a.per_sample[m], b.per_sample[m], rtol=0, atol=0)
        torch.testing.assert_close(a.per_sample[m], c.per_sample[m], rtol=0, atol=0)
    assert a.indices == {} and a.settings["n_si"] == 100


@pytest.mark.parametrize("with_labels", [True, False])
def test_n_si_caps_si_and_sensitivity_on_evenly_spaced_images(with_labels, caplog):
    x, y = _x(23, seed=6)
    lab = y if with_labels else None
    with caplog.at_level(logging.INFO, logger="invlab.metrics"):
        m = measure(_model(), x, labels=lab, metrics=["kl", "SI", "sensitivity"], n_steps=4,
                    n_si=5, batch_size=4)
    idx = torch.tensor([0, 6, 11, 16, 22])  # round(linspace(0, 22, 5))
    torch.testing.assert_close(m.indices["saliency_similarity"], idx)
    assert m.per_sample["saliency_similarity"].shape == (5, 3)
    assert m.per_sample["sensitivity"].shape == (5, 1) and m.per_sample["kl"].shape == (23, 3)
    ref = measure(_model(), x[idx], labels=None if lab is None else lab[idx],
                  metrics=["SI", "sensitivity"], n_steps=4, n_si=None)
    torch.testing.assert_close(m.per_sample["saliency_similarity"],
                               ref.per_sample["saliency_similarity"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.per_sample["sensitivity"], ref.per_sample["sensitivity"],
                               rtol=1e-5, atol=1e-6)
    full = measure(_model(), x, labels=lab, metrics=["kl"])
    torch.testing.assert_close(m.per_sample["kl"], full.per_sample["kl"])
    # with derived keys beside them (clean_accuracy, RI's distances): only SI is capped
    mix = measure(_model(), x, labels=y, metrics=["accuracy", "RI", "SI"], n_steps=2, n_si=4,
                  generator=torch.Generator().manual_seed(0))
    assert set(mix.indices) == {"saliency_similarity"}
    assert mix.per_sample["clean_accuracy"].shape == (23, 1)
    assert mix.per_sample["representation_invariance_d_same"].shape == (23, 3)
    df = m.to_frame()
    assert sorted(set(df[df.metric == "saliency_similarity"]["sample"])) == idx.tolist()
    d = m.to_dict()["metrics"]
    assert d["saliency_similarity"]["n"] == 5 and d["kl"]["n"] == 23
    line = next(r.getMessage() for r in caplog.records if "SI/sensitivity" in r.getMessage())
    assert "5 of 23 images (n_si=5" in line
    assert "SI: 5 images × 4 (x and 3 members) × 4 IG steps = 80 forward+backward passes" in line
    assert "sensitivity: 5 images × 4 passes" in line


def test_n_si_bad_values_and_cli_flag(tmp_path, monkeypatch, capsys):
    x, y = _x(8)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(MeasureError, match="n_si must be a positive int"):
            measure(_model(), x, metrics=["SI"], n_si=bad)
    from invlab import checkpoint as ck
    from invlab.cli.measure import add_measure_parser

    data = pytest.importorskip("invlab.data")
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(_model(), path, group="r4", normalization={"mean": 0.0, "std": 1.0})
    xs, ys = _x(30)
    monkeypatch.setattr(data, "load_for_checkpoint", lambda spec, meta, limit=None: (xs, ys))
    parser = argparse.ArgumentParser()
    add_measure_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake",
                              "--metrics", "kl,SI", "--n-steps", "2", "--n-si", "7"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "SI / sensitivity on 7 of 30 images" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("saliency_similarity"))
    assert row.split()[1] == "7"
    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake",
                              "--metrics", "SI", "--n-steps", "2", "--n-si", "none"])
    assert args.func(args) == 2
    assert "--n-si must be a positive number of images or 'all'" in capsys.readouterr().err


def test_family_members_ascending_and_transforms_listing():
    x, _ = _x(4)
    m = measure(_model(), x, transform="rotate", metrics=["kl"])
    assert m.members == sorted(m.members) and len(m.members) == 9
    m2 = measure(_model(), x, transform="rotate", metrics=["kl"], members=[45.0, -27.0])
    assert m2.members == [45.0, -27.0]  # explicit members keep the order given
    g = measure(_model(), x, group="r4", metrics=["kl"])
    assert g.members == [1, 2, 3]
    from invlab.transforms import transform_rows

    row = next(r for r in transform_rows(28, 28) if r["name"] == "rotate")
    mags = [float(v) for v in row["magnitudes"].split(", ")]
    assert mags == sorted(mags)


# Gruver et al.'s lee/transforms.py and lee/lie_derivs.py (github.com/ngruver/lie-deriv, MIT
# License, Copyright (c) 2022 Nate Gruver), condensed: their affine warp (F.affine_grid with
# align_corners=True, their own bilinear grid_sample) and their double-vjp ``jvp``. One
# change: positions within 1e-4 of a pixel are snapped before ``floor`` (their float32 grid
# puts some pixels at j − 1e-7, which picks the other one-sided derivative there).
def _g_grid_sample(image: torch.Tensor, optical: torch.Tensor) -> torch.Tensor:
    n, c, ih, iw = image.shape
    _, h, w, _ = optical.shape
    ix = ((optical[..., 0] + 1) / 2) * (iw - 1)
    iy = ((optical[..., 1] + 1) / 2) * (ih - 1)
    with torch.no_grad():
        ix_nw = torch.floor(torch.where((ix - ix.round()).abs() < 1e-4, ix.round(), ix))
        iy_nw = torch.floor(torch.where((iy - iy.round()).abs() < 1e-4, iy.round(), iy))
        ix_ne, iy_ne, ix_sw, iy_sw = ix_nw + 1, iy_nw, ix_nw, iy_nw + 1
        ix_se, iy_se = ix_nw + 1, iy_nw + 1
    nw = (ix_se - ix) * (iy_se - iy)
    ne = (ix - ix_sw) * (iy_sw - iy)
    sw = (ix_ne - ix) * (iy - iy_ne)
    se = (ix - ix_nw) * (iy - iy_nw)

    def fold(i: torch.Tensor, size: int) -> torch.Tensor:  # their reflection of indices
        return size - 1 - (size - 1 - i.abs()).abs()

    image = image.view(n, c, ih * iw)
    out = 0
    for (xx, yy), wgt in (((ix_nw, iy_nw), nw), ((ix_ne, iy_ne), ne), ((ix_sw, iy_sw), sw),
                          ((ix_se, iy_se), se)):
        with torch.no_grad():
            idx = (fold(yy, ih) * iw + fold(xx, iw)).long().view(n, 1, h * w).repeat(1, c, 1)
        out = out + torch.gather(image, 2, idx).view(n, c, h, w) * wgt.view(n, 1, h, w)
    return out


def _g_affine(img: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    grid = tF.affine_grid(a, size=img.size(), align_corners=True)
    return _g_grid_sample(img, grid)


def _g_lie_deriv(model, x: torch.Tensor, kind: str) -> torch.Tensor:
    def shifted(t: torch.Tensor) -> torch.Tensor:
        a = torch.zeros(x.shape[0], 2, 3)
        if kind == "rot":
            a[:, 0, 0], a[:, 0, 1] = torch.cos(t), torch.sin(t)
            a[:, 1, 0], a[:, 1, 1] = -torch.sin(t), torch.cos(t)
        else:
            a[:, 0, 0] = a[:, 1, 1] = 1
            a[:, 0 if kind == "x" else 1, 2] = t
        return model(_g_affine(x, a))

    t = torch.zeros(1, requires_grad=True)
    with torch.enable_grad():
        y = shifted(t)
        v = torch.ones_like(y, requires_grad=True)
        (vj,) = torch.autograd.grad(y, [t], [v], create_graph=True)
        (ju,) = torch.autograd.grad(vj, [v], [torch.ones_like(t)], create_graph=True)
    return ju.abs().mean(-1).detach()  # e2e_lee.py: errs[...].abs().mean(-1)


def test_jvp_equals_gruver_et_al_code_up_to_units():
    """Their Lie derivative (probabilities, mean |·| over classes) per image equals ours
    times the unit change: translations in normalized coordinates (t = 1 is (W−1)/2 px),
    rotation in radians (180/π degrees)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.Tanh(), nn.Linear(16, 5))
    x = _bordered(6, seed=9).float()

    def probs(z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(z), -1)

    for kind, fam, scale in (("x", "translate_x", 11 / 2), ("y", "translate_y", 11 / 2),
                             ("rot", "rotate", 180 / math.pi)):
        theirs = _g_lie_deriv(probs, x, kind)
        ours = lie_derivative(net, x, fam, method="jvp")
        torch.testing.assert_close(theirs, ours * scale, rtol=2e-4, atol=1e-7)
