"""Representation invariance per layer (B21) against brute-force loops, on invlab's models
and on a plain ``nn.Sequential`` CNN invlab did not build."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invlab.groups import create_group
from invlab.metrics import MeasureError, measure
from invlab.metrics import functional as F
from invlab.models import create_model


def _cos_d(a, b):
    return 1 - float(a @ b) / (float(a.norm()) * float(b.norm()))


def _brute_ri(feat, x, group, elements, perm):
    """Per sample i and element g: 1 − d(z_i, z^g_i) / d(z_i, z^g_π(i)), one image at a time."""
    g = create_group(group)
    n = x.shape[0]
    out = torch.zeros(n, len(elements), dtype=torch.float64)
    same = torch.zeros_like(out)
    other = torch.zeros_like(out)
    with torch.no_grad():
        z = [feat(x[i:i + 1]).flatten().double() for i in range(n)]
        for j, e in enumerate(elements):
            zt = [feat(g.act(x[i:i + 1], e)).flatten().double() for i in range(n)]
            for i in range(n):
                same[i, j] = _cos_d(z[i], zt[i])
                other[i, j] = _cos_d(z[i], zt[int(perm[i])])
                out[i, j] = 1 - same[i, j] / other[i, j]
    return out, same, other


def _sequential_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5),
    ).eval()


def _x(n=9, seed=1):
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def test_sequential_cnn_named_layer_and_default_match_brute_force():
    net = _sequential_cnn()
    x = _x()
    m = measure(net, x, group="r4", metrics=["RI", "kl"], layers=["3", "penultimate"],
                generator=torch.Generator().manual_seed(4), batch_size=9)
    perm = F.derangement(9, torch.Generator().manual_seed(4))
    els = [1, 2, 3]
    cases = {"3": lambda z: net[:4](z),  # output of the 2nd conv
             "penultimate": lambda z: net[:9](z)}  # input of the last Linear
    for layer, feat in cases.items():
        ref, same, other = _brute_ri(feat, x, "r4", els, perm)
        got = m.per_sample[f"representation_invariance@{layer}"]
        assert got.shape == (9, 3)
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.per_sample[f"representation_invariance_d_same@{layer}"]
                                   .double(), same, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(m.per_sample[f"representation_invariance_d_other@{layer}"]
                                   .double(), other, rtol=1e-4, atol=1e-6)
    assert "kl" in m.per_sample and "representation_invariance" not in m.per_sample


def test_sequential_default_layer_is_input_of_last_linear():
    net = _sequential_cnn()
    x = _x()
    gen = torch.Generator().manual_seed(2)
    m = measure(net, x, group="flip", metrics=["RI"], generator=gen, batch_size=9)
    perm = F.derangement(9, torch.Generator().manual_seed(2))
    ref, _, _ = _brute_ri(lambda z: net[:9](z), x, "flip", [1], perm)
    torch.testing.assert_close(m.per_sample["representation_invariance"].double(), ref,
                               rtol=1e-4, atol=1e-5)
    assert set(m.per_sample) == {"representation_invariance", "representation_invariance_d_same",
                                 "representation_invariance_d_other"}


def test_invlab_mlp_named_inner_layer_matches_brute_force():
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=(1, 12, 12), num_classes=5, hidden=16).eval()
    name = [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)][1]
    x = _x(8)
    m = measure(model, x, group="r4", metrics=["RI"], layers=[name],
                generator=torch.Generator().manual_seed(5), batch_size=8)
    captured = {}
    h = model.get_submodule(name).register_forward_hook(
        lambda _m, _i, o: captured.__setitem__("z", o))

    def feat(z):
        model(z)
        return captured["z"]

    perm = F.derangement(8, torch.Generator().manual_seed(5))
    ref, _, _ = _brute_ri(feat, x, "r4", [1, 2, 3], perm)
    h.remove()
    torch.testing.assert_close(m.per_sample[f"representation_invariance@{name}"].double(), ref,
                               rtol=1e-4, atol=1e-5)
    # the default (forward_features) keeps its previous key and values
    d = measure(model, x, group="r4", metrics=["RI"], generator=torch.Generator().manual_seed(5),
                batch_size=8)
    ref, _, _ = _brute_ri(model.forward_features, x, "r4", [1, 2, 3], perm)
    torch.testing.assert_close(d.per_sample["representation_invariance"].double(), ref,
                               rtol=1e-3, atol=1e-5)  # float32 batch vs one-image features


def test_l2_distance_option():
    net = _sequential_cnn()
    x = _x(6)
    m = measure(net, x, group="r4", metrics=["RI"], representation_distance="l2",
                generator=torch.Generator().manual_seed(0), batch_size=6)
    perm = F.derangement(6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, zt = net[:9](x), net[:9](torch.rot90(x, 1, dims=(-2, -1)))
    ref = 1 - (z - zt).norm(dim=1) / (z - zt[perm]).norm(dim=1)
    torch.testing.assert_close(m.per_sample["representation_invariance"][:, 0], ref,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(MeasureError, match="cosine or l2"):
        measure(net, x, metrics=["RI"], representation_distance="cityblock")


def test_unknown_layer_is_named():
    net = _sequential_cnn()
    with pytest.raises(MeasureError, match="layer 'features.3' is not a submodule.*0, 1, 2"):
        measure(net, _x(4), metrics=["RI"], layers=["features.3"])
    no_linear = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(MeasureError, match="no forward_features and no nn.Linear"):
        measure(no_linear, _x(4), metrics=["RI"])


def test_a_layer_the_forward_never_calls_is_named():
    class WithUnusedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = _sequential_cnn()
            self.unused = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    with pytest.raises(MeasureError, match="layer 'unused' produced no output"):
        measure(WithUnusedHead(), _x(4), metrics=["RI"], layers=["unused", "body.0"])
