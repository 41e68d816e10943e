"""Issue 10: presets are the only defaults, the detached normalized-L2 variant, ν-tuning wiring."""

from __future__ import annotations

import dataclasses
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from invlab.metrics.functional import logit_l2_normalized, logit_l2_normalized_detached
from invlab.studies import drift, genuine, spectral, tuning
from invlab.sweep import ConfigError, ResultsStore, cell_id
from invlab.sweep.runner import CellResult
from invlab.train.loop import REGULARIZERS, TrainConfig, train_step_loss
from invlab.train.nu_search import search_nu

STUDIES = {"genuine": (genuine.GenuinePreset, genuine.preset),
           "drift": (drift.DriftPreset, drift.preset),
           "spectral": (spectral.SpectralPreset, spectral.preset)}

# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_preset_field_comes_from_the_yaml(study: str) -> None:
    cls, load = STUDIES[study]
    fields = [f for f in dataclasses.fields(cls) if f.init]
    # the dataclass has no defaults of its own that could disagree with the YAML
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in fields), [f.name for f in fields if f.default is not dataclasses.MISSING]
    presets = yaml.safe_load(resources.files("invlab.studies").joinpath(f"{study}.yaml")
                             .read_text())
    for name, values in presets.items():
        assert set(values) == {f.name for f in fields}, (name, set(values) ^ {f.name for f in fields})
        p = load(name)
        for f in fields:
            got, want = getattr(p, f.name), values[f.name]
            assert (list(got) if isinstance(got, tuple) else got) == want, (name, f.name)


def test_a_preset_missing_a_field_is_rejected_naming_it() -> None:
    from invlab.sweep import from_dict

    values = dataclasses.asdict(genuine.preset("quick"))
    del values["epochs"]
    with pytest.raises(ConfigError, match="epochs"):
        from_dict(genuine.GenuinePreset, values)


def test_full_genuine_preset_follows_the_paper() -> None:
    p = genuine.preset("full")
    assert p.epochs == 300 and p.patience is None and p.nu is None
    assert p.tune_n_val_si >= 500 and p.tune_tolerance <= 1.3
    assert spectral.preset("full").n_eval is None  # every test image, no hard-coded size
    assert "logit_l2_normalized_detached" in spectral.preset("full").regularizers


def test_demo_preset_fixes_nu_from_the_full_study() -> None:
    import json

    p = genuine.preset("demo")
    assert p.nu is not None and genuine.tune_cells(p, "ck") == []
    ir = [c for c in genuine.genuine_cells(p, "ck") if c.train.method == "ir"]
    assert ir and all(c.tune is None and c.train.nu == p.nu["mnist"]["r4"] for c in ir)
    summary = Path(__file__).parents[1] / "results" / "genuine" / "summary.json"
    rows = json.loads(summary.read_text())
    committed = next(r["mean"] for r in rows if (r["dataset"], r["group"], r["method"],
                                                 r["metric"]) == ("mnist", "r4", "ir", "nu"))
    # the demo's smaller budget needs the full study's next passing grid point (genuine.yaml)
    nu = p.nu["mnist"]["r4"]
    k = 2 * math.log10(nu)
    assert nu >= committed and k == pytest.approx(round(k)), (nu, committed)
    with pytest.raises(ValueError, match="fixed nu is needed for mnist/t3"):
        genuine.preset("demo", groups=("r4", "t3"))


# --------------------------------------------------------------------------- regularizer


def test_detached_normalized_l2_has_the_same_value_and_the_numerator_only_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    full, det = logit_l2_normalized(a, b), logit_l2_normalized_detached(a, b)
    torch.testing.assert_close(full, det, rtol=0, atol=0)
    g_full, = torch.autograd.grad(full.sum(), a)
    g_det, = torch.autograd.grad(logit_l2_normalized_detached(a, b).sum(), a)
    d = (a - b).detach()
    den = a.detach().pow(2).sum(-1, keepdim=True)
    num = d.pow(2).sum(-1, keepdim=True)
    # d/da [num/den] = 2(a-b)/den - 2 a num/den²; the detached variant keeps only the first
    torch.testing.assert_close(g_det, 2 * d / den)
    torch.testing.assert_close(g_full, 2 * d / den - 2 * a.detach() * num / den ** 2)
    assert not torch.allclose(g_full, g_det)


def test_detached_variant_is_a_training_regularizer() -> None:
    from invlab.groups import create_group

    assert "logit_l2_normalized_detached" in REGULARIZERS
    cfg = TrainConfig(method="ir", group="r4", nu=1.0, regularizer="logit_l2_normalized_detached")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36 * 36, 9))
    x, y = torch.randn(8, 1, 36, 36), torch.randint(0, 9, (8,))
    loss, reg = train_step_loss(model, x, y, create_group("r4"), cfg,
                                torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and reg > 0


# --------------------------------------------------------------------------- ν-tuning wiring


def _si(nu: float) -> float:
    """A synthetic monotone SI(ν) crossing 0.95 at ν = 7."""
    return 0.95 + 0.1 * math.tanh(math.log(nu / 7.0))


def _fake_trial(cell: tuning.TrialCell, ctx: Any = None) -> CellResult:
    nu = cell.train.nu
    res = CellResult(extra={"stage": tuning._stage(nu)})
    return res.add("nu", nu).add("val_si", _si(nu)).add("val_accuracy", 1.0 / (1.0 + nu))


def _tcell(group: str, parallel: int = 2) -> tuning.TuneCell:
    p = genuine.preset("quick", groups=(group,), tune_parallel=parallel, tune_max_trials=12)
    return genuine.tune_cell(p, "mnist", group, "unused-checkpoints")


@pytest.fixture
def fake_trials(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []

    def fake(cell: tuning.TrialCell, ctx: Any = None) -> CellResult:
        calls.append(cell.train.nu)
        return _fake_trial(cell, ctx)

    monkeypatch.setattr(tuning, "run_trial_cell", fake)
    monkeypatch.setattr(genuine, "pin_source", lambda cfg: cfg)  # no data needed
    return calls


def test_tune_all_records_every_trial_and_matches_the_search(tmp_path: Path,
                                                               fake_trials: list[float]) -> None:
    cells = [_tcell("r4"), _tcell("t3")]
    with ResultsStore(tmp_path / "store.sqlite") as store:
        tuning.tune_all(cells, store, "genuine", progress=False, root=tmp_path)
        ref = search_nu(lambda nus: [(_si(v), 1.0 / (1.0 + v)) for v in nus], target=0.95,
                        nu_start=cells[0].nu_start, nu_min=tuning.NU_MIN, nu_max=tuning.NU_MAX,
                        tolerance=1.3, parallel=2, max_trials=12)
        assert ref.reached and ref.bracket[1] / ref.bracket[0] <= 1.3
        for c in cells:
            assert store.value(cell_id(c), "nu") == ref.nu
            extra = next(x for x in store.cells("genuine") if x["cell_id"] == cell_id(c))["extra"]
            assert [t["nu"] for t in extra["trials"]] == [t.nu for t in ref.trials]
            assert {t["stage"] for t in extra["trials"]} == {"bracket", "refine"}
        # one trial cell per (search, ν), each with ν, val SI, val accuracy and its stage
        trials = store.cells("genuine-nu-trials")
        assert len(trials) == 2 * len(ref.trials) == len(fake_trials)
        assert all(c["extra"]["stage"] in ("bracket", "refine") for c in trials)
        # resuming retrains nothing: every trial is a finished cell
        n = len(fake_trials)
        tuning.tune_all(cells, store, "genuine", progress=False, root=tmp_path)
        assert len(fake_trials) == n


def test_the_trial_sequence_does_not_depend_on_workers(tmp_path: Path,
                                                         fake_trials: list[float]) -> None:
    """``parallel`` (a preset field) fixes the ν sequence; ``workers`` only schedules it."""
    seqs = []
    for workers in (1, 3):
        fake_trials.clear()
        with ResultsStore(tmp_path / f"w{workers}.sqlite") as store:
            tuning.tune_all([_tcell("r4")], store, "genuine", workers=workers, progress=False,
                            root=tmp_path)
        seqs.append(list(fake_trials))
    assert seqs[0] == seqs[1]
    fake_trials.clear()
    with ResultsStore(tmp_path / "p1.sqlite") as store:
        tuning.tune_all([_tcell("r4", parallel=1)], store, "genuine", progress=False,
                        root=tmp_path)
    assert fake_trials != seqs[0]  # a different `parallel` is a different (documented) search


def test_a_failing_trial_fails_its_search_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fake_trials: list[float]) -> None:
    from invlab.sweep import StudyError

    def flaky(cell: tuning.TrialCell, ctx: Any = None) -> CellResult:
        if cell.train.group == "t3":
            raise FloatingPointError("non-finite loss")
        return _fake_trial(cell, ctx)

    monkeypatch.setattr(tuning, "run_trial_cell", flaky)
    cells = [_tcell("r4"), _tcell("t3")]
    with ResultsStore(tmp_path / "store.sqlite") as store:
        with pytest.raises(StudyError, match="non-finite loss"):
            tuning.tune_all(cells, store, "genuine", progress=False, root=tmp_path)
        assert store.is_done(cell_id(cells[0])) and not store.is_done(cell_id(cells[1]))


# --------------------------------------------------------------------------- new-user items


def test_checkpoint_index_lists_what_each_hash_is(tmp_path: Path, mnist_test_dir) -> None:  # type: ignore[no-untyped-def]
    from invlab.checkpoint_index import read_index, training_label
    from invlab.data import DataConfig
    from invlab.studies.common import trained_model

    data = DataConfig(dataset="mnist", exclude_class=9, pad_to=36, n_train=300, n_val=100,
                      n_test_max=50, data_seed=0)
    for method, seed in (("da", 0), ("ir", 1)):
        cfg = TrainConfig(method=method, group="r4", epochs=1, seed=seed, nu=3.0 * (method == "ir"))
        _, meta, _ = trained_model(cfg, data, tmp_path / "ck")
    rows = read_index(tmp_path / "ck")
    assert sorted((r["method"], r["seed"], r["group"], r["dataset"]) for r in rows) == [
        ("da", "0", "r4", "mnist"), ("ir", "1", "r4", "mnist")]
    assert {r["file"] for r in rows} == {p.name for p in (tmp_path / "ck").glob("*.safetensors")}
    ir = next(r for r in rows if r["method"] == "ir")
    assert float(ir["nu"]) == 3.0 and ir["regularizer"] == "logit_l2"
    assert 0 <= float(ir["best_val_accuracy"]) <= 1 and ir["epochs_run"] == "1"
    assert not list((tmp_path / "ck").glob(".index.csv*"))  # atomic: no temp file left
    assert training_label(meta) == " [ir/logit_l2 ν=3, seed 1, mnist]"


def test_a_study_with_missing_data_stops_before_any_cell_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from invlab.cli import main
    from invlab.data import sources

    monkeypatch.setattr(sources, "FASHION_SYSTEM_DIR", tmp_path / "no-system-fashion")
    monkeypatch.setenv("INVLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    rc = main(["study", "drift", "--quick", "--out", str(tmp_path / "out"), "--checkpoints",
               str(tmp_path / "ck"), "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("[invlab]")]
    assert rc == 2 and len(err) == 1, err
    assert "fashion-mnist" in err[0] and "apt-get install dataset-fashion-mnist" in err[0]
    assert "invlab data fetch fashion-mnist" in err[0]
    assert not (tmp_path / "out" / "store.sqlite").exists() and not (tmp_path / "ck").exists()


def test_data_fetch_offline_prints_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import urllib.error
    import urllib.request

    from invlab.cli import main

    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    assert main(["data", "fetch", "fashion-mnist"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download" in err[0] and "name resolution" in err[0]
    assert "Traceback" not in err[0]


def test_small_data_error_says_what_to_do() -> None:
    from invlab.data import DataError
    from invlab.data.transforming import split_sizes

    with pytest.raises(DataError, match=r"found 4500: use a smaller n_train/n_val .*INVLAB_DATA"):
        split_sizes(4500, 10_000, 2_000, 50_000)


@pytest.mark.slow
def test_demo_claims_all_hold(tmp_path: Path, mnist_test_dir, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
                              ) -> None:
    """`make demo`'s command: every printed claim check holds, each explained, with a pointer
    to the full preset (~1-3 min on 2 cores)."""
    import re

    from invlab.cli import main

    assert main(["study", "genuine", "--preset", "demo", "--workers", "2", "--no-progress",
                 "--out", str(tmp_path / "demo"), "--checkpoints", str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    checks = re.findall(r"^- (HOLDS|DOES NOT HOLD|CANNOT BE EVALUATED):", out, flags=re.M)
    assert checks == ["HOLDS"] * 6, out
    assert "Criteria on means" in out and "weight tying makes the model invariant" in out
    assert "invlab study genuine --out results/genuine" in out


def test_one_config_error_type() -> None:
    with pytest.raises(ConfigError, match="invalid epochs") as e:
        TrainConfig(epochs=0)
    assert e.value.field == "epochs"
    with pytest.raises(ConfigError, match="n_eval"):
        spectral.preset("quick", n_eval=0)
