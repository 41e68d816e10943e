"""No silent NaN (issue 9, item 4): every metric refuses non-finite images, weights, logits,
features, gradients and Jacobians with a MeasureError naming the metric and the count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invlab.metrics import MeasureError, measure
from invlab.metrics import functional as F
from invlab.models import create_model

SHAPE = (1, 12, 12)


def _model(classes=4):
    torch.manual_seed(0)
    return create_model("mlp5", in_shape=SHAPE, num_classes=classes, hidden=16).eval()


def _x(n=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 4, (n,), generator=g)


def _nan_model():
    model = _model()
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    return model


@pytest.mark.parametrize("metric", ["SI", "sensitivity", "RI", "kl", "EI"])
def test_nan_weights_refused_for_every_metric(metric):
    x, y = _x()
    with pytest.raises(MeasureError, match=r"NaN/inf weights in 1 tensor.*for all 10 samples"):
        measure(_nan_model(), x, labels=y, metrics=[metric], n_steps=4)


@pytest.mark.parametrize("metric", ["SI", "sensitivity", "RI", "LI"])
def test_one_nan_pixel_refused(metric):
    x, y = _x()
    x[3, 0, 5, 5] = float("nan")
    with pytest.raises(MeasureError, match=r"NaN/inf pixels in 1 of 10 samples.*\[3\]"):
        measure(_model(), x, labels=y, metrics=[metric], n_steps=4)
    x[3, 0, 5, 5] = float("inf")
    with pytest.raises(MeasureError, match="NaN/inf pixels in 1 of 10"):
        measure(_model(), x, labels=y, metrics=[metric], n_steps=4)


class _SqrtFirst(nn.Module):
    """Finite weights and finite logits, but ∂/∂x sqrt(x²) at a zero pixel is NaN-producing
    (0/0), so gradients and Jacobians are NaN for images with an exact zero."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.in_shape = inner.in_shape

    def forward(self, x):
        return self.inner(torch.sqrt(x * x))


def test_nan_gradients_and_jacobians_named():
    x, y = _x()
    x[[1, 4], 0, 0, 0] = 0.0
    model = _SqrtFirst(_model())
    with torch.no_grad():
        assert bool(torch.isfinite(model(x)).all())
    with pytest.raises(MeasureError, match=r"sensitivity: 2 of 10 samples.*Jacobian"):
        measure(model, x, labels=y, metrics=["sensitivity"])
    with pytest.raises(MeasureError, match=r"saliency_similarity: \d+ of 10 samples.*gradients"):
        measure(model, x, labels=y, metrics=["SI"], n_steps=4)
    # the functional core returns NaN for those samples (never a torch.linalg error)
    s = F.jacobian_spectral_norm(model, x)
    assert torch.isnan(s[[1, 4]]).all() and torch.isfinite(s[[0, 2, 3]]).all()


class _NaNFeatures(nn.Module):
    """Finite weights; the features of images with a large first pixel are NaN."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(144, 8))
        self.head = nn.Linear(8, 3)

    def forward_features(self, x):
        z = self.body(x)
        big = x.flatten(1).abs().amax(1, keepdim=True) > 100
        return torch.where(big, torch.full_like(z, float("nan")), z)

    def forward(self, x):
        return self.head(self.forward_features(x))


def test_representation_invariance_nan_features_named():
    x, _ = _x()
    x[[0, 7, 8]] *= 1000
    with pytest.raises(MeasureError, match=r"representation_invariance: NaN/inf features at "
                                           r"layer 'penultimate' for 3 of 10 samples"):
        measure(_NaNFeatures(), x, metrics=["RI"])


class _IntLogits(nn.Module):
    def forward(self, x):
        return (x.flatten(1)[:, :3] * 10).long()


def test_integer_logits_refused():
    x, _ = _x()
    with pytest.raises(MeasureError, match=r"logits of dtype torch.int64.*floating-point"):
        measure(_IntLogits(), x, metrics=["kl"])
    with pytest.raises(MeasureError, match=r"logits of dtype torch.int64"):
        measure(_IntLogits(), x, metrics=["EI", "agreement"])


def test_finite_inputs_give_finite_values():
    x, y = _x()
    m = measure(_model(), x, labels=y, metrics=["kl", "SI", "RI", "sensitivity"], n_steps=4)
    assert all(bool(torch.isfinite(v).all()) for v in m.per_sample.values())


def test_cli_nan_checkpoint_exits_2_with_the_reason(tmp_path, monkeypatch, capsys):
    import argparse

    from invlab import checkpoint, data
    from invlab.cli.measure import add_measure_parser

    path = tmp_path / "nan.safetensors"
    checkpoint.save_checkpoint(_nan_model(), path, group="r4",
                               normalization={"mean": 0.0, "std": 1.0})
    x, y = _x()
    monkeypatch.setattr(data, "load_for_checkpoint", lambda spec, meta, limit=None: (x, y))
    parser = argparse.ArgumentParser()
    add_measure_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake",
                              "--metrics", "SI", "--n-steps", "4"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "NaN/inf weights" in err and "saliency_similarity" in err


def test_progress_bar_counts_every_image(capsys, monkeypatch):
    import invlab.metrics.engine as eng
    from invlab.progress import LogProgress

    def every_update(**kw):  # the non-terminal mode, one line per update
        return LogProgress(total=kw["total"], desc=kw["desc"], unit=kw["unit"],
                           file=kw["file"], interval=0.0, min_gap=0.0)

    monkeypatch.setattr(eng, "progress_bar", every_update)
    x, y = _x()
    measure(_model(), x, labels=y, metrics=["kl", "SI"], n_steps=4, progress=True,
            batch_size=4)
    err = capsys.readouterr().err
    assert "10/10 img (100%)" in err and "measure r4" in err
    measure(_model(), x, labels=y, metrics=["kl"], progress=False)
    assert capsys.readouterr().err == ""


def test_huge_finite_pixels_are_not_called_nan():
    x, y = _x()
    x[2] = 3e37  # the image's sum overflows to inf; its pixels are finite
    m = measure(_model(), x, labels=y, metrics=["agreement"])
    assert m.per_sample["agreement"].shape == (10, 3)
