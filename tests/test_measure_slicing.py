"""Rows per model call (``invlab.metrics.slicing``): sized from the model's largest
activation, and never a change in what ``measure`` returns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import invlab.metrics.engine as engine
from invlab.metrics import measure
from invlab.metrics.slicing import ACTIVATION_BYTES, MAX_ROWS, MIN_ROWS, rows_per_call
from invlab.models import create_model


@pytest.mark.parametrize("arch,shape,rows", [
    ("cnn_medium", (1, 28, 28), 256),  # largest activation 8x28x28 floats = 25 KB per image
    ("cnn_small", (1, 28, 28), 128),   # 16x28x28 floats = 50 KB
    ("cnn_small", (1, 36, 36), 64),    # 16x36x36 floats = 83 KB
    ("mlp5", (1, 28, 28), MAX_ROWS),   # 784 floats: matmul-bound, large slices
])
def test_rows_follow_the_largest_activation(arch: str, shape: tuple[int, ...], rows: int) -> None:
    model = create_model(arch, in_shape=list(shape), num_classes=10).eval()
    assert rows_per_call(model, model, torch.rand(1, *shape)) == rows


def test_rows_are_a_power_of_two_within_the_bounds() -> None:
    for side in (4, 8, 16, 64, 128):
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Flatten(),
                              nn.LazyLinear(3)).eval()
        rows = rows_per_call(model, model, torch.rand(2, 1, side, side))
        per_image = 8 * side * side * 4
        assert MIN_ROWS <= rows <= MAX_ROWS and rows & (rows - 1) == 0
        if MIN_ROWS < rows < MAX_ROWS:
            assert rows * per_image <= ACTIVATION_BYTES < 2 * rows * per_image


def test_not_a_module_or_a_failing_probe_gets_the_default() -> None:
    assert rows_per_call(lambda x: x.flatten(1), None, torch.rand(1, 1, 4, 4)) == MAX_ROWS

    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)  # wrong width: raises

    m = Fails()
    assert rows_per_call(m, m, torch.rand(1, 1, 4, 4)) == MAX_ROWS
    assert not m.lin._forward_hooks  # the probe's hooks are removed even on failure


def test_any_slice_gives_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = create_model("cnn_medium", in_shape=[1, 28, 28], num_classes=10).eval()
    x = torch.randn(40, 1, 28, 28)
    kw = dict(labels=torch.zeros(40, dtype=torch.long), transform="rotate", progress=False,
              metrics=["kl", "logit_l2", "accuracy", "representation_invariance"])
    ref = measure(model, x, generator=torch.Generator().manual_seed(0), **kw)
    calls: list[int] = []
    orig = model.forward

    def counting(inp: torch.Tensor) -> torch.Tensor:
        calls.append(inp.shape[0])
        return orig(inp)

    monkeypatch.setattr(engine, "rows_per_call", lambda *a, **k: 7)  # odd, tiny slices
    monkeypatch.setattr(model, "forward", counting)
    got = measure(model, x, generator=torch.Generator().manual_seed(0), **kw)
    assert calls and max(calls) <= 7  # the engine honoured the slice
    for key, v in ref.per_sample.items():
        atol = 3e-4 if key == "representation_invariance" else 1e-5
        torch.testing.assert_close(got.per_sample[key], v, rtol=1e-4, atol=atol)


def test_no_probe_when_no_slice_could_split_the_calls() -> None:
    calls: list[int] = []

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return self.lin(x.flatten(1))

    m = Counting()
    assert rows_per_call(m, m, torch.rand(1, 1, 4, 4), largest_call=MIN_ROWS) == MAX_ROWS
    assert not calls
    rows_per_call(m, m, torch.rand(1, 1, 4, 4), largest_call=MIN_ROWS + 1)
    assert calls == [1]
