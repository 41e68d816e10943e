"""``invlab audit`` on a model defined in a user file, on a generated .npz."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from invlab.audit import AuditError, AuditSettings, audit, verdict
from invlab.cli import main

USER_FILE = '''
import torch
from torch import nn
from invlab.models import GroupPooled


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 36, 16), nn.ReLU(), nn.Linear(16, 4))


NORM = {"mean": [0.5], "std": [0.25]}


def build():
    return cnn(), NORM


def pooled():
    return GroupPooled(cnn(), "r4"), NORM


def module_only():
    return cnn()


def not_a_model():
    return "a model"


def bad_norm():
    return cnn(), {"mean": [0.5]}


def three_channels():
    return cnn(), {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}
'''
SMALL = AuditSettings(transforms=("r4", "rotate", "brightness_up"), limit=24, n_si=6,
                      n_sensitivity=4, ig_steps=4, n_show=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("audit")
    (d / "user_model.py").write_text(textwrap.dedent(USER_FILE))
    r = np.random.default_rng(0)
    np.savez(d / "test.npz", images=r.integers(0, 256, (30, 12, 12), dtype=np.uint8),
             labels=r.integers(0, 4, 30))
    return d


@pytest.fixture(scope="module")
def plain(files: Path) -> tuple[dict, Path]:
    out = files / "out-plain"
    return audit(f"{files}/user_model.py:build", str(files / "test.npz"), SMALL, out,
                 progress=False), out


def test_audit_json_has_every_number_per_transform_and_member(plain: tuple[dict, Path]) -> None:
    doc, out = plain
    on_disk = json.loads((out / "audit.json").read_text())
    assert on_disk["transforms"] == json.loads(json.dumps(doc["transforms"]))
    assert {"model", "data", "settings", "clean_accuracy", "sensitivity", "transforms",
            "normalization", "invlab_version", "wall_seconds"} <= set(doc)
    assert doc["data"]["images"] == 24 and doc["data"]["images_available"] == 30
    assert doc["data"]["shape"] == [1, 12, 12] and doc["model"]["class"] == "Sequential"
    assert doc["sensitivity"]["n"] == 4 and doc["sensitivity"]["sigma_max_mean"] > 0
    by = {t["name"]: t for t in doc["transforms"]}
    assert list(by) == ["r4", "rotate", "brightness_up"]
    k = {"r4": 3, "rotate": 9, "brightness_up": 9}
    for name, t in by.items():
        assert len(t["members"]) == len(t["member_names"]) == len(t["member_verdicts"]) == k[name]
        for metric in ("kl", "logit_l2", "effective_invariance", "agreement", "accuracy",
                       "representation_invariance"):
            assert len(t["metrics"][metric]) == k[name], (name, metric)
        assert t["verdict"] and t["text"]
    assert by["r4"]["members"] == [1, 2, 3] and by["r4"]["kind"] == "group"
    assert by["rotate"]["member_names"][:2] == ["rotate:-135", "rotate:-108"]  # ascending
    assert len(by["r4"]["metrics"]["saliency_similarity"]) == 3  # invertible: SI measured
    assert by["brightness_up"]["metrics"]["saliency_similarity"] is None  # clips: no inverse
    assert "mechanism cannot be checked" in by["brightness_up"]["text"] or \
        by["brightness_up"]["verdict"] in ("not invariant", "partly invariant")


def test_audit_page_and_figures(plain: tuple[dict, Path]) -> None:
    _, out = plain
    for f in ("audit.html", "profile_rotate.png", "profile_brightness_up.png",
              "saliency_r4.png", "saliency_rotate.png"):
        assert (out / f).stat().st_size > 1000, f
    assert not (out / "saliency_brightness_up.png").exists()
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<script" not in page
    assert "Verdicts" in page and "brightness_up" in page and "DI ≤ 0.05" in page


def _labelled_by_the_model(files: Path, factory: str) -> Path:
    """The test images labelled with the model's own predictions: 100 % clean accuracy, so
    the verdict's preconditions (not at chance, not collapsed) hold."""
    import sys

    import torch

    sys.path.insert(0, str(files))
    try:
        import user_model  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(files))
    model, norm = getattr(user_model, factory)()
    x = np.load(files / "test.npz")["images"]
    with torch.no_grad():
        t = (torch.from_numpy(x).float()[:, None] / 255 - norm["mean"][0]) / norm["std"][0]
        pred = model.eval()(t).argmax(1).numpy()
    path = files / f"labelled_{factory}.npz"
    np.savez(path, images=x, labels=pred)
    return path


def test_exactly_invariant_model_gets_the_verdict_invariant(files: Path) -> None:
    s = AuditSettings(transforms=("r4",), limit=16, n_si=6, n_sensitivity=2, ig_steps=4)
    data = _labelled_by_the_model(files, "pooled")
    doc = audit(f"{files}/user_model.py:pooled", str(data), s, progress=False)
    assert doc["model_health"]["problems"] == [] and doc["clean_accuracy"] == 1.0
    (r4,) = doc["transforms"]
    assert r4["verdict"] == "invariant", r4["text"]
    assert r4["text"].startswith("invariant in its outputs and in its mechanism")
    assert min(r4["metrics"]["saliency_similarity"]) > 0.999
    assert max(abs(v) for v in r4["metrics"]["kl"]) < 1e-6 and min(r4["metrics"]["agreement"]) == 1.0
    assert min(r4["metrics"]["representation_invariance"]) > 0.999


@pytest.mark.parametrize(("di", "agr", "si", "inv", "label", "text"), [
    (0.02, 0.99, 0.31, True, "outputs only",
     "invariant in its outputs but not in its mechanism: DI 0.02, agreement 0.99, SI 0.31"),
    (0.0, 1.0, 0.99, True, "invariant", "invariant in its outputs and in its mechanism"),
    (0.5, 0.6, 0.99, True, "not invariant", "not invariant in its outputs: DI 0.5"),
    (0.0, 1.0, None, False, "outputs only (mechanism not measured)", "SI: not invertible"),
])
def test_verdict_rules(di: float, agr: float, si: float | None, inv: bool, label: str,
                       text: str) -> None:
    got = verdict(di, agr, si, inv)
    assert got[0] == label and text in got[1], got


@pytest.mark.parametrize(("model", "data", "extra", "message"), [
    ("user_model.py:nope", "test.npz", [], "defines no function 'nope' (found: bad_norm, build, cnn"),
    ("missing.py:build", "test.npz", [], "no such file"),
    ("user_model.py:not_a_model", "test.npz", [],
     "the factory must return a torch.nn.Module (or (Module, normalization)), found a str"),
    ("user_model.py:bad_norm", "test.npz", [], "normalization must be a dict {'mean': [...], "),
    ("user_model.py:three_channels", "test.npz", [], "normalization has 3 means / 3 stds but the "
                                                     "images have 1 channel(s)"),
    ("user_model.py:build", "test.npz", ["--transforms", "r4,spin"], "--transforms: unknown"),
    ("user_model.py:build", "nothing.npz", [], "--data 'nothing.npz'"),
    ("user_model.py:build", "test.npz", ["--limit", "1"], "limit must be an int >= 2"),
])
def test_bad_inputs_are_one_line_errors(files: Path, capsys: pytest.CaptureFixture[str],
                                        model: str, data: str, extra: list[str],
                                        message: str) -> None:
    code = main(["audit", "--model", str(files / model), "--data", str(files / data)
                 if data != "nothing.npz" else data, "--out", str(files / "bad"),
                 "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("invlab: error: ") and message in err[0], err[0]


def test_cli_prints_the_table_and_verdicts(files: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    code = main(["audit", "--model", f"{files}/user_model.py:pooled", "--data",
                 str(_labelled_by_the_model(files, "pooled")), "--transforms", "r4", "--limit",
                 "8", "--n-si", "4",
                 "--n-sensitivity", "2", "--ig-steps", "4", "--out", str(files / "cli"),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "budget: 8 images for DI/LI/EI/agreement/RI (--limit), 4 for SI" in out
    assert "r4: invariant in its outputs and in its mechanism" in out
    assert (files / "cli" / "audit.html").exists()


def test_audit_error_is_a_value_error() -> None:
    assert issubclass(AuditError, ValueError)


def test_audit_page_in_headless_chromium(plain: tuple[dict, Path], tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_report_html import assert_page_ok, check_page, chromium_binary

    exe = chromium_binary()
    if exe is None:
        pytest.skip("no headless Chromium (Debian's `chromium`; .ci/run installs it)")
    _, out = plain
    c = check_page(exe, out / "audit.html", tmp_path / "profile")
    assert_page_ok(c, 4)  # 2 profiles + 2 saliency grids, all decode; no console errors
    assert c.title.startswith("invlab audit")


def test_checkpoint_model_and_named_layers(tmp_path: Path) -> None:
    import torch

    from invlab.checkpoint import save_checkpoint
    from invlab.models import create_model

    torch.manual_seed(0)
    ck = save_checkpoint(create_model("wt_mlp5", group="r4", hidden=16, depth=2),
                         tmp_path / "wt.safetensors", normalization={"mean": 0.1, "std": 0.3})
    r = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", images=r.random((12, 36, 36)).astype(np.float32),
             labels=r.integers(0, 9, 12))
    s = AuditSettings(transforms=("r4",), layers=("hidden.0", "hidden"), limit=12, n_si=4,
                      n_sensitivity=2, ig_steps=4)
    doc = audit(str(ck), str(tmp_path / "d.npz"), s, progress=False)
    (r4,) = doc["transforms"]
    assert doc["model"]["kind"] == "checkpoint" and doc["normalization"]["std"] == [0.3]
    # untrained on random labels: the numbers say invariant, the preconditions may not hold
    assert "invariant in its outputs and in its mechanism" in r4["text"]
    assert r4["verdict"] == ("cannot be evaluated" if doc["model_health"]["problems"]
                             else "invariant")
    assert min(r4["metrics"]["saliency_similarity"]) > 0.999
    assert {"representation_invariance@hidden.0", "representation_invariance@hidden"} <= set(
        r4["metrics"])
    # every layer after the tied, pooled first layer is invariant
    assert min(r4["metrics"]["representation_invariance@hidden"]) > 0.999
    # wt_mlp5 computes its first layer from the tied weights: the `input` module never runs
    with pytest.raises(AuditError, match="layer 'input' produced no output"):
        audit(str(ck), str(tmp_path / "d.npz"), AuditSettings(
            transforms=("r4",), layers=("input",), limit=12, n_si=2, n_sensitivity=2,
            ig_steps=2), progress=False)


def test_model_health_against_hand_counts() -> None:
    import torch

    from invlab.audit import model_health

    pred = torch.tensor([3] * 19 + [1])
    h = model_health(pred, torch.arange(20) % 10, 10)
    assert h["top_class"] == 3 and h["top_class_share"] == pytest.approx(0.95)
    assert h["collapsed"] and h["clean_accuracy"] == pytest.approx(2 / 20)  # images 3 and 13
    assert h["at_chance"] and len(h["problems"]) == 2  # 10 % <= 10 % + 5 points
    # a one-class data set predicted as that class is not a collapse
    h = model_health(torch.full((20,), 2), torch.full((20,), 2), 10)
    assert not h["collapsed"] and not h["at_chance"] and h["problems"] == []
    # no labels: only the collapse check applies
    h = model_health(torch.full((20,), 2), None, 10)
    assert h["collapsed"] and h["clean_accuracy"] is None and len(h["problems"]) == 1
    h = model_health(torch.arange(20) % 10, torch.arange(20) % 10, 10)
    assert h["problems"] == []


def test_a_model_at_chance_is_never_called_invariant(files: Path) -> None:
    """The issue's case: an untrained model (here GroupPooled, exactly r4-invariant by
    construction, at chance on random labels) — the audit cannot call it invariant."""
    from invlab.report.claims import read_claims

    s = AuditSettings(transforms=("r4", "brightness_up"), limit=16, n_si=6, n_sensitivity=2,
                      ig_steps=4)
    out = files / "out-chance"
    doc = audit(f"{files}/user_model.py:pooled", str(files / "test.npz"), s, out,
                progress=False)
    assert doc["model_health"]["at_chance"], doc["model_health"]
    r4 = doc["transforms"][0]
    assert r4["verdict"] == "cannot be evaluated" and r4["status"] == "cannot be evaluated"
    assert "at chance" in r4["text"] and "invariant in its outputs and" in r4["text"]
    assert all(m["verdict"] != "invariant" for t in doc["transforms"]
               for m in t["member_verdicts"])
    cs = read_claims(out)
    assert cs is not None
    outputs = [c for c in cs.claims if c.scope == "r4" and "outputs" in c.claim]
    assert outputs[0].verdict == "cannot be evaluated" and "at chance" in outputs[0].reason
    assert "WARNING" in (out / "audit.html").read_text()
    from invlab.audit import format_summary

    assert "WARNING: the model is at chance" in format_summary(doc)


def test_a_factory_returning_a_bare_module_is_audited_in_pixel_space(
        files: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """A plain ``nn.Sequential`` from a factory: no normalization (pixel space), said once."""
    code = main(["audit", "--model", str(files / "user_model.py:module_only"), "--data",
                 str(files / "test.npz"), "--transforms", "flip", "--n-si", "2", "--ig-steps",
                 "4", "--n-sensitivity", "2", "--out", str(files / "bare"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((files / "bare" / "audit.json").read_text())
    assert doc["normalization"] == {"mean": [0.0], "std": [1.0]}
    assert "bare module and no normalization" in caplog.text
