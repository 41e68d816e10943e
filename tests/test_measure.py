"""The orbit engine `measure` vs brute-force loops, its result object, errors and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import rel_entr, softmax

from invlab.groups import create_group
from invlab.metrics import MeasureError, Measurement, measure
from invlab.models import create_model

SHAPE = (1, 12, 12)
PAIR = ["accuracy", "kl", "logit_l2", "logit_l2_normalized", "effective_invariance",
        "agreement", "js"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mlp5", in_shape=SHAPE, num_classes=4, hidden=16).eval()


def _data(n=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g) * 3, torch.randint(0, 4, (n,), generator=g)


def _brute(model, x, y, group, elements):
    """For every sample, for every element: forward one image, compute with numpy."""
    g = create_group(group)
    out = {m: np.zeros((len(x), len(elements))) for m in PAIR}
    with torch.no_grad():
        for i in range(len(x)):
            a = model(x[i:i + 1])[0].double().numpy()
            p = softmax(a)
            for j, e in enumerate(elements):
                b = model(g.act(x[i:i + 1], e))[0].double().numpy()
                q = softmax(b)
                yh, yt = int(p.argmax()), int(q.argmax())
                m = (p + q) / 2
                out["accuracy"][i, j] = float(yt == int(y[i]))
                out["kl"][i, j] = rel_entr(p, q).sum()
                out["logit_l2"][i, j] = 0.5 * ((a - b) ** 2).sum()
                out["logit_l2_normalized"][i, j] = ((a - b) ** 2).sum() / (a**2).sum()
                out["effective_invariance"][i, j] = math.sqrt(p[yh] * q[yt]) if yh == yt else 0
                out["agreement"][i, j] = float(yh == yt)
                out["js"][i, j] = 0.5 * rel_entr(p, m).sum() + 0.5 * rel_entr(q, m).sum()
    return out


@pytest.mark.parametrize("group,elements,batch_size", [
    ("r4", None, None), ("r4", None, 4), ("t3", None, 5), ("r4", [2], 3), ("d4", [0, 5, 7], 6),
])
def test_measure_matches_brute_force(model, group, elements, batch_size):
    x, y = _data()
    g = create_group(group)
    els = g.non_identity if elements is None else elements
    m = measure(model, x, labels=y, group=group, metrics=PAIR, elements=elements,
                batch_size=batch_size)
    ref = _brute(model, x, y, group, els)
    assert m.elements == list(els) and m.n == len(x) and m.group == g.name
    for name in PAIR:
        got = m.per_sample[name].double().numpy()
        assert got.shape == (len(x), len(els))
        np.testing.assert_allclose(got, ref[name], rtol=2e-4, atol=2e-6, err_msg=name)
        assert m.summary[name] == pytest.approx(ref[name].mean(), rel=2e-4, abs=2e-6)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float()
    torch.testing.assert_close(m.per_sample["clean_accuracy"][:, 0], clean)


def test_include_identity_and_aliases(model):
    x, y = _data()
    m = measure(model, x, labels=y, group="r4", metrics="LI,di,Ei", include_identity=True)
    assert m.elements == [0, 1, 2, 3]
    assert set(m.summary) == {"logit_l2", "kl", "effective_invariance"}
    assert float(m.per_sample["logit_l2"][:, 0].abs().max()) == 0.0
    assert m.summary["logit_l2"] > 0


def test_measurement_statistics(model):
    x, y = _data(n=20)
    m = measure(model, x, labels=y, group="r4", metrics=["kl", "accuracy", "sensitivity"])
    s = m.per_sample["kl"].double().mean(1).numpy()
    lo, hi = m.ci("kl")
    rlo, rhi = stats.t.interval(0.95, len(s) - 1, loc=s.mean(), scale=stats.sem(s))
    assert (lo, hi) == pytest.approx((rlo, rhi), rel=1e-6)
    lo9, hi9 = m.ci("DI", level=0.9)
    assert lo < lo9 < hi9 < hi
    d = m.to_dict()
    assert set(d) >= {"metrics", "n", "group"} and d["n"] == 20 and d["group"] == "r4"
    assert d["metrics"]["kl"]["ci95"] == pytest.approx([lo, hi])
    assert d["metrics"]["kl"]["std"] == pytest.approx(s.std(ddof=1))
    json.dumps(d)
    assert m.per_sample["sensitivity"].shape == (20, 1)
    df = m.to_frame()
    assert set(df.columns) == {"metric", "sample", "element", "value"}
    assert len(df[df.metric == "kl"]) == 60 and len(df[df.metric == "sensitivity"]) == 20
    assert df[df.metric == "kl"].value.mean() == pytest.approx(m.summary["kl"])
    assert df[df.metric == "sensitivity"].element.isna().all()
    with pytest.raises(KeyError, match="not measured"):
        m.ci("js")
    assert isinstance(m, Measurement) and "kl=" in repr(m)


def test_training_mode_restored_and_no_grad_left(model):
    x, y = _data()
    model.train()
    measure(model, x, labels=y, metrics=["kl", "SI"], n_steps=4)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    measure(model, x, labels=y, metrics=["kl"])
    assert not model.training


def test_chunking_does_not_change_results(model):
    x, y = _data(n=23)
    a = measure(model, x, labels=y, metrics=["kl", "SI", "EI"], n_steps=4, batch_size=23)
    b = measure(model, x, labels=y, metrics=["kl", "SI", "EI"], n_steps=4, batch_size=4)
    for k in a.per_sample:
        torch.testing.assert_close(a.per_sample[k], b.per_sample[k], rtol=1e-5, atol=1e-6)


# ---- bad inputs -------------------------------------------------------------------------

def test_error_images_not_4d(model):
    with pytest.raises(MeasureError, match="4-D"):
        measure(model, torch.randn(5, 12, 12))
    with pytest.raises(MeasureError, match="torch.Tensor"):
        measure(model, np.zeros((5, 1, 12, 12)))
    with pytest.raises(MeasureError, match="floating point"):
        measure(model, torch.zeros(5, 1, 12, 12, dtype=torch.uint8))
    with pytest.raises(MeasureError, match="empty"):
        measure(model, torch.zeros(0, 1, 12, 12))


def test_error_shape_mismatch(model):
    with pytest.raises(MeasureError, match=r"expects \[1, 12, 12\]"):
        measure(model, torch.randn(4, 3, 12, 12))
    with pytest.raises(MeasureError, match=r"\[1, 10, 10\].*\[1, 12, 12\]"):
        measure(model, torch.randn(4, 1, 10, 10))


def test_error_model_runtime_error_is_explained():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3))  # no in_shape
    with pytest.raises(MeasureError, match=r"model failed on images of shape \[C, H, W\] = "
                                           r"\[1, 10, 10\]"):
        measure(net, torch.randn(4, 1, 10, 10), metrics=["kl"])


def test_error_labels(model):
    x, y = _data()
    with pytest.raises(MeasureError, match=r"shape \[N\] = \[13\].*\(12,\)"):
        measure(model, x, labels=y[:12])
    with pytest.raises(MeasureError, match="integer"):
        measure(model, x, labels=y.float())
    with pytest.raises(MeasureError, match="needs labels"):
        measure(model, x, metrics=["accuracy"])
    with pytest.raises(MeasureError, match="4 classes"):
        measure(model, x, labels=y + 4)


class _NaNWhenLarge(torch.nn.Module):
    """Finite weights, NaN logits for images whose first pixel exceeds 100 (any rotation
    keeps the NaN: the whole image is scaled)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        big = x.flatten(1).abs().amax(1) > 100
        out = self.inner(x)
        return torch.where(big[:, None], torch.full_like(out, float("nan")), out)


def test_error_nonfinite_logits(model):
    x, y = _data()
    x[[2, 5, 7]] = float("nan")  # NaN pixels are refused before the model runs
    with pytest.raises(MeasureError, match="NaN/inf pixels in 3 of 13 samples"):
        measure(model, x, labels=y, batch_size=4)
    x, y = _data()
    x[[2, 5, 7]] *= 1000  # finite pixels, but the model returns NaN logits for them
    with pytest.raises(MeasureError, match="NaN/inf logits for 3 of 13 samples"):
        measure(_NaNWhenLarge(model), x, labels=y, batch_size=4)


def test_error_unknown_metric_lists_valid(model):
    x, _ = _data()
    with pytest.raises(MeasureError, match="unknown metric 'foo'.*valid metrics: accuracy.*kl"):
        measure(model, x, metrics=["kl", "foo"])


def test_error_elements_and_group(model):
    x, _ = _data()
    with pytest.raises(MeasureError, match="not an element of r4"):
        measure(model, x, elements=[1, 4], metrics=["kl"])
    with pytest.raises(MeasureError, match="unknown group"):
        measure(model, x, group="so3", metrics=["kl"])
    with pytest.raises(MeasureError, match="divisible"):
        measure(model, x, group="t5", metrics=["kl"])
    with pytest.raises(MeasureError, match="batch_size"):
        measure(model, x, batch_size=0, metrics=["kl"])
    with pytest.raises(MeasureError, match="ig_method"):
        measure(model, x, metrics=["SI"], ig_method="simpson")


def test_error_is_value_error():
    assert issubclass(MeasureError, ValueError)


# ---- CLI ----------------------------------------------------------------------------------

def test_cli_measure_json_and_table(tmp_path, monkeypatch, capsys, model):
    import argparse

    ck = pytest.importorskip("invlab.checkpoint")
    data = pytest.importorskip("invlab.data")
    from invlab.cli.measure import add_measure_parser, run_measure

    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(model, path, group="r4", normalization={"mean": 0.0, "std": 1.0})
    x, y = _data(n=9)
    seen = {}

    def fake_load(spec, metadata, limit=None):
        seen["spec"], seen["limit"] = spec, limit
        return x[:limit], y[:limit]

    monkeypatch.setattr(data, "load_for_checkpoint", fake_load)
    parser = argparse.ArgumentParser()
    add_measure_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake:test",
                              "--group", "r4", "--metrics", "kl,LI,EI", "--limit", "7",
                              "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 7 and out["group"] == "r4" and out["data"] == "fake:test"
    assert set(out["metrics"]) == {"kl", "logit_l2", "effective_invariance"}
    assert set(out["metrics"]["kl"]) == {"mean", "std", "ci95", "median", "q1", "q3", "statistic",
                                         "n"} and "model" in out
    ref = measure(model, x[:7], metrics=["kl"])
    assert out["metrics"]["kl"]["mean"] == pytest.approx(ref.summary["kl"], rel=1e-6)
    assert seen == {"spec": "fake:test", "limit": 7}

    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake",
                              "--metrics", "kl"])
    assert run_measure(args) == 0
    text = capsys.readouterr().out
    assert "metric" in text and "95% CI" in text and "kl" in text

    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake",
                              "--metrics", "kl,nope"])
    assert run_measure(args) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err


def test_cli_measure_transform_family_and_layers(tmp_path, monkeypatch, capsys, model):
    import argparse

    ck = pytest.importorskip("invlab.checkpoint")
    data = pytest.importorskip("invlab.data")
    from invlab.cli.measure import add_measure_parser

    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(model, path, group="r4", normalization={"mean": 0.1, "std": 0.5})
    pix = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(data, "load_for_checkpoint",
                        lambda spec, metadata, limit=None: ((pix - 0.1) / 0.5, y))
    parser = argparse.ArgumentParser()
    add_measure_parser(parser.add_subparsers(dest="cmd"))
    layer = [n for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)][0]
    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake:test",
                              "--transform", "rotate", "--metrics", "kl,RI",
                              "--layers", layer, "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "family" and out["group"] == "rotate" and len(out["elements"]) == 9
    assert len(out["by_member"]["kl"]) == 9
    assert f"representation_invariance@{layer}" in out["by_member"]
    # the CLI measures in pixel space with the checkpoint's normalization
    ref = measure(model, pix, transform="rotate", normalization={"mean": 0.1, "std": 0.5},
                  metrics=["kl"])
    assert out["by_member"]["kl"] == pytest.approx(list(ref.by_member("kl").values()),
                                                   rel=1e-4, abs=1e-7)
    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake:test",
                              "--transform", "rotate:30", "--metrics", "kl"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "transform: rotate:30" in text and "mean per magnitude" in text
    args = parser.parse_args(["measure", "--checkpoint", str(path), "--data", "fake:test",
                              "--transform", "brightness_up", "--metrics", "SI"])
    assert args.func(args) == 2
    assert "needs an invertible transform" in capsys.readouterr().err
