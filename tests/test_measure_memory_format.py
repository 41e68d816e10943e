"""``measure`` runs conv weights channels-last (CPU speed) without changing results or models."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import invlab.metrics.engine as engine
from invlab.metrics import measure
from invlab.metrics.memory_format import channels_last_convs
from invlab.models import create_model

CL = torch.channels_last


class ViewsItsWeight(nn.Module):
    """A conv layer whose forward needs a contiguous weight (``.view``): must be left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)  # 2 input channels: the swap is real
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight.view(4, 18).view(4, 2, 3, 3)  # raises on a channels-last weight
        z = F.conv2d(x, w, self.conv.bias, padding=1).relu().mean((2, 3))
        return self.head(z)


def _measure(model: nn.Module, x: torch.Tensor, metrics: list[str], transform: str):
    return measure(model, x, labels=torch.zeros(len(x), dtype=torch.long), transform=transform,
                   metrics=metrics, progress=False, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("transform,metrics", [
    ("r4", ["kl", "logit_l2", "saliency_similarity"]),
    ("rotate", ["logit_l2", "representation_invariance"]),
])
def test_same_numbers_as_the_default_layout(monkeypatch: pytest.MonkeyPatch, transform: str,
                                            metrics: list[str]) -> None:
    torch.manual_seed(0)
    model = create_model("cnn_small", in_shape=[1, 36, 36], num_classes=9).eval()
    # zero-mean inputs: an untrained CNN's features of [0, 1] images are nearly parallel,
    # and the RI ratio of two ~1e-4 cosine distances would amplify float rounding
    x = torch.randn(6, 1, 36, 36)
    fast = _measure(model, x, metrics, transform)
    monkeypatch.setattr(engine, "channels_last_convs", lambda *a, **k: nullcontext(False))
    plain = _measure(model, x, metrics, transform)
    assert fast.per_sample.keys() == plain.per_sample.keys()
    for key, v in plain.per_sample.items():
        # RI is 1 - d_same / d_other of cosine distances ~1e-3 for an untrained CNN: the
        # ratio turns ~1e-7 rounding of the features into up to ~5e-4 of the score (the
        # distances themselves agree to 1e-5)
        atol = 1e-3 if key == "representation_invariance" else 1e-5
        torch.testing.assert_close(fast.per_sample[key], v, rtol=1e-4, atol=atol)


def test_the_callers_model_is_left_as_it_was() -> None:
    model = create_model("cnn_small", in_shape=[1, 36, 36], num_classes=9)
    weights = {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
    with channels_last_convs(model) as switched:
        assert switched
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(m.weight.is_contiguous(memory_format=CL) for m in convs)
    assert {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()} == weights
    _measure(model, torch.rand(3, 1, 36, 36), ["kl"], "r4")
    assert {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()} == weights
    assert model.training  # measure restores the training flag too


def test_a_model_that_needs_contiguous_weights_is_run_as_it_was() -> None:
    model = ViewsItsWeight()
    x = torch.rand(4, 2, 8, 8)
    with pytest.raises(RuntimeError):  # the model really breaks on channels-last weights
        with channels_last_convs(model):
            model(x)
    with channels_last_convs(model, model, x[:2]) as switched:
        assert not switched and model.conv.weight.is_contiguous()
    m = _measure(model, x, ["kl", "logit_l2"], "r4")
    assert torch.isfinite(m.per_sample["kl"]).all()


def test_a_one_channel_convolution_outputs_channels_last() -> None:
    # a [O, 1, kH, kW] weight is as contiguous as it is channels-last, so without exact
    # channels-last strides oneDNN returns the first convolution's output in the default layout
    model = create_model("cnn_medium", in_shape=[1, 28, 28], num_classes=10).eval()
    conv = model.features[0]
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        assert not conv(x).is_contiguous(memory_format=CL)
        with channels_last_convs(model, model, x[:2]) as switched:
            assert switched and conv(x).is_contiguous(memory_format=CL)
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
    assert not conv(x).is_contiguous(memory_format=CL)  # the weight is restored
