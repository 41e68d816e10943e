"""The metric registry: one formula per metric, fast paths equal to it, plans from needs."""

from __future__ import annotations

import pytest
import torch

from invlab.metrics import functional as F
from invlab.metrics import measure
from invlab.metrics.plan import make_plan
from invlab.metrics.registry import (
    ALIASES,
    METRICS,
    REGISTRY,
    StackedLogits,
    regularizer,
    resolve_metrics,
)
from invlab.models import create_model
from invlab.train.loop import REGULARIZERS, _regularizer


def _logits(seed=0, k=4, n=50, c=7, scale=5.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(k + 1, n, c, generator=g, dtype=torch.float64) * scale
    z[1:, :5] = z[0, :5]  # some exactly invariant pairs
    z[2, 5:10] = z[0, 5:10] + 1e-3  # nearly invariant ones
    return z


@pytest.mark.parametrize("scale", [0.1, 5.0, 60.0])
def test_stacked_fast_paths_equal_functional(scale):
    z = _logits(scale=scale)
    fast = [s for s in REGISTRY.values() if s.stacked is not None]
    assert {s.name for s in fast} == {"kl", "effective_invariance", "agreement"}
    for spec in fast:
        got = spec.stacked(StackedLogits(z))
        ref = spec.fn(z[0], z[1:])
        assert got.shape == ref.shape == (4, 50)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=spec.name)


def test_registry_uses_the_functional_core():
    assert REGISTRY["kl"].fn is F.kl and REGISTRY["logit_l2"].fn is F.logit_l2
    assert REGISTRY["js"].fn is F.js and REGISTRY["accuracy"].fn is F.accuracy
    assert REGISTRY["logit_l2_normalized"].fn is F.logit_l2_normalized
    assert REGISTRY["saliency_similarity"].fn is F.saliency_similarity
    assert REGISTRY["sensitivity"].fn is F.jacobian_spectral_norm
    assert REGISTRY["representation_invariance"].fn is F.representation_invariance
    assert list(METRICS) == list(REGISTRY)
    assert all(v in REGISTRY for v in ALIASES.values())
    assert "invertible" in REGISTRY["saliency_similarity"].needs
    assert not REGISTRY["sensitivity"].per_member


def test_training_regularizers_come_from_the_registry():
    for name in REGULARIZERS:
        assert _regularizer(name) is REGISTRY[name].fn
    assert regularizer("LI") is F.logit_l2 and regularizer("js") is F.js
    with pytest.raises(ValueError, match="unknown regularizer 'effective_invariance'.*kl"):
        regularizer("effective_invariance")
    with pytest.raises(ValueError, match="unknown regularizer"):
        regularizer("nope")


def test_plan_from_declarations():
    p = make_plan(resolve_metrics("kl,LI,EI"), False, [], True)
    assert p.need_logits and p.need_orbit and not (p.gradients or p.jacobian or p.features)
    p = make_plan(["saliency_similarity"], True, [], True)
    assert p.gradients and not p.need_logits and not p.need_orbit
    p = make_plan(["saliency_similarity"], False, [], True)
    assert p.need_logits  # the SI target is the prediction on x
    p = make_plan(["sensitivity"], False, [], True)
    assert p.jacobian and not p.need_orbit
    p = make_plan(["representation_invariance"], False, ["penultimate"], True)
    assert p.features and p.need_orbit and not p.need_logits
    p = make_plan(["representation_invariance"], False, ["net.0"], True)
    assert p.need_logits  # a hooked layer is captured during the forward


class _Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls, self.rows = inner, 0, 0
        self.in_shape = inner.in_shape

    def forward(self, x):
        self.calls += 1
        self.rows += x.shape[0]
        return self.inner(x)


def test_one_forward_per_chunk_for_all_output_metrics():
    torch.manual_seed(0)
    model = _Counting(create_model("mlp5", in_shape=(1, 12, 12), num_classes=4, hidden=8))
    x, y = torch.randn(20, 1, 12, 12), torch.randint(0, 4, (20,))
    measure(model, x, labels=y, metrics=[*[m for m in METRICS if REGISTRY[m].needs ==
                                            {"logit_pairs"}], "accuracy"], batch_size=5)
    # 4 chunks, each x + 3 rotations, after the 1-image probe of rows_per_call (slicing)
    assert model.calls == 1 + 4 and model.rows == 1 + 20 * 4
