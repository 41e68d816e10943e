"""Models: parameter counts, invariance by construction (wt_mlp5, GroupPooled), the
features/head split, registry errors."""

from __future__ import annotations

import json

import pytest
import torch

from invlab.groups import GroupError, create_group
from invlab.models import (
    MLP5,
    CNNSmall,
    GroupPooled,
    ModelError,
    WeightTiedMLP5,
    create_model,
    list_models,
)

TOL = 1e-5


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batch(n: int = 4, shape: tuple[int, ...] = (1, 36, 36), seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def max_orbit_gap(model: torch.nn.Module, group: str, x: torch.Tensor,
                  fn: str = "forward") -> dict[int, float]:
    """max |f(g·x) − f(x)| for every element g."""
    g = create_group(group)
    f = getattr(model, fn)
    with torch.no_grad():
        ref = f(x)
        return {e: float((f(g.act(x, e)) - ref).abs().max()) for e in g.elements}


def build(name: str, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **kwargs).eval()


# --------------------------------------------------------------------------- sizes


def test_mlp5_parameter_count_matches_the_paper() -> None:
    m = build("mlp5")
    assert isinstance(m, MLP5)
    assert n_params(m) == 233_225
    # 36*36*128 + 128 + 4 * (128*128 + 128) + 128*9 + 9
    assert n_params(m) == 1296 * 128 + 128 + 4 * (128 * 128 + 128) + 128 * 9 + 9
    assert n_params(build("mlp5", in_shape=(1, 28, 28), num_classes=10)) == (
        784 * 128 + 128 + 4 * (128 * 128 + 128) + 128 * 10 + 10)
    assert n_params(build("mlp5", hidden=16, depth=2)) == 1296 * 16 + 16 + 16 * 16 + 16 + 16 * 9 + 9


@pytest.mark.parametrize("group", ["r4", "t3", "d4", "flip"])
def test_wt_mlp5_ties_weights_so_has_mlp5_parameters(group: str) -> None:
    m = build("wt_mlp5", group=group)
    assert isinstance(m, WeightTiedMLP5)
    assert n_params(m) == 233_225
    assert m.tied_weight().shape == (create_group(group).order * 128, 1296)


@pytest.mark.parametrize("name", ["mlp5", "wt_mlp5", "cnn_small"])
def test_output_and_feature_shapes(name: str) -> None:
    m = build(name, num_classes=7)
    x = batch(3)
    assert m(x).shape == (3, 7)
    dim = 64 if name == "cnn_small" else 128
    assert m.forward_features(x).shape == (3, dim)
    assert isinstance(build("cnn_small"), CNNSmall)


# --------------------------------------------------------------------------- invariance


@pytest.mark.parametrize("group", ["r4", "t3"])
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_wt_mlp5_is_invariant(group: str, pool: str) -> None:
    m = build("wt_mlp5", group=group, pool=pool)
    x = batch()
    gaps = max_orbit_gap(m, group, x)
    assert max(gaps.values()) < TOL, gaps
    feats = max_orbit_gap(m, group, x, "forward_features")
    assert max(feats.values()) < TOL, feats
    # not trivially constant: different inputs give different outputs
    with torch.no_grad():
        assert float((m(x[:1]) - m(x[1:2])).abs().max()) > 1e-3


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_wt_mlp5_first_layer_pools_over_the_orbit(pool: str) -> None:
    """forward_first(x) == pool_g ReLU(W·(g·x) + b), computed directly with the group action."""
    m = build("wt_mlp5", group="d4", pool=pool)
    g, x = create_group("d4"), batch(3)
    with torch.no_grad():
        acts = torch.stack([torch.relu(m.input(g.act(x, e).flatten(1))) for e in g.elements])
        expected = acts.amax(0) if pool == "max" else acts.mean(0)
        assert torch.allclose(m.forward_first(x), expected, atol=TOL)


@pytest.mark.parametrize("inner", ["mlp5", "cnn_small"])
@pytest.mark.parametrize("group", ["r4", "t3", "d4"])
def test_group_pooled_is_invariant(inner: str, group: str) -> None:
    m = GroupPooled(build(inner), group).eval()
    x = batch()
    gaps = max_orbit_gap(m, group, x)
    assert max(gaps.values()) < TOL, gaps
    feats = max_orbit_gap(m, group, x, "forward_features")
    assert max(feats.values()) < TOL, feats
    # it is the orbit average of the wrapped model
    g = create_group(group)
    with torch.no_grad():
        avg = torch.stack([m.model(g.act(x, e)) for e in g.elements]).mean(0)
        assert torch.allclose(m(x), avg, atol=TOL)


@pytest.mark.parametrize("group", ["r4", "t3"])
def test_plain_mlp5_is_clearly_not_invariant(group: str) -> None:
    m = build("mlp5")
    gaps = max_orbit_gap(m, group, batch(16))
    assert gaps[0] == 0.0
    assert all(gaps[e] > 1e-2 for e in create_group(group).non_identity), gaps


def test_group_pooled_wrong_input_shape_errors() -> None:
    m = GroupPooled(build("mlp5", in_shape=(1, 36, 30)), "r4")
    with pytest.raises(GroupError, match="square"):
        m(torch.zeros(2, 1, 36, 30))


# --------------------------------------------------------------------------- features / head


@pytest.mark.parametrize("name", ["mlp5", "cnn_small", "wt_mlp5"])
def test_features_then_head_is_forward(name: str) -> None:
    m = build(name)
    x = batch()
    with torch.no_grad():
        assert torch.equal(m.forward_head(m.forward_features(x)), m(x))


@pytest.mark.parametrize("inner", ["mlp5", "cnn_small"])
def test_group_pooled_features_then_head_is_forward(inner: str) -> None:
    m = GroupPooled(build(inner), "d4")
    x = batch()
    with torch.no_grad():
        assert torch.allclose(m.forward_head(m.forward_features(x)), m(x), atol=TOL)


def test_gradients_flow_through_wt_mlp5() -> None:
    m = build("wt_mlp5", group="r4")
    m(batch()).sum().backward()
    assert m.input.weight.grad is not None and float(m.input.weight.grad.abs().sum()) > 0


# --------------------------------------------------------------------------- registry


def test_registry_and_serializable_kwargs() -> None:
    assert set(list_models()) == {"mlp5", "wt_mlp5", "cnn_small", "wt_cnn_small", "mlp", "wt_mlp",
        "cnn_medium", "wt_cnn_medium", "vit_tiny"}
    for name in list_models():
        m = create_model(name)
        assert m.model_name == name
        kwargs = json.loads(json.dumps(m.model_kwargs))
        rebuilt = create_model(name, **kwargs)
        assert rebuilt.model_kwargs == m.model_kwargs
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in m.state_dict().items()}
    m = create_model("wt_mlp5", group=create_group("t3"), pool="mean", hidden=8)
    assert m.model_kwargs["group"] == "t3" and m.model_kwargs["pool"] == "mean"
    assert m.model_kwargs["hidden"] == 8


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ModelError) as err:
        create_model("resnet50")
    msg = str(err.value)
    assert "'resnet50'" in msg
    for name in ("mlp5", "wt_mlp5", "cnn_small"):
        assert name in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(("name", "kwargs", "needle"), [
    ("mlp5", {"bogus": 1}, "bogus"),
    ("cnn_small", {"hidden": 3}, "hidden"),
    ("mlp5", {"depth": 0}, "depth"),
    ("mlp5", {"in_shape": (36, 36)}, "in_shape"),
    ("wt_mlp5", {"pool": "avg"}, "pool"),
])
def test_bad_kwargs_give_model_error(name: str, kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ModelError) as err:
        create_model(name, **kwargs)
    msg = str(err.value)
    assert repr(name) in msg and needle in msg


def test_wt_mlp5_rejects_inputs_the_group_cannot_act_on() -> None:
    with pytest.raises(GroupError, match="square") as err:
        create_model("wt_mlp5", group="r4", in_shape=(1, 36, 32))
    assert "H=36" in str(err.value) and "W=32" in str(err.value)
    with pytest.raises(GroupError, match="divisible by 5"):
        create_model("wt_mlp5", group="t5", in_shape=(1, 36, 36))
    with pytest.raises(GroupError, match="valid names"):
        create_model("wt_mlp5", group="r8")
    # t3 on a non-square but divisible width is fine
    assert build("wt_mlp5", group="t3", in_shape=(1, 30, 36))(torch.zeros(2, 1, 30, 36)).shape == (2, 9)
