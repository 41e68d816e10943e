"""Generalization study inputs: external test sets checked before training, test-set names,
``--transform``, ``grayscale`` on 1-channel images, and the .npz / folder reader's messages."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from invlab.data import DataError, load_images
from invlab.sweep import ConfigError


def _tiny_preset() -> Any:
    from invlab.studies.generalization import GeneralizationPreset, Preset
    from invlab.zoo import expand_zoo

    zoo = expand_zoo([{"arch": "mlp", "width": 8, "n_train": 100, "epochs": 1}])
    ref = expand_zoo([{"arch": "mlp", "width": 8, "n_train": 100, "epochs": 1, "seed": 100}])
    s = GeneralizationPreset(test_sets=("id",), n_eval=20, n_boot=10, n_pool=3000)
    return Preset(s, tuple(zoo), tuple(ref))


def _no_training(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and skip) every call of the training stage."""
    import invlab.studies.generalization as gen

    calls: list[Any] = []
    monkeypatch.setattr(gen, "_train_stage", lambda *a, **k: calls.append(a))
    return calls


@pytest.mark.parametrize("arrays, match", [
    ({"images": np.zeros((3, 32, 32), np.uint8), "labels": np.zeros(3, int)},
     r"expect \[1, 28, 28\]"),
    ({"images": np.zeros((3, 28, 28), np.uint8), "labels": np.array([0, 1, 12])},
     r"unknown class\(es\) \['12'\]"),
])
def test_bad_external_set_fails_before_any_training(
        mnist_test_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        arrays: dict[str, np.ndarray], match: str) -> None:
    from invlab.studies.generalization import run_generalization

    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    calls = _no_training(monkeypatch)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        run_generalization(_tiny_preset(), tmp_path / "out", str(tmp_path / "ck"),
                           progress=False, test_sets={"bad": str(tmp_path / "bad.npz")})
    assert calls == [] and not list((tmp_path / "ck").rglob("*.safetensors"))
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="not a readable .npz file"):
        run_generalization(_tiny_preset(), tmp_path / "out2", str(tmp_path / "ck"),
                           progress=False, test_sets={"junk": str(tmp_path / "junk.npz")})
    assert calls == []


BAD_NAMES = [
    ([("id", "x.npz")], "built-in test set"),
    ([("blur", "x.npz")], "built-in test set"),
    ([("a|b", "x.npz")], "without '\\|'"),
    ([("a b", "x.npz")], "whitespace"),
    ([("mine", "x.npz"), ("mine", "y.npz")], "given twice"),
]


@pytest.mark.parametrize("pairs, match", BAD_NAMES)
def test_bad_test_set_names_cli(pairs: list[tuple[str, str]], match: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import invlab.studies.generalization as gen
    from invlab.cli import main

    called: list[Any] = []
    monkeypatch.setattr(gen, "run_generalization", lambda *a, **k: called.append(a))
    argv = ["study", "generalization", "--out", str(tmp_path / "out"), "--no-progress"]
    for name, path in pairs:
        argv += ["--test-set", f"{name}={path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--test-set: name" in err and len(err.strip().splitlines()) == 1
    assert re.search(match, err) and called == []


@pytest.mark.parametrize("pairs, match", BAD_NAMES)
def test_bad_test_set_names_python(pairs: list[tuple[str, str]], match: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.studies.generalization import run_generalization

    calls = _no_training(monkeypatch)
    with pytest.raises(ConfigError, match=match):
        run_generalization(_tiny_preset(), tmp_path / "out", str(tmp_path / "ck"),
                           progress=False, test_sets=pairs)
    if len(pairs) == 1:  # a dict works too
        with pytest.raises(ConfigError, match=match):
            run_generalization(_tiny_preset(), tmp_path / "out", str(tmp_path / "ck"),
                               progress=False, test_sets=dict(pairs))
    assert calls == [] and not (tmp_path / "out").exists()


def test_good_test_set_names_kept_in_order() -> None:
    from invlab.studies.generalization import check_test_sets

    assert list(check_test_sets([("mine", "a.npz"), ("ID2", "b")])) == ["mine", "ID2"]
    with pytest.raises(ConfigError, match="non-empty"):
        check_test_sets({"": "a.npz"})


def test_transform_flag_reaches_the_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import invlab.report.generalization as rep
    import invlab.studies.generalization as gen
    import invlab.studies.registry as registry
    from invlab.cli import main

    seen: dict[str, Any] = {}

    def fake_run(p: Any, out: Any, *a: Any, **k: Any) -> Any:
        seen["preset"], seen["args"], seen["kw"] = p, a, k
        Path(out).mkdir(parents=True, exist_ok=True)
        return out

    monkeypatch.setattr(gen, "run_generalization", fake_run)
    monkeypatch.setattr(registry, "build_report", lambda out, **k: [])  # the run's next step
    monkeypatch.setattr(rep, "print_table", lambda out: "table")
    rc = main(["study", "generalization", "--quick", "--out", str(tmp_path / "o"),
               "--no-progress", "--transform", "rotate:30", "--transform", "grayscale",
               "--test-set", "mine=x.npz"])
    assert rc == 0
    assert seen["preset"].settings.transforms == ("rotate:30", "grayscale")
    assert seen["kw"]["test_sets"] == {"mine": "x.npz"}
    main(["study", "generalization", "--quick", "--out", str(tmp_path / "o"), "--no-progress"])
    assert seen["preset"].settings.transforms == gen.preset("quick").settings.transforms
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["study", "generalization", "--help"])
    assert "extra EI transform spec" in capsys.readouterr().out


def test_grayscale_skipped_on_one_channel_models() -> None:
    from invlab.studies.generalization_measures import measure_model

    torch.manual_seed(0)
    y = torch.randint(0, 10, (12,))
    gray_net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    m = measure_model(gray_net, torch.rand(12, 1, 8, 8), y, [0.5], [0.3],
                      transforms=("grayscale", "rotate:30"))
    assert "ei_grayscale" not in m and "ei_rotate:30" in m and "ei" in m
    rgb_net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 10))
    m3 = measure_model(rgb_net, torch.rand(12, 3, 8, 8), y, [0.5] * 3, [0.3] * 3,
                       transforms=("grayscale",))
    assert 0 <= m3["ei_grayscale"] <= 1


def test_npz_garbage_file(tmp_path: Path) -> None:
    for content in (b"garbage bytes, not a zip", b""):
        (tmp_path / "g.npz").write_bytes(content)
        with pytest.raises(DataError) as e:
            load_images(tmp_path / "g.npz")
        assert str(e.value) == (f"{tmp_path / 'g.npz'}: not a readable .npz file (expected "
                                "numpy.savez output with arrays images, labels)")
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "a.npz").write_bytes((tmp_path / "a.npy").read_bytes())  # .npy renamed
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_images(tmp_path / "a.npz")


def test_npz_missing_arrays_unwrapped(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError) as e:
        load_images(tmp_path / "m.npz")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'm.npz'}: missing array(s) ['labels']")
    assert "not a readable" not in msg


def test_npz_object_array_never_unpickled(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", images=np.array([{"a": 1}, None], dtype=object),
             labels=np.zeros(2, int))
    with pytest.raises(DataError, match="invlab never loads") as e:
        load_images(tmp_path / "o.npz")
    assert "'images'" in str(e.value) and "allow_pickle" not in str(e.value)


def test_folder_class_mapping_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("dog", "cat"):
        (tmp_path / "f" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(
            tmp_path / "f" / c / "0.png")
        (tmp_path / "d" / {"dog": "3", "cat": "1"}[c]).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(
            tmp_path / "d" / {"dog": "3", "cat": "1"}[c] / "0.png")
    with caplog.at_level(logging.INFO, logger="invlab"):
        ds = load_images(tmp_path / "f")
    assert ds.labels.tolist() == [0, 1]
    lines = [r.getMessage() for r in caplog.records if "classes by sorted folder name" in
             r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("classes by sorted folder name: cat→0, dog→1")
    assert caplog.records[-1].name == "invlab.data" and caplog.records[-1].levelno == logging.INFO
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="invlab"):
        load_images(tmp_path / "d")  # integer names are their own indices: nothing to say
    assert "classes by sorted folder name" not in caplog.text


@pytest.mark.parametrize("spec, match", [("rotat:30", "unknown transform"),
                                         ("r4", "group or a family"),
                                         ("rotate", "group or a family")])
def test_bad_transform_spec_fails_when_the_preset_is_built(spec: str, match: str) -> None:
    from invlab.studies.generalization import preset
    from invlab.sweep import ConfigError

    with pytest.raises(ConfigError, match=match):
        preset("quick", transforms=(spec,))


def test_broken_models_file_fails_before_any_training(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.studies import generalization as gen

    bad = tmp_path / "zoo.py"
    bad.write_text("def models():\n    raise RuntimeError('my zoo is broken')\n")
    monkeypatch.setattr(gen, "_train_stage", lambda *a, **k: pytest.fail("trained first"))
    with pytest.raises(Exception, match="my zoo is broken"):
        gen.run_generalization(gen.preset("quick"), tmp_path / "out", str(tmp_path / "ck"),
                               models_file=str(bad), progress=False)


def test_builtin_names_are_free_with_your_own_models_and_test_sets() -> None:
    """With ``--models`` and test sets of your own the built-in sets are not measured, so a
    user's ID set may be called ``id``; duplicates and bad characters still fail."""
    from invlab.studies.flags import parse_test_sets as _kv
    from invlab.studies.generalization import check_test_sets

    assert _kv(["id=a.npz", "sketch=b/"], own_models=True) == {"id": "a.npz", "sketch": "b/"}
    assert check_test_sets({"id": "a.npz"}, builtin=()) == {"id": "a.npz"}
    with pytest.raises(ConfigError, match="built-in"):
        _kv(["id=a.npz"])
    with pytest.raises(ConfigError, match="given twice"):
        _kv(["id=a.npz", "id=b.npz"], own_models=True)
