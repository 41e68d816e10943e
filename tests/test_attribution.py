"""Integrated gradients vs Captum, completeness, chunking; saliency maps vs scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from invlab.attribution import (
    IntegratedGradients,
    boundary_for_group,
    gaussian_kernel,
    integrated_gradients,
    quadrature,
    saliency_map,
)
from invlab.groups import create_group
from invlab.models import create_model

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=(1, 12, 12), num_classes=5).eval()
    x = torch.randn(6, 1, 12, 12)
    t = torch.tensor([0, 1, 2, 3, 4, 0])
    return model, x, t


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left",
                                    "riemann_right", "riemann_middle"])
def test_ig_matches_captum(setup, method):
    model, x, t = setup
    ours, d = integrated_gradients(model, x, t, n_steps=16, method=method,
                                   return_convergence_delta=True)
    ref, dref = captum_attr.IntegratedGradients(model).attribute(
        x, target=t, n_steps=16, method=method, return_convergence_delta=True)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(d, dref.to(d.dtype), rtol=1e-3, atol=1e-6)


def test_quadrature_matches_captum():
    from captum.attr._utils.approximation_methods import approximation_parameters

    for m in ["gausslegendre", "riemann_trapezoid", "riemann_middle"]:
        s, a = approximation_parameters(m)
        ws, al = quadrature(m, 7)
        np.testing.assert_allclose(ws, s(7))
        np.testing.assert_allclose(al, a(7))


def test_ig_completeness_and_baseline(setup):
    model, x, t = setup
    base = torch.randn(1, 12, 12)
    attr, delta = integrated_gradients(model, x, t, baselines=base, n_steps=64,
                                       return_convergence_delta=True)
    with torch.no_grad():
        gap = model(x).gather(1, t[:, None])[:, 0] - model(base.expand_as(x)).gather(
            1, t[:, None])[:, 0]
    # ReLU kinks limit the quadrature: a few percent of the gap at 64 steps
    assert float(delta.abs().max()) < 0.05 * float(gap.abs().max())
    ref = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=base.expand_as(x), target=t, n_steps=64)
    torch.testing.assert_close(attr, ref, rtol=1e-4, atol=1e-7)


def test_ig_completeness_smooth_model_is_tight():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 3)).double()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    _, delta = integrated_gradients(net, x, 1, n_steps=32, return_convergence_delta=True)
    assert float(delta.abs().max()) < 1e-10


def test_ig_chunking_does_not_change_result(setup):
    model, x, t = setup
    big = integrated_gradients(model, x, t, n_steps=10)
    tiny = integrated_gradients(model, x, t, n_steps=10, memory_budget_bytes=1)  # 1 row/pass
    torch.testing.assert_close(big, tiny, rtol=1e-5, atol=1e-8)


def test_ig_linear_model_exact():
    w = torch.randn(16, 3)
    f = lambda x: x.flatten(1) @ w
    x = torch.randn(4, 1, 4, 4)
    attr = integrated_gradients(f, x, target=2, n_steps=5)
    torch.testing.assert_close(attr.flatten(1), x.flatten(1) * w[:, 2], rtol=1e-5, atol=1e-6)


def test_ig_class_wrapper_and_scalar_output(setup):
    model, x, t = setup
    a = IntegratedGradients(model).attribute(x, target=t, n_steps=8)
    torch.testing.assert_close(a, integrated_gradients(model, x, t, n_steps=8))
    scalar = integrated_gradients(lambda z: model(z)[:, 1], x, None, n_steps=8)
    torch.testing.assert_close(scalar, integrated_gradients(model, x, 1, n_steps=8))


def test_ig_errors(setup):
    model, x, t = setup
    with pytest.raises(ValueError, match="unknown integration method"):
        integrated_gradients(model, x, t, method="simpson")
    with pytest.raises(ValueError, match="target"):
        integrated_gradients(model, x, t[:3])
    with pytest.raises(ValueError, match="target=None"):
        integrated_gradients(model, x, None)
    with pytest.raises(ValueError, match="n_steps"):
        integrated_gradients(model, x, t, n_steps=1, method="riemann_left")


def _reference_map(attr: np.ndarray, ratio: float, mode: str) -> np.ndarray:
    out = []
    for a in np.abs(attr).sum(1):
        a = np.where(a >= ratio * a.max(), a, 0.0)
        # radius = truncate * sigma = 1 -> 3x3 normalized Gaussian; 'reflect' = symmetric
        out.append(ndimage.gaussian_filter(a, sigma=1.0, truncate=1.0, mode=mode))
    return np.stack(out)


@pytest.mark.parametrize("boundary,mode", [("symmetric", "reflect"), ("circular", "wrap"),
                                           ("zeros", "constant"), ("reflect", "mirror")])
@pytest.mark.parametrize("ratio", [0.0, 0.9])
def test_saliency_map_matches_scipy(boundary, mode, ratio):
    attr = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    ours = saliency_map(attr, ratio=ratio, boundary=boundary).numpy()
    np.testing.assert_allclose(ours, _reference_map(attr.numpy(), ratio, mode), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("group", ["r4", "flip", "d4", "t3"])
def test_saliency_map_commutes_with_group(group):
    g = create_group(group)
    attr = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    b = boundary_for_group(g)
    m = saliency_map(attr, ratio=0.5, boundary=b)
    for e in g.elements:
        torch.testing.assert_close(saliency_map(g.act(attr, e), ratio=0.5, boundary=b),
                                   g.act(m, e))


def test_boundary_choice_and_kernel():
    assert boundary_for_group(create_group("t3")) == "circular"
    assert boundary_for_group(create_group("r4")) == "symmetric"
    k = gaussian_kernel(3, 1.0, torch.float64)
    assert float(k.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(k, k.T)
    with pytest.raises(ValueError):
        gaussian_kernel(4)
    with pytest.raises(ValueError, match="N, C, H, W"):
        saliency_map(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="boundary"):
        saliency_map(torch.randn(1, 1, 4, 4), boundary="wrap")
