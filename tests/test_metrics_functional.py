"""Functional metrics against independent references (scipy, brute-force loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax

from invlab.metrics import accumulators as A
from invlab.metrics import functional as F


def _pair(n=12, k=9, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g, dtype=torch.float64) * scale,
            torch.randn(n, k, generator=g, dtype=torch.float64) * scale)


def test_kl_matches_scipy_rel_entr():
    a, b = _pair()
    ref = [rel_entr(softmax(a[i].numpy()), softmax(b[i].numpy())).sum() for i in range(len(a))]
    np.testing.assert_allclose(F.kl(a, b).numpy(), ref, rtol=1e-10, atol=1e-12)


def test_js_matches_scipy_jensenshannon_squared():
    a, b = _pair(seed=1)
    ref = [jensenshannon(softmax(a[i].numpy()), softmax(b[i].numpy())) ** 2
           for i in range(len(a))]
    np.testing.assert_allclose(F.js(a, b).numpy(), ref, rtol=1e-8, atol=1e-12)
    assert float(F.js(a, b).max()) <= math.log(2) + 1e-12


def test_kl_stable_for_extreme_logits():
    a = torch.tensor([[1000.0, 0.0, -1000.0]])
    b = torch.tensor([[0.0, 1000.0, -1000.0]])
    v = F.kl(a, b)
    assert torch.isfinite(v).all() and float(v) == pytest.approx(1000.0, rel=1e-5)


def test_logit_metrics_brute_force():
    a, b = _pair(seed=2)
    for i in range(len(a)):
        d = [float(a[i, j] - b[i, j]) for j in range(a.shape[1])]
        sq = sum(v * v for v in d)
        assert float(F.logit_l2(a, b)[i]) == pytest.approx(0.5 * sq, rel=1e-12)
        norm = sum(float(v) ** 2 for v in a[i])
        assert float(F.logit_l2_normalized(a, b)[i]) == pytest.approx(sq / norm, rel=1e-12)


def test_ei_agreement_accuracy_brute_force():
    a, b = _pair(n=40, k=3, seed=3, scale=1.0)
    labels = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(0))
    ei, ag, acc = F.effective_invariance(a, b), F.agreement(a, b), F.accuracy(a, labels)
    n_agree = 0
    for i in range(len(a)):
        p, q = softmax(a[i].numpy()), softmax(b[i].numpy())
        y, yt = int(np.argmax(p)), int(np.argmax(q))
        n_agree += y == yt
        exp = math.sqrt(p[y] * q[yt]) if y == yt else 0.0
        assert float(ei[i]) == pytest.approx(exp, abs=1e-12)
        assert float(ag[i]) == float(y == yt)
        assert float(acc[i]) == float(y == int(labels[i]))
    assert 0 < n_agree < 40  # both branches exercised


def test_broadcast_over_orbit():
    a = torch.randn(5, 9)
    bt = torch.randn(3, 5, 9)
    for fn in (F.kl, F.js, F.logit_l2, F.logit_l2_normalized, F.effective_invariance,
               F.agreement):
        out = fn(a, bt)
        assert out.shape == (3, 5)
        for j in range(3):
            torch.testing.assert_close(out[j], fn(a, bt[j]))


@pytest.mark.parametrize("fn", [F.kl, F.js, F.logit_l2, F.logit_l2_normalized])
def test_regularizers_are_differentiable(fn):
    a, b = _pair(n=3, k=4, seed=4)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: fn(x, y), (a, b))


def test_zero_for_identical_logits():
    a, _ = _pair()
    for fn in (F.kl, F.js, F.logit_l2, F.logit_l2_normalized):
        assert float(fn(a, a).abs().max()) < 1e-12
    torch.testing.assert_close(F.effective_invariance(a, a), torch.softmax(a, -1).amax(-1))


def test_shape_errors():
    with pytest.raises(ValueError, match="same number of classes"):
        F.kl(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="labels"):
        F.accuracy(torch.randn(3, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        F.accuracy(torch.randn(3, 4), torch.zeros(3))


@pytest.mark.parametrize("cls,fn", [(A.KL, F.kl), (A.JS, F.js), (A.LogitL2, F.logit_l2),
                                    (A.LogitL2Normalized, F.logit_l2_normalized),
                                    (A.EffectiveInvariance, F.effective_invariance),
                                    (A.Agreement, F.agreement)])
def test_accumulated_equals_functional(cls, fn):
    a, b = torch.randn(50, 9), torch.randn(3, 50, 9)
    acc = cls()
    for s in (slice(0, 7), slice(7, 30), slice(30, 50)):
        acc.update(a[s], b[:, s])
    torch.testing.assert_close(acc.per_sample(), fn(a, b).T)
    assert float(acc.compute()) == pytest.approx(float(fn(a, b).double().mean()), rel=1e-6)
    acc.reset()
    with pytest.raises(RuntimeError):
        acc.compute()


def test_accuracy_accumulator():
    a, y = torch.randn(20, 9), torch.randint(0, 9, (20,))
    acc = A.Accuracy()
    acc.update(a[:10], y[:10])
    acc.update(a[10:], y[10:])
    assert float(acc.compute()) == pytest.approx(float((a.argmax(1) == y).float().mean()))
