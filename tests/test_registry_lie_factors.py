"""The Lie derivative and the factors of variation in the metric registry (issue 23):
``measure(metrics=["lie_derivative"])`` equals :func:`invlab.metrics.lie_derivative`, the
options are validated where the configured metric is made, and ``factors_of_variation``
(a dataset-level analysis) is listed but refused by ``measure`` with one line naming the
function that computes it."""

from __future__ import annotations

import importlib
import inspect
import json

import pytest
import torch
from torch import nn

from invlab.factors import B21_FAMILIES, factors_of_variation
from invlab.metrics import (
    FactorsOfVariation,
    LieDerivative,
    MeasureError,
    lie_derivative,
    measure,
)
from invlab.metrics.functional.factors import factor_deltas
from invlab.metrics.functional.lie import lie_values
from invlab.metrics.registry import REGISTRY, metric_rows, no_member_keys
from invlab.metrics.result import NO_MEMBER
from invlab.models import create_model

SHAPE = (1, 12, 12)
NORM = {"mean": [0.3], "std": [0.4]}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp5", in_shape=SHAPE, num_classes=4, hidden=16).eval()


def _x(n: int = 14, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 4, (n,), generator=g)


def _lie(m) -> torch.Tensor:  # type: ignore[no-untyped-def]
    v = m.per_sample["lie_derivative"]
    assert v.shape == (m.n, 1)  # one value per sample: the derivative at m0, no member
    return v[:, 0]


# ---------------------------------------------------------------- measure == direct call
@pytest.mark.parametrize("transform,metric,kwargs", [
    ("rotate", "lie_derivative", {}),
    ("rotate", LieDerivative(method="jvp"), {"method": "jvp"}),
    ("translate_x", LieDerivative(eps=0.5), {"eps": 0.5}),
    ("brightness_up", LieDerivative(at=1.5), {"at": 1.5}),
    ("rotate", LieDerivative(layer="hidden.2"), {"layer": "hidden.2"}),
])
@pytest.mark.parametrize("normalization", [None, NORM])
def test_measure_equals_the_direct_call(transform, metric, kwargs, normalization):
    model, (x, y) = _model(), _x()
    m = measure(model, x, labels=y, transform=transform, metrics=["kl", metric],
                normalization=normalization)
    ref = lie_derivative(model, x, transform, normalization=normalization, **kwargs)
    assert torch.equal(_lie(m), ref)
    assert m.summary["lie_derivative"] == pytest.approx(float(ref.double().mean()))
    assert m.statistics["lie_derivative"] == "mean"


def test_measure_in_chunks_equals_the_direct_call_in_batches():
    model, (x, _) = _model(1), _x(23)
    m = measure(model, x, transform="rotate", metrics=["LIE"], batch_size=5)
    assert torch.equal(_lie(m), lie_derivative(model, x, "rotate", batch_size=5))


def test_options_reach_the_lie_derivative():
    model, (x, _) = _model(), _x()
    ref = lie_derivative(model, x, "translate_x", eps=0.5)
    for opts in ({"lie_derivative": {"eps": 0.5}}, {"LIE": {"eps": 0.5}}, {"eps": 0.5}):
        m = measure(model, x, transform="translate_x", metrics=["lie_derivative"], options=opts)
        assert torch.equal(_lie(m), ref), opts
    default = measure(model, x, transform="translate_x", metrics=["lie_derivative"])
    assert not torch.equal(_lie(default), ref)  # eps does change the values
    assert m.settings["options"] == {"lie_derivative": {"eps": 0.5, "method": "central",
                                                        "at": None, "layer": None}}


def test_measure_refuses_what_lie_derivative_refuses():
    model, (x, _) = _model(), _x()
    with pytest.raises(MeasureError, match=r"continuous family .* r4 \(group\)"):
        measure(model, x, transform="r4", metrics=["lie_derivative"])
    with pytest.raises(MeasureError, match="moves the image out of the 12x12 canvas"):
        measure(model, x, transform="translate_x", metrics=[LieDerivative(eps=40)])
    with pytest.raises(MeasureError, match="layer 'nope' is not a submodule"):
        measure(model, x, transform="rotate", metrics=[LieDerivative(layer="nope")])
    with pytest.raises(MeasureError, match="cannot be differentiated|needs a geometric"):
        measure(model, x, transform="posterize", metrics=[LieDerivative(method="jvp")])


# ---------------------------------------------------------------- LieDerivative's options
def test_lie_derivative_declares_the_functions_defaults():
    spec = REGISTRY["lie_derivative"]
    assert spec.config is LieDerivative and spec.fn is lie_values
    assert spec.needs == {"family_derivative"} and not spec.per_member
    assert spec.higher_is_better is False and spec.value_range == (0.0, float("inf"))
    sig = inspect.signature(lie_derivative).parameters
    for opt, default in LieDerivative().options().items():
        assert sig[opt].default == default, opt
    assert "lie_derivative" in NO_MEMBER and "lie_derivative" in no_member_keys()


@pytest.mark.parametrize("kwargs,match", [
    ({"eps": 0}, r"eps=0: expected a number > 0"),
    ({"eps": -1e-3}, r"eps=-0.001: expected a number > 0"),
    ({"eps": True}, r"eps=True: expected a number > 0"),
    ({"eps": float("inf")}, r"eps=inf"),
    ({"method": "forward"}, r"method='forward': expected one of central, jvp"),
    ({"at": "zero"}, r"at='zero': expected None"),
    ({"layer": ""}, r"layer='': expected None"),
    ({"method": "jvp", "layer": "hidden.2"}, r"method='jvp' is defined on the probabilities"),
])
def test_lie_derivative_options_are_validated(kwargs, match):
    with pytest.raises(MeasureError, match=match) as e:
        LieDerivative(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_lie_options_in_measure_are_one_line_errors():
    model, (x, _) = _model(), _x()
    with pytest.raises(MeasureError, match=r"unknown option 'epsilon' for metric lie_derivative"):
        measure(model, x, transform="rotate", metrics=["lie_derivative"],
                options={"lie_derivative": {"epsilon": 0.1}})
    with pytest.raises(MeasureError, match=r"lie_derivative is configured twice"):
        measure(model, x, transform="rotate", metrics=[LieDerivative(eps=0.1)],
                options={"eps": 0.2})


# ---------------------------------------------------------------- factors of variation
def test_factors_of_variation_is_listed_and_points_to_its_function():
    spec = REGISTRY["factors_of_variation"]
    assert spec.computed_by == "invlab.factors.factors_of_variation"
    module, _, attr = spec.computed_by.rpartition(".")
    assert getattr(importlib.import_module(module), attr) is factors_of_variation
    assert spec.fn is factor_deltas and spec.config is FactorsOfVariation
    assert spec.higher_is_better is None and spec.value_range == (0.0, 1.0)
    assert "factors_of_variation" not in no_member_keys()
    assert "clean_factors_of_variation" not in no_member_keys()
    row = next(r for r in metric_rows() if r["name"] == "factors_of_variation")
    assert "invlab.factors.factors_of_variation" in row["description"]
    assert row["per_member"] == "no" and row["better"] == "-" and row["range"] == "[0, 1]"


@pytest.mark.parametrize("how", [
    {"metrics": ["factors_of_variation"]},
    {"metrics": ["kl", FactorsOfVariation(n_pairs=3)]},
    {"metrics": "kl,factors_of_variation"},
    {"metrics": ["kl"], "options": {"factors_of_variation": {"n_pairs": 3}}},
])
def test_measure_refuses_factors_of_variation_naming_the_function(how):
    model, (x, y) = _model(), _x()
    with pytest.raises(MeasureError) as e:
        measure(model, x, labels=y, transform="rotate", **how)
    msg = str(e.value)
    assert msg.startswith("factors_of_variation is a dataset-level analysis")
    assert "call invlab.factors.factors_of_variation(model, images, labels" in msg
    assert "\n" not in msg


def test_factors_flat_options_are_not_measure_options():
    model, (x, _) = _model(), _x()
    with pytest.raises(MeasureError, match=r"unknown option 'n_pairs' in measure"):
        measure(model, x, transform="rotate", metrics=["kl"], options={"n_pairs": 3})


def test_factors_of_variation_options_are_its_keyword_arguments():
    sig = inspect.signature(factors_of_variation).parameters
    for opt, default in FactorsOfVariation().options().items():
        assert sig[opt].default == default, opt
    assert FactorsOfVariation().transforms == B21_FAMILIES
    model, (x, y) = _model(), _x(40)
    cfg = FactorsOfVariation(transforms=["rotate", "zoom_in"], n_pairs=5)
    assert cfg.transforms == ("rotate", "zoom_in") and cfg == FactorsOfVariation(
        transforms=("rotate", "zoom_in"), n_pairs=5)
    got = factors_of_variation(model, x, y, generator=torch.Generator().manual_seed(0),
                               **cfg.options())
    ref = factors_of_variation(model, x, y, transforms=("rotate", "zoom_in"), n_pairs=5,
                               generator=torch.Generator().manual_seed(0))
    assert json.dumps(got.to_dict()) == json.dumps(ref.to_dict())
    assert got.transforms == ["rotate", "zoom_in"]


@pytest.mark.parametrize("kwargs,match", [
    ({"n_pairs": 0}, r"n_pairs=0: expected a positive int"),
    ({"n_pairs": 2.5}, r"n_pairs=2.5: expected a positive int"),
    ({"transforms": "rotate"}, r"transforms='rotate': expected a non-empty list"),
    ({"transforms": []}, r"transforms=\[\]: expected a non-empty list"),
    ({"layer": 3}, r"layer=3: expected None"),
])
def test_factors_of_variation_options_are_validated(kwargs, match):
    with pytest.raises(MeasureError, match=match):
        FactorsOfVariation(**kwargs)


def test_cli_metrics_list_shows_both(capsys):
    from invlab.cli import main

    assert main(["metrics", "list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("lie_derivative "))
    assert line.split()[1:5] == ["LIE", "lower", "[0,", "inf)"] and "family_derivative" in line
    assert any(ln.startswith("factors_of_variation ") for ln in out.splitlines())
    assert "  lie_derivative: eps=0.01,method='central',at=None,layer=None" in out
    assert "n_pairs=200,layer=None (keyword arguments of invlab.factors.factors_of_variation)" \
        in out
    assert "factors_of_variation: share of same-class pairs" in out
