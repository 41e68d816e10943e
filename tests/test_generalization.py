"""Generalization study (D22): zoo models, stacked training, measures, end to end, own models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import invlab
from invlab.zoo import (
    ZooData,
    ZooModel,
    augment,
    expand_grid,
    train_sequential,
    train_stacked,
)


def _synthetic_data(n: int = 96) -> ZooData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return ZooData(x, y, x[:32], y[:32], float(x.mean()), float(x.std()), "synthetic")


@pytest.mark.parametrize("name, kwargs", [("vit_tiny", {}), ("vit_tiny", {"dim": 16, "depth": 1}),
                                          ("cnn_medium", {"width": 4}),
                                          ("mlp", {"hidden": 32, "depth": 3})])
def test_registry_models(name: str, kwargs: dict) -> None:
    from invlab.models import create_model, list_models

    assert name in list_models()
    m = create_model(name, in_shape=[1, 28, 28], num_classes=10, **kwargs)
    x = torch.rand(5, 1, 28, 28)
    z = m.forward_features(x)
    assert z.ndim == 2 and z.shape[0] == 5
    assert torch.allclose(m.forward_head(z), m(x))
    assert m(x).shape == (5, 10) and m.model_kwargs["num_classes"] == 10


def test_vit_rejects_bad_patch() -> None:
    from invlab.models import ModelError, create_model

    with pytest.raises(ModelError, match="multiples of patch"):
        create_model("vit_tiny", in_shape=[1, 30, 30], num_classes=10, patch=7)
    assert create_model("vit_tiny", in_shape=[1, 28, 28]).patch == 7
    assert create_model("vit_tiny").patch == 6  # default 36x36


def test_zoo_spec_expansion_and_errors() -> None:
    from invlab.sweep import ConfigError

    ms = expand_grid({"arch": "mlp", "n_train": [500, 1000], "augment": ["none", "r4", "noise"]})
    assert len(ms) == 6 and len({m.model_id for m in ms}) == 6
    with pytest.raises(ConfigError, match="unknown zoo field"):
        expand_grid({"arch": "mlp", "widht": 3})
    with pytest.raises(ConfigError, match="augment"):
        ZooModel(augment="mixup")
    from invlab.studies.generalization import preset

    full, quick = preset("full"), preset("quick")
    assert len(full.zoo) >= 100 and len(quick.zoo) >= 24
    assert not set(full.zoo) & set(full.reference)  # the reference panel is outside the zoo


def test_augment_seeded_and_exact() -> None:
    x = torch.rand(8, 1, 28, 28)
    for kind in ("translate", "rotate", "r4", "noise"):
        a = augment(x, kind, torch.Generator().manual_seed(1))
        b = augment(x, kind, torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and a.shape == x.shape and float(a.min()) >= 0
    assert augment(x, "none", torch.Generator()) is x
    r = augment(x, "r4", torch.Generator().manual_seed(1))
    assert all(any(torch.equal(r[i], x[i].rot90(k, (1, 2))) for k in range(4)) for i in range(8))
    from invlab.zoo.augment import affine

    same = affine(x, torch.zeros(8), torch.zeros(8, 2))
    assert torch.allclose(same, x, atol=1e-5)


@pytest.mark.parametrize("arch, width, depth", [("mlp", 16, 2), ("cnn_medium", 2, 1),
                                                ("cnn_small", 2, 1), ("vit_tiny", 16, 1)])
def test_stacked_equals_sequential(arch: str, width: int, depth: int) -> None:
    data = _synthetic_data()
    cfgs = [ZooModel(arch=arch, width=width, depth=depth, n_train=96, epochs=2, batch_size=32,
                     augment=a, seed=s) for a, s in (("none", 0), ("translate", 1), ("r4", 2))]
    cfgs.append(ZooModel(arch=arch, width=width, depth=depth, n_train=96, epochs=2,
                         batch_size=32, augment="noise", seed=3))
    seq = [train_sequential(c, data) for c in cfgs]
    st = train_stacked(cfgs, data)
    for a, b in zip(seq, st, strict=True):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            if k.endswith("qkv.bias"):
                # the key bias has an exactly-zero gradient (softmax over keys ignores a
                # per-query constant); Adam turns its float-noise gradient into lr-sized
                # steps of random sign, so only the query and value biases are comparable
                d = va.shape[0] // 3
                va, vb = torch.cat([va[:d], va[2 * d:]]), torch.cat([vb[:d], vb[2 * d:]])
            torch.testing.assert_close(va, vb, atol=1e-5, rtol=1e-4, msg=k)
    # different seeds really give different models
    assert not torch.equal(next(iter(st[0].parameters())), next(iter(st[1].parameters())))
    with pytest.raises(ValueError, match="stack"):
        train_stacked([cfgs[0], ZooModel(arch=arch, width=width, depth=depth, n_train=64)], data)


def test_stacked_sgd_equals_sequential() -> None:
    data = _synthetic_data()
    cfgs = [ZooModel(arch="mlp", width=8, n_train=96, epochs=1, batch_size=16, optimizer="sgd",
                     lr=0.05, weight_decay=1e-4, seed=s) for s in range(3)]
    for a, b in zip([train_sequential(c, data) for c in cfgs], train_stacked(cfgs, data),
                    strict=True):
        for va, vb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(va, vb, atol=1e-5, rtol=1e-4)


class _Probe(nn.Module):
    """Records its input; logits favour class 0 for a fixed margin."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        out = torch.zeros(x.shape[0], 4)
        out[:, 0] = 2.0
        return out


def test_measure_model_normalizes_and_bounds() -> None:
    from invlab.studies.generalization_measures import measure_model

    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 0, 0, 1, 2, 3])
    probe = _Probe()
    m = measure_model(probe, x, y, [0.5, 0.4, 0.3], [0.2, 0.1, 0.25], transforms=("grayscale",))
    want = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.1, 0.25]).view(1, 3, 1, 1)
    first = [s for s in probe.seen if len(s) == len(x)][0]  # (after a 1-image slicing probe)
    assert torch.allclose(first, want)  # normalization after the pixel space
    p0 = float(torch.softmax(torch.tensor([2.0, 0, 0, 0]), 0)[0])
    # a constant model is perfectly invariant: EI = its confidence, agreement 1, divergences 0
    assert m["accuracy"] == pytest.approx(0.5) and m["confidence"] == pytest.approx(p0)
    assert m["ei"] == pytest.approx(p0) and m["agreement"] == 1.0
    assert m["neg_js"] == pytest.approx(0.0, abs=1e-7) and m["neg_li"] == pytest.approx(0.0)
    assert m["ei_grayscale"] == pytest.approx(p0)
    gray_in = probe.seen[-1] * torch.tensor([0.2, 0.1, 0.25]).view(1, 3, 1, 1) + torch.tensor(
        [0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(gray_in[:, 0], gray_in[:, 1], atol=1e-5)  # grayscale was applied


def test_measure_model_rotation_sensitive() -> None:
    from invlab.studies.generalization_measures import measure_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    m = measure_model(net, torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,)), [0.5], [0.3])
    assert 0 <= m["ei"] <= m["agreement"] <= 1 and m["ei"] < 0.9
    assert m["neg_kl"] < 0 and m["neg_js"] < 0 and m["neg_li"] < 0


MODELS_FILE = '''
import torch
from torch import nn

def models():
    for i in range(4):
        torch.manual_seed(i)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        yield f"random{i}", net, {"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25]}
'''


def _rgb_folder(root: Path, n: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("apple", "bus", "cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


def test_own_models_and_image_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.studies.generalization import GeneralizationPreset, Preset, run_generalization

    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "zoo.py").write_text(MODELS_FILE)
    folder = _rgb_folder(tmp_path / "imgs")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "extra.npz", images=rng.random((20, 3, 16, 16)).astype(np.float32),
             labels=rng.integers(0, 4, 20))
    p = Preset(GeneralizationPreset(n_boot=20, transforms=("grayscale",)), (), ())
    out = run_generalization(p, tmp_path / "out", str(tmp_path / "ck"), progress=False,
                             test_sets={"folder": str(folder), "extra": str(tmp_path / "extra.npz"),
                                        "folder2": str(folder)},
                             models_file=str(tmp_path / "zoo.py"))
    invlab.build_report(out)  # running and reporting are two steps
    df = pd.read_csv(out / "models.csv")
    assert sorted(df.model_id.unique()) == [f"random{i}" for i in range(4)]
    assert list(df.test_set.unique()) == ["folder", "extra", "folder2"]
    assert {"accuracy", "ei", "ei_grayscale", "confidence", "neg_kl"} <= set(df.measure)
    s = json.loads((out / "summary.json").read_text())
    assert s["zoo_size"] == 4 and s["id_test_set"] == "folder"
    assert "ei" in s["estimation"] and "ei" in s["selection"]
    assert not (out / "zoo.csv").exists()
    (tmp_path / "bad.py").write_text("def models():\n    yield ('x', 3, {})\n")
    with pytest.raises(TypeError, match="expected \\(str, nn.Module, dict\\)"):
        run_generalization(p, tmp_path / "out2", str(tmp_path / "ck"), progress=False,
                           test_sets={"folder": str(folder)}, models_file=str(tmp_path / "bad.py"))


def _tiny_preset():
    from invlab.studies.generalization import GeneralizationPreset, Preset
    from invlab.zoo import expand_zoo

    zoo = expand_zoo([{"arch": "mlp", "width": 16, "n_train": [200, 600], "epochs": [1, 2],
                       "augment": ["none", "r4"]}])
    ref = expand_zoo([{"arch": "mlp", "width": 24, "n_train": 600, "epochs": 1,
                       "seed": [100, 101]}])
    # n_pool 3000 leaves an ID test split in any clone (the bundled subset has 5,000 images)
    s = GeneralizationPreset(test_sets=("id", "blur", "natadv", "thick"), n_eval=80, n_boot=30,
                             n_pool=3000)
    return Preset(s, tuple(zoo), tuple(ref))


def test_tiny_study_end_to_end_and_resume(mnist_test_dir, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.report.generalization import print_table
    from invlab.studies.generalization import run_generalization
    from invlab.sweep import ResultsStore

    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    p = _tiny_preset()
    nz = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(nz, images=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             labels=rng.integers(0, 10, 30))
    out = run_generalization(p, tmp_path / "out", str(tmp_path / "ck"), progress=False,
                             test_sets={"mine": str(nz)})
    assert not (out / "summary.json").exists() and not (out / "test_sets.png").exists()
    invlab.build_report(out)  # running and reporting are two steps
    zoo = pd.read_csv(out / "zoo.csv")
    assert len(zoo) == 8 and {"model_id", "checkpoint", "id_accuracy"} <= set(zoo.columns)
    assert zoo.id_accuracy.between(0, 1).all()
    df = pd.read_csv(out / "models.csv")
    assert df.groupby(["model_id", "test_set"]).size().nunique() == 1
    assert len(df.model_id.unique()) == 8
    assert list(df.test_set.unique()) == ["id", "blur", "natadv", "thick", "mine"]
    s = json.loads((out / "summary.json").read_text())
    assert s["zoo_size"] == 8
    st = s["model_centric"]["id"]["ei"]
    assert -1 <= st["spearman"] <= 1 and len(st["spearman_ci"]) == 2 and "probit" in st
    assert set(s["estimation"]["ei"]["linear"]["per_set"]) == {"blur", "natadv", "thick", "mine"}
    assert len(s["claims"]) == 3 and all(c["verdict"] in ("holds", "does not hold",
                                                         "cannot be evaluated") for c in s["claims"])
    assert {"all", "mlp"} <= set(s["subgroups"])  # subgroups of < 5 models are left out
    assert all(g["n_models"] >= 5 for g in s["subgroups"].values())
    for stem in ("scatter_ei", "grid_spearman", "ranking", "test_sets"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.svg").exists()
    text = print_table(out)
    assert "Claims check" in text and "EI" in text
    # resume: every cell is already done, nothing retrains
    before = len(ResultsStore(out / "store.sqlite").done_ids())
    run_generalization(p, out, str(tmp_path / "ck"), progress=False, test_sets={"mine": str(nz)})
    assert len(ResultsStore(out / "store.sqlite").done_ids()) == before
    # cell identities hold no paths: moving the caches keeps every cell id
    from dataclasses import replace

    from invlab.studies.generalization import TestSetRef, ZooMeasureCell
    from invlab.sweep import cell_id

    c = ZooMeasureCell(p.zoo[0], "fp", (TestSetRef("id", "abc"),), (), checkpoints="/a",
                       sets_dir="/b", threads=1)
    assert cell_id(c) == cell_id(replace(c, checkpoints="/c", sets_dir="/d"))
    # the thread count changes float results, so it is part of the identity (issue 9)
    assert cell_id(c) != cell_id(replace(c, threads=2))
    assert cell_id(c) != cell_id(replace(c, data_fingerprint="other"))
    # a bad external set fails with the reader's message
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 32, 32), np.uint8), labels=np.zeros(3, int))
    from invlab.data import DataError
    with pytest.raises(DataError, match="expect \\[1, 28, 28\\]"):
        run_generalization(p, tmp_path / "out3", str(tmp_path / "ck"), progress=False,
                           test_sets={"bad": str(tmp_path / "bad.npz")})


@pytest.mark.slow
def test_quick_preset_cli(mnist_test_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.cli import main
    # the quick preset fits the bundled 5k MNIST (a 3,000-image pool): it runs in any clone
    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    rc = main(["study", "generalization", "--quick", "--out", str(tmp_path / "q"),
               "--checkpoints", str(tmp_path / "ck"), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Claims check" in text and "Spearman" in text
    s = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert s["zoo_size"] >= 24 and len(s["test_sets"]) == 9


def test_zoo_train_cli(mnist_test_dir, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.cli import main

    spec = tmp_path / "zoo.yaml"
    spec.write_text("- {arch: mlp, width: 8, n_train: 100, epochs: 1, augment: [none, noise]}\n")
    rc = main(["zoo", "train", str(spec), "--checkpoints", str(tmp_path / "ck"),
               "--table", str(tmp_path / "zoo.csv"), "--n-pool", "3000"])
    assert rc == 0 and "2 models" in capsys.readouterr().out
    t = pd.read_csv(tmp_path / "zoo.csv")
    assert len(t) == 2 and all(Path(c).exists() for c in t.checkpoint)
    assert main(["zoo", "train", "nonexistent-preset"]) == 2


def test_a_zoo_larger_than_the_pool_stops_before_any_training(mnist_test_dir, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.studies.generalization import preset, run_generalization

    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    p = preset("quick", n_pool=1000)  # the quick preset's pool is 3,000 (fits the bundled 5k)
    assert max(m.n_train for m in (*p.zoo, *p.reference)) > 1000
    with pytest.raises(ValueError, match=r"n_train = .*n_pool = 1000"):
        run_generalization(p, tmp_path / "out", str(tmp_path / "ck"), progress=False)
    assert not list((tmp_path / "ck").rglob("*.safetensors"))
