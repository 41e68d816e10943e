"""``measure(..., options=...)`` and configured metrics: each metric's options live in the
registry; the deprecated keywords give bit-identical results with a DeprecationWarning;
unknown names are one-line errors; the package itself uses only the new spelling."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import invlab
from invlab.metrics import (
    KL,
    REGISTRY,
    MeasureError,
    Metric,
    RepresentationInvariance,
    SaliencySimilarity,
    measure,
)
from invlab.metrics.functional.saliency import saliency_similarity
from invlab.metrics.options import LEGACY, MeasureOptions
from invlab.models import create_model


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("cnn_small").eval()
    x = torch.rand(10, 1, 36, 36)
    y = torch.randint(0, 9, (10,))  # cnn_small: 9 classes (MNIST digits without 9)
    return model, x, y


def _old(model: Any, x: Any, y: Any, **kw: Any) -> invlab.Measurement:
    with pytest.warns(DeprecationWarning, match=r"is deprecated .* write measure\(\.\.\., "):
        return measure(model, x, labels=y, **kw)


def _new(model: Any, x: Any, y: Any, **kw: Any) -> invlab.Measurement:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return measure(model, x, labels=y, **kw)


def _assert_identical(a: invlab.Measurement, b: invlab.Measurement) -> None:
    assert list(a.per_sample) == list(b.per_sample)
    for k in a.per_sample:
        assert torch.equal(a.per_sample[k], b.per_sample[k]), k  # bit for bit, NaN-free
    assert a.elements == b.elements
    assert {k: v for k, v in a.settings.items()} == {k: v for k, v in b.settings.items()}
    assert {k: v.tolist() for k, v in a.indices.items()} == \
        {k: v.tolist() for k, v in b.indices.items()}


CASES = [
    ("group", dict(group="r4", metrics=["kl", "LI", "acc", "js"]),
     dict(transform="r4", metrics=["kl", "LI", "acc", "js"])),
    ("si-all-knobs", dict(group="r4", metrics=["SI"], n_steps=6, ig_method="riemann_middle",
                          baseline=0.25, saliency_ratio=0.5, kernel_size=5, sigma=2.0,
                          boundary="zeros", n_si=4),
     dict(transform="r4", metrics=["SI"], options={"n_si": 4, "saliency_similarity": dict(
         n_steps=6, ig_method="riemann_middle", baseline=0.25, ratio=0.5, kernel_size=5,
         sigma=2.0, boundary="zeros")})),
    ("ri-members", dict(transform="rotate", metrics=["RI", "ALIGN"],
                        representation_distance="l2", members=[30.0, -60.0],
                        include_identity=True),
     dict(transform="rotate", metrics=["RI", "ALIGN"], options={
         "RI": {"distance": "l2"}, "members": [30.0, -60.0], "include_identity": True})),
    ("elements-budget", dict(group="d4", elements=[1, 2, 5], metrics=["sensitivity", "SI"],
                             n_steps=3, n_si=None, memory_budget_bytes=1 << 20),
     dict(transform="d4", metrics=["sensitivity", SaliencySimilarity(n_steps=3)],
          options={"members": [1, 2, 5], "n_si": None, "memory_budget_bytes": 1 << 20})),
]


@pytest.mark.parametrize("old,new", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_deprecated_keywords_equal_new_options_bit_for_bit(setup: Any, old: dict,
                                                           new: dict) -> None:
    model, x, y = setup
    a = _old(model, x, y, **old, generator=torch.Generator().manual_seed(5))
    b = _new(model, x, y, **new, generator=torch.Generator().manual_seed(5))
    _assert_identical(a, b)


def test_the_warning_spells_the_new_call(setup: Any) -> None:
    model, x, y = setup
    with pytest.warns(DeprecationWarning) as rec:
        measure(model, x[:4], group="r4", metrics=["kl"], n_si=7, saliency_ratio=0.5)
    (w,) = [r for r in rec if issubclass(r.category, DeprecationWarning)]
    msg = str(w.message)
    assert msg.startswith("measure(group=, n_si=, saliency_ratio=) is deprecated")
    assert ("transform='r4', options={'n_si': 7, 'saliency_similarity': {'ratio': 0.5}}"
            in msg)
    assert w.filename == __file__  # points at the caller's line


def test_metric_objects_equal_options_and_flat_options(setup: Any) -> None:
    model, x, y = setup
    ref = _new(model, x, y, transform="r4", metrics=["kl", "SI"],
               options={"saliency_similarity": {"n_steps": 4, "ratio": 0.7}})
    obj = _new(model, x, y, transform="r4",
               metrics=[KL(), SaliencySimilarity(n_steps=4, ratio=0.7)])
    flat = _new(model, x, y, transform="r4", metrics="kl,SI",
                options={"n_steps": 4, "SI": {"ratio": 0.7}})
    _assert_identical(ref, obj)
    _assert_identical(ref, flat)
    assert ref.settings["options"] == {"saliency_similarity": {
        **SaliencySimilarity.defaults(), "n_steps": 4, "ratio": 0.7}}
    assert ref.settings["n_steps"] == 4 and ref.settings["saliency_ratio"] == 0.7
    # a per-metric section beats a flat option
    sec = _new(model, x, y, transform="r4", metrics=["kl", "SI"],
               options={"n_steps": 9, "saliency_similarity": {"n_steps": 4, "ratio": 0.7}})
    _assert_identical(ref, sec)
    # and the options do change the values (the test above can fail)
    other = _new(model, x, y, transform="r4", metrics=["kl", "SI"], options={"n_steps": 2})
    assert not torch.equal(other.per_sample["saliency_similarity"],
                           ref.per_sample["saliency_similarity"])


def test_each_metric_declares_its_options_and_defaults() -> None:
    si = REGISTRY["saliency_similarity"]
    assert si.options == {"n_steps": 50, "ig_method": "gausslegendre", "baseline": 0.0,
                          "ratio": 0.9, "kernel_size": 3, "sigma": 1.0, "boundary": None}
    assert REGISTRY["representation_invariance"].options == {"distance": "cosine"}
    # the registry's defaults are the formula's defaults (no second copy that can drift)
    sig = inspect.signature(saliency_similarity).parameters
    for opt, arg in SaliencySimilarity().call_kwargs().items():
        assert sig[opt].default == arg, opt
    for name, spec in REGISTRY.items():
        assert spec.config.name == name and issubclass(spec.config, Metric)
        assert spec.config().options() == spec.options
    assert {k for k, (t, _) in LEGACY.items() if t != "measure"} == {
        "n_steps", "ig_method", "baseline", "saliency_ratio", "kernel_size", "sigma",
        "boundary", "representation_distance"}


@pytest.mark.parametrize("options,match", [
    ({"n_stepz": 4}, r"unknown option 'n_stepz' in measure\(options=\.\.\.\); valid: "
                     r"measure-wide members, include_identity, n_si, num_workers, "
                     r"memory_budget_bytes; per metric \(saliency_similarity: n_steps, "
                     r"ig_method, baseline, ratio, kernel_size, sigma, boundary; "
                     r"representation_invariance: distance; lie_derivative: eps, method, "
                     r"at, layer\)"),
    ({"SI": {"steps": 4}}, r"unknown option 'steps' for metric saliency_similarity in "
                           r"options\['SI'\]; valid options: n_steps, ig_method, baseline, "
                           r"ratio, kernel_size, sigma, boundary"),
    ({"kl": {"distance": "l2"}}, r"unknown option 'distance' for metric kl .*valid options: "
                                 r"none"),
    ({"SI": 4}, r"options\['SI'\] must be a dict of saliency_similarity's options"),
    (["n_si"], r"options must be a dict"),
    ({"SI": {"kernel_size": 4}}, r"saliency_similarity option kernel_size=4: expected a "
                                 r"positive odd int"),
    ({"RI": {"distance": "manhattan"}}, r"distance must be cosine or l2"),
    ({"ig_method": "simpson"}, r"unknown ig_method 'simpson'.*valid: riemann_left"),
    ({"n_si": 0}, r"n_si must be a positive int"),
    ({"num_workers": -1}, r"num_workers must be an int >= 0"),
])
def test_bad_options_are_one_line_errors(setup: Any, options: Any, match: str) -> None:
    model, x, y = setup
    with pytest.raises(MeasureError, match=match) as e:
        measure(model, x, labels=y, transform="r4", metrics=["kl"], options=options)
    assert "\n" not in str(e.value)


def test_conflicts_and_unknown_keywords(setup: Any) -> None:
    model, x, y = setup
    with pytest.raises(MeasureError, match=r"saliency_similarity is configured twice"):
        measure(model, x, metrics=[SaliencySimilarity(n_steps=4)], options={"n_steps": 8})
    # the same value in both places is no conflict
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        measure(model, x[:3], metrics=[SaliencySimilarity(n_steps=2)],
                options={"SI": {"n_steps": 2}})
    with pytest.raises(MeasureError, match=r"n_steps is given twice .*options\['SI'\]"
                                           r"\['n_steps'\] and the deprecated n_steps="), \
            pytest.warns(DeprecationWarning):
        measure(model, x, metrics=["SI"], options={"SI": {"n_steps": 4}}, n_steps=8)
    with pytest.raises(MeasureError, match="configured twice"):
        measure(model, x, metrics=[SaliencySimilarity(n_steps=4), SaliencySimilarity()])
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'n_stepz'.*options="):
        measure(model, x, metrics=["kl"], n_stepz=3)
    with pytest.raises(MeasureError, match="pass either transform= or group="), \
            pytest.warns(DeprecationWarning):
        measure(model, x, transform="r4", group="r4")
    with pytest.raises(MeasureError, match=r"each entry must be a metric name or a configured"):
        measure(model, x, metrics=[3])
    with pytest.raises(MeasureError, match="unknown metric 'nope'"):
        measure(model, x, metrics=["kl", "nope"])
    with pytest.raises(MeasureError, match="needs data"):
        measure(model)


def test_configured_metric_objects_validate_and_compare() -> None:
    assert SaliencySimilarity(n_steps=8) == SaliencySimilarity(n_steps=8)
    assert SaliencySimilarity(n_steps=8) != SaliencySimilarity()
    with pytest.raises(MeasureError, match="n_steps=0: expected a positive int"):
        SaliencySimilarity(n_steps=0)
    with pytest.raises(MeasureError, match="n_steps=True: expected a positive int"):
        SaliencySimilarity(n_steps=True)
    SaliencySimilarity(n_steps=np.int64(8), ratio=np.float32(0.5))  # numpy scalars are fine
    with pytest.raises(MeasureError, match="ratio=1.5"):
        SaliencySimilarity(ratio=1.5)
    with pytest.raises(MeasureError, match="boundary='wrap'"):
        SaliencySimilarity(boundary="wrap")
    with pytest.raises(MeasureError, match="valid options: distance"):
        RepresentationInvariance.configure(metric="l2")
    with pytest.raises(MeasureError):
        MeasureOptions(memory_budget_bytes=0)
    with pytest.raises(Exception, match="cannot assign"):
        SaliencySimilarity().n_steps = 3  # type: ignore[misc]


def test_measure_has_at_most_12_parameters() -> None:
    params = inspect.signature(measure).parameters
    named = [p for p in params.values() if p.kind is not p.VAR_KEYWORD]
    assert [p.name for p in named] == [
        "model", "data", "transform", "metrics", "labels", "normalization", "layers",
        "options", "batch_size", "generator", "progress", "device"]
    # the one catch-all holds the deprecated keywords, for one release
    assert [p.name for p in params.values() if p.kind is p.VAR_KEYWORD] == ["deprecated"]
    assert invlab.measure is measure


def test_regularizers_come_from_the_registry() -> None:
    from invlab.train.loop import REGULARIZERS, TrainConfig

    assert set(REGULARIZERS) == {n for n, s in REGISTRY.items()
                                 if s.differentiable and s.needs == {"logit_pairs"}}
    for r in REGULARIZERS:
        TrainConfig(method="ir", regularizer=r)


def _no_invlab_deprecations() -> Any:
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("error", category=DeprecationWarning, module=r"invlab(\.|$)")
    return ctx


def test_the_cli_uses_no_deprecated_spelling(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.checkpoint import save_checkpoint
    from invlab.cli import main

    torch.manual_seed(0)
    model = create_model("mlp", hidden=16, depth=1, in_shape=[1, 28, 28], num_classes=10)
    ck = save_checkpoint(model.eval(), tmp_path / "m.safetensors",
                         normalization={"mean": [0.13], "std": [0.31]})
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
             labels=np.arange(12) % 10)
    ctx = _no_invlab_deprecations()
    try:
        code = main(["measure", "--checkpoint", str(ck), "--data", str(tmp_path / "d.npz"),
                     "--transform", "r4", "--metrics", "kl,SI,RI", "--n-steps", "3",
                     "--n-si", "5", "--include-identity", "--json", "--no-progress"])
    finally:
        ctx.__exit__(None, None, None)
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads(out.out)
    assert res["metrics"]["saliency_similarity"]["n"] == 5
    assert res["elements"] == [0, 1, 2, 3]  # --include-identity reached options


def test_the_audit_uses_no_deprecated_spelling(tmp_path: Path) -> None:
    from invlab.audit import AuditSettings, audit
    from invlab.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ck = save_checkpoint(create_model("wt_mlp5", group="r4", hidden=16, depth=2),
                         tmp_path / "wt.safetensors", normalization={"mean": 0.1, "std": 0.3})
    r = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", images=r.random((10, 36, 36)).astype(np.float32),
             labels=r.integers(0, 9, 10))
    s = AuditSettings(transforms=("r4", "rotate"), limit=10, n_si=3, n_sensitivity=2,
                      ig_steps=2)
    ctx = _no_invlab_deprecations()
    try:
        doc = audit(str(ck), str(tmp_path / "d.npz"), s, progress=False)
    finally:
        ctx.__exit__(None, None, None)
    assert len(doc["transforms"]) == 2
    assert len(doc["transforms"][0]["metrics"]["saliency_similarity"]) == 3
