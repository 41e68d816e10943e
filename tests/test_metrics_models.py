"""Metrics on models with known invariance, sensitivity and representation invariance."""

from __future__ import annotations

import pytest
import torch

from invlab.groups import create_group
from invlab.metrics import functional as F
from invlab.metrics import measure
from invlab.models import GroupPooled, create_model

SHAPE = (1, 12, 12)


def _images(n=10, seed=0):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2


def _invariant_models(group):
    torch.manual_seed(0)
    return {
        "wt_mlp5": create_model("wt_mlp5", in_shape=SHAPE, num_classes=5, group=group),
        "pooled": GroupPooled(create_model("mlp5", in_shape=SHAPE, num_classes=5), group),
    }


@pytest.mark.parametrize("group", ["r4", "t3"])
@pytest.mark.parametrize("which", ["wt_mlp5", "pooled"])
def test_invariant_models_score_invariant(group, which):
    model = _invariant_models(group)[which]
    x = _images()
    m = measure(model, x, group=group, metrics=["kl", "LI", "EI", "SI", "agreement", "js"],
                n_steps=8)
    assert abs(m.summary["kl"]) < 1e-6
    assert m.summary["logit_l2"] < 1e-8
    assert abs(m.summary["js"]) < 1e-6
    assert m.summary["agreement"] == 1.0
    assert float(m.per_sample["saliency_similarity"].min()) >= 0.9999
    with torch.no_grad():
        pmax = torch.softmax(model(x), -1).amax(-1)
    torch.testing.assert_close(m.per_sample["effective_invariance"],
                               pmax[:, None].expand(-1, 2 if group == "t3" else 3), atol=1e-5,
                               rtol=1e-5)


def test_random_mlp_is_not_invariant():
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=SHAPE, num_classes=5)
    m = measure(model, _images(), group="r4", metrics=["LI", "SI", "kl"], n_steps=8)
    inv = measure(_invariant_models("r4")["wt_mlp5"], _images(), group="r4", metrics=["LI"])
    assert m.summary["logit_l2"] > 1e-5 > 1e3 * inv.summary["logit_l2"]
    assert m.summary["kl"] > 1e-7
    assert m.summary["saliency_similarity"] < 0.9


def test_saliency_similarity_brute_force():
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=SHAPE, num_classes=5).eval()
    x = _images(4)
    g = create_group("r4")
    got = F.saliency_similarity(model, x, g, n_steps=6)
    with torch.no_grad():
        target = model(x).argmax(-1)
    for i in range(4):
        t = int(target[i])
        m0 = F.saliency_map(F.integrated_gradients(model, x[i:i + 1], t, n_steps=6))
        for j, e in enumerate(g.non_identity):
            mt = F.saliency_map(F.integrated_gradients(model, g.act(x[i:i + 1], e), t,
                                                       n_steps=6))
            back = torch.rot90(mt, -e, dims=(-2, -1))
            cos = torch.nn.functional.cosine_similarity(m0.flatten(), back.flatten(), dim=0)
            assert float(got[i, j]) == pytest.approx(float(cos), abs=1e-5)


def test_sensitivity_exact_matches_jacrev():
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=SHAPE, num_classes=5).eval()
    x = _images(5)
    got = F.jacobian_spectral_norm(model, x)
    for i in range(5):
        jac = torch.func.jacrev(lambda z: model(z[None])[0])(x[i]).reshape(5, -1)
        assert float(got[i]) == pytest.approx(float(torch.linalg.matrix_norm(jac.detach(), ord=2)),
                                              rel=1e-5)


def test_sensitivity_power_iteration_for_many_classes():
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=SHAPE, num_classes=40, hidden=32).eval()
    x = _images(3)
    exact = F.jacobian_spectral_norm(model, x, exact_max_classes=64)
    power = F.jacobian_spectral_norm(model, x, exact_max_classes=32, n_iter=150,
                                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(power, exact, rtol=1e-3, atol=0)


def test_representation_invariance_brute_force():
    gen = torch.Generator().manual_seed(3)
    z, zt = torch.randn(9, 6, generator=gen), torch.randn(9, 6, generator=gen)
    perm = F.derangement(9, torch.Generator().manual_seed(7))
    assert not bool((perm == torch.arange(9)).any())
    assert sorted(perm.tolist()) == list(range(9))
    for dist in ("cosine", "l2"):
        got = F.representation_invariance(z, zt, perm=perm, distance=dist)
        for i in range(9):
            if dist == "cosine":
                def d(a, b):
                    return 1 - float(a @ b) / (float(a.norm()) * float(b.norm()))
            else:
                def d(a, b):
                    return float((a - b).norm())
            exp = 1 - d(z[i], zt[i]) / d(z[i], zt[int(perm[i])])
            assert float(got[i]) == pytest.approx(exp, rel=1e-4, abs=1e-5)
    # seeded: same generator seed, same permutation, same values
    a = F.representation_invariance(z, zt, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, F.representation_invariance(z, zt, perm=perm))
    assert torch.allclose(F.representation_invariance(z, z, perm=perm), torch.ones(9))
    with pytest.raises(ValueError, match="at least 2"):
        F.derangement(1)


def test_measure_representation_invariance_matches_functional():
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=SHAPE, num_classes=5).eval()
    x = _images(8)
    m = measure(model, x, group="r4", metrics=["representation_invariance"],
                generator=torch.Generator().manual_seed(5), batch_size=8)
    perm = F.derangement(8, torch.Generator().manual_seed(5))
    g = create_group("r4")
    with torch.no_grad():
        z = model.forward_features(x)
        for j, e in enumerate(g.non_identity):
            ref = F.representation_invariance(z, model.forward_features(g.act(x, e)), perm=perm)
            torch.testing.assert_close(m.per_sample["representation_invariance"][:, j], ref)
