"""``measure`` over any transform: families per magnitude, pixel space + normalization, SI
with validity masks, refusals, and the Lie derivative against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import invlab
from invlab.attribution import saliency_map
from invlab.metrics import MeasureError, lie_derivative, measure
from invlab.metrics import functional as F
from invlab.models import create_model

SHAPE = (1, 12, 12)
NORM = {"mean": [0.2], "std": [0.3]}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mlp5", in_shape=SHAPE, num_classes=4, hidden=16).eval()


def _pix(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 4, (n,), generator=g)


def _norm(x):
    return (x - 0.2) / 0.3


def test_family_per_magnitude_matches_brute_force(model):
    x, y = _pix()
    fam = invlab.create_transform("rotate")
    m = measure(model, x, labels=y, transform="rotate", normalization=NORM,
                metrics=["kl", "LI", "EI", "accuracy", "js"], include_identity=True)
    mags = sorted(fam.magnitudes)  # a family's members come out in ascending order
    assert m.kind == "family" and m.magnitudes == mags == m.members
    assert mags[0] == -135.0 and mags[-1] == 180.0
    assert m.per_sample["kl"].shape == (7, 10)
    with torch.no_grad():
        lx = model(_norm(x))
        for j, mag in enumerate(mags):
            lt = model(_norm(fam.at(mag)(x)))
            torch.testing.assert_close(m.per_sample["kl"][:, j], F.kl(lx, lt), atol=1e-6,
                                       rtol=1e-4)
            torch.testing.assert_close(m.per_sample["logit_l2"][:, j], F.logit_l2(lx, lt),
                                       atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(m.per_sample["accuracy"][:, j], F.accuracy(lt, y))
    i0 = mags.index(0.0)
    assert float(m.per_sample["logit_l2"][:, i0].abs().max()) == 0.0  # the identity column
    by = m.by_member("kl")
    assert list(by) == mags
    assert by[45.0] == pytest.approx(float(m.per_sample["kl"][:, mags.index(45.0)]
                                           .double().mean()))
    assert set(m.summary_by_magnitude()) == {"kl", "logit_l2", "effective_invariance",
                                             "accuracy", "js"}
    df = m.to_frame()
    assert "magnitude" in df.columns and "element" not in df.columns
    sub = df[(df.metric == "kl") & (df.magnitude == 45.0)]
    assert len(sub) == 7 and sub.value.mean() == pytest.approx(by[45.0])
    d = m.to_dict()
    assert d["kind"] == "family" and len(d["by_member"]["kl"]) == 10


def test_default_members_exclude_identity_and_fixed_transform(model):
    x, _ = _pix()
    m = measure(model, x, transform="rotate", normalization=NORM, metrics=["kl"])
    assert m.members == sorted(invlab.create_transform("rotate").magnitudes[1:])
    f = measure(model, x, transform="rotate:45", normalization=NORM, metrics=["kl"])
    assert f.kind == "fixed" and f.members == [45.0]
    col = m.members.index
    torch.testing.assert_close(f.per_sample["kl"][:, 0], m.per_sample["kl"][:, col(45.0)])
    g = measure(model, x, transform="rotate", members=[45.0, 90.0], normalization=NORM,
                metrics=["kl"])
    torch.testing.assert_close(g.per_sample["kl"], m.per_sample["kl"][:, [col(45.0), col(90.0)]])
    with pytest.raises(MeasureError, match="not a member|invalid magnitude"):
        measure(model, x, transform="posterize", members=[9.5], metrics=["kl"])


def test_exact_groups_commute_with_normalization(model):
    x, y = _pix()
    a = measure(model, x, labels=y, transform="d4", normalization=NORM,
                metrics=["kl", "LI", "SI"], n_steps=4)
    b = measure(model, _norm(x), labels=y, group="d4", metrics=["kl", "LI"])
    for k in ("kl", "logit_l2"):
        torch.testing.assert_close(a.per_sample[k], b.per_sample[k], rtol=1e-4, atol=1e-6)
    assert a.group == "d4" and a.kind == "group" and a.members == list(range(1, 8))
    df = a.to_frame()
    assert "element" in df.columns


def test_si_uses_inverse_and_validity_mask(model):
    x, y = _pix(4)
    t = invlab.create_transform("rotate:30")
    m = measure(model, x, labels=y, transform=t, normalization=NORM, metrics=["SI"],
                n_steps=6)
    net = lambda z: model(_norm(z))  # noqa: E731
    mask = t.validity_mask(12, 12)[0]
    assert 0 < float(mask.mean()) < 1
    for i in range(4):
        m0 = saliency_map(F.integrated_gradients(net, x[i:i + 1], int(y[i]), n_steps=6))
        mt = saliency_map(F.integrated_gradients(net, t(x[i:i + 1]), int(y[i]), n_steps=6))
        back = t.inverse()(mt[:, None])[:, 0]
        cos = torch.nn.functional.cosine_similarity((m0 * mask).flatten(),
                                                    (back * mask).flatten(), dim=0)
        assert float(m.per_sample["saliency_similarity"][i, 0]) == pytest.approx(float(cos),
                                                                                 abs=1e-5)


def test_si_refuses_non_invertible_transform(model):
    x, _ = _pix()
    with pytest.raises(MeasureError, match=r"saliency similarity needs an invertible "
                                           r"transform; 'brightness_up' is not invertible"):
        measure(model, x, transform="brightness_up", metrics=["kl", "SI"])
    # output metrics and representation invariance work for it
    m = measure(model, x, transform="brightness_up", normalization=NORM, metrics=["kl", "RI"])
    assert m.per_sample["representation_invariance"].shape == (7, 9)


def test_unknown_transform_and_both_arguments(model):
    x, _ = _pix()
    with pytest.raises(MeasureError, match="unknown transform 'spin'"):
        measure(model, x, transform="spin", metrics=["kl"])
    with pytest.raises(MeasureError, match="not both"):
        measure(model, x, transform="r4", group="r4", metrics=["kl"])
    with pytest.raises(MeasureError, match="normalization"):
        measure(model, x, transform="r4", normalization={"mean": [0, 0]}, metrics=["kl"])
    with pytest.raises(MeasureError, match="std.*> 0"):
        measure(model, x, normalization={"mean": 0.0, "std": 0.0}, metrics=["kl"])


def test_family_measure_on_user_sequential_cnn_with_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 144, 5)).eval()
    x, _ = _pix(6)
    m = measure(net, x, transform="translate_x", normalization=NORM,
                metrics=["agreement", "RI"], layers=["1"],
                generator=torch.Generator().manual_seed(0))
    assert m.per_sample["representation_invariance@1"].shape == (6, 9)
    assert m.per_sample["agreement"].shape == (6, 9)


# ---- Lie derivative ----------------------------------------------------------------------

def _linear(c_out=3, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(144, c_out, bias=False)
    return nn.Sequential(nn.Flatten(), lin).eval(), lin.weight.detach()


def test_lie_derivative_brightness_is_w_dot_x():
    """f(b·x) = b·Wx, so d/db f = Wx exactly (no clipping for x ≤ 0.5 and b ≈ 1.5)."""
    net, w = _linear()
    x = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1)) * 0.5
    got = lie_derivative(net, x, "brightness_up", eps=1e-2, at=1.5)
    ref = (x.flatten(1) @ w.T).norm(dim=1)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(MeasureError, match="valid neighbours"):
        lie_derivative(net, x, "brightness_up", eps=1e-2)  # no factor below 1


def test_lie_derivative_translation_is_central_difference():
    """eps is in pixels (also for the translate_x family, whose grid is in fractions of W).
    Bilinear translation by s px (|s| ≤ 1) is linear in s, so the central difference is
    exact: d/ds f(T_s x) = W·(x[j−1] − x[j+1]) / 2 per pixel on a zero border."""
    net, w = _linear()
    x = torch.zeros(4, *SHAPE)
    x[:, :, 2:10, 2:10] = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    dx = (torch.roll(x, 1, dims=-1) - torch.roll(x, -1, dims=-1)) / 2
    ref = (dx.flatten(1) @ w.T).norm(dim=1)
    for eps in (0.5, 0.01):
        got = lie_derivative(net, x, "translate_x", eps=eps)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    fixed = lie_derivative(net, x, "translate_x:[0,0.5,1]", eps=0.5)  # custom grid: pixels too
    torch.testing.assert_close(fixed, ref, rtol=1e-4, atol=1e-5)
    # a shift of the whole width moves the image out of the canvas: refused, not 0.0
    with pytest.raises(MeasureError, match="out of the 12x12 canvas"):
        lie_derivative(net, x, "translate_x", eps=12.0)
    with pytest.raises(MeasureError, match="out of the 12x12 canvas"):
        lie_derivative(net, x, "translate_y", eps=1.0, at=11.5)
    with pytest.raises(MeasureError, match="unknown method"):
        lie_derivative(net, x, "translate_x", method="forward")


def test_lie_derivative_layer_and_invariant_model():
    net, _ = _linear()
    x = torch.rand(3, *SHAPE)
    z = lie_derivative(net, x, "rotate", eps=1.0, layer="0")  # the flattened input itself
    ref = ((invlab.create_transform("rotate:1")(x) - invlab.create_transform("rotate:-1")(x))
           .flatten(1).norm(dim=1) / 2)
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-6)
    const = nn.Sequential(nn.Flatten(), nn.Linear(144, 2)).eval()
    with torch.no_grad():
        const[1].weight.zero_()
    assert float(lie_derivative(const, x, "rotate").abs().max()) == 0.0
    with pytest.raises(MeasureError, match="continuous family"):
        lie_derivative(net, x, "r4")
    assert np.isfinite(lie_derivative(net, x, "rotate", normalization=NORM).numpy()).all()
