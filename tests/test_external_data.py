"""Bring-your-own test sets: .npz files and image folders (Pillow), and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from invlab.data import DataError, load_images


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _folder(root: Path, classes: list[str], n: int = 3, size: tuple[int, int] = (28, 28),
            mode: str = "L") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            shape = size[::-1] + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                root / c / f"{i}.png")
    return root


def test_npz_uint8_hw(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    ds = load_images(_npz(tmp_path / "a.npz", images=x, labels=np.arange(6) % 3))
    assert ds.images.shape == (6, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.allclose(ds.images[:, 0], torch.from_numpy(x).float() / 255)
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_npz_float_nchw(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    ds = load_images(_npz(tmp_path / "b.npz", images=x, labels=np.zeros(4, int)),
                     in_shape=(3, 8, 8), num_classes=10)
    assert torch.equal(ds.images, torch.from_numpy(x))


@pytest.mark.parametrize("arrays, match", [
    ({"images": np.zeros((4, 28, 28), np.uint8)}, "missing array"),
    ({"images": np.zeros((4, 28), np.uint8), "labels": np.zeros(4, int)}, r"\[N, H, W\]"),
    ({"images": np.zeros((4, 28, 28), np.uint8), "labels": np.zeros(3, int)}, "N = 4"),
    ({"images": np.zeros((4, 28, 28), np.uint8), "labels": np.zeros(4)}, "integers >= 0"),
    ({"images": np.zeros((4, 28, 28), np.uint8), "labels": -np.ones(4, int)}, "integers >= 0"),
    ({"images": np.full((4, 28, 28), 255.0), "labels": np.zeros(4, int)}, r"in \[0, 1\]"),
    ({"images": np.zeros((4, 28, 28), np.int16), "labels": np.zeros(4, int)}, "dtype int16"),
])
def test_npz_bad_inputs(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_images(_npz(tmp_path / "bad.npz", **arrays))


def test_npz_shape_and_class_checks(tmp_path: Path) -> None:
    p = _npz(tmp_path / "c.npz", images=np.zeros((4, 32, 32), np.uint8),
             labels=np.array([0, 1, 12, 3]))
    with pytest.raises(DataError, match=r"shape \[1, 32, 32\].*expect \[1, 28, 28\]"):
        load_images(p, in_shape=(1, 28, 28))
    with pytest.raises(DataError, match=r"unknown class\(es\) \['12'\]"):
        load_images(p, num_classes=10)


def test_folder_digit_classes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", ["0", "3", "7"], n=2)
    ds = load_images(root, num_classes=10, in_shape=(1, 28, 28))
    assert ds.images.shape == (6, 1, 28, 28)
    assert ds.labels.tolist() == [0, 0, 3, 3, 7, 7]  # digit names are their own indices
    assert float(ds.images.max()) <= 1.0


def test_folder_named_classes_rgb(tmp_path: Path) -> None:
    root = _folder(tmp_path / "g", ["zebra", "cat", "dog"], n=2, size=(16, 12), mode="RGB")
    ds = load_images(root)
    assert ds.images.shape == (6, 3, 12, 16)
    assert ds.classes == ["cat", "dog", "zebra"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DataError, match=r"unknown class\(es\) \['zebra'\]"):
        load_images(root, num_classes=2)


def test_folder_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_images(tmp_path / "empty")
    root = _folder(tmp_path / "h", ["0", "1"], n=2)
    (root / "1" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        load_images(root)
    root2 = _folder(tmp_path / "i", ["0"], n=1)
    from PIL import Image
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root2 / "0" / "small.png")
    with pytest.raises(DataError, match="image size 20x20 differs from 28x28"):
        load_images(root2)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported format"):
        load_images(tmp_path / "x.txt")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_images(tmp_path / "junk.npz")


def test_cli_test_set_flag_format() -> None:
    from invlab.studies.flags import parse_test_sets as _kv

    assert _kv(["a=x.npz", "b=dir/"]) == {"a": "x.npz", "b": "dir/"}
    with pytest.raises((SystemExit, ValueError), match="NAME=PATH"):
        _kv(["x.npz"])


# ---------------------------------------------------------------- invlab measure --data PATH

def _checkpoint(tmp_path: Path, **meta: object) -> tuple[Path, torch.nn.Module]:
    from invlab.checkpoint import save_checkpoint
    from invlab.models import create_model

    torch.manual_seed(0)
    kw = meta.pop("model_kwargs", {"in_shape": [1, 28, 28], "num_classes": 10})
    model = create_model("mlp", hidden=16, depth=1, **kw).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", **meta)
    return path, model


def _digits(n: int = 40, size: int = 28, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            np.arange(n) % classes)


def test_measure_cli_npz_equals_python_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    """``invlab measure --data x.npz`` = ``invlab.measure`` on the images normalized with the
    checkpoint's per-channel statistics (the documented Python route)."""
    import json

    import invlab
    from invlab.cli import main

    norm = {"mean": [0.13], "std": [0.31]}
    ck, model = _checkpoint(tmp_path, normalization=norm)
    x, y = _digits()
    npz = _npz(tmp_path / "mine.npz", images=x, labels=y)
    assert main(["measure", "--checkpoint", str(ck), "--data", str(npz), "--transform", "r4",
                 "--metrics", "kl,EI", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 40 and out["data_check"]["external"]["images"] == 40
    xt = (torch.from_numpy(x).float()[:, None] / 255 - 0.13) / 0.31
    ref = invlab.measure(model, xt, labels=torch.from_numpy(y), transform="r4",
                         metrics=["kl", "effective_invariance"])
    for k in ("kl", "effective_invariance"):
        assert out["metrics"][k]["mean"] == pytest.approx(ref.to_dict()["metrics"][k]["mean"],
                                                          rel=1e-5)


def test_measure_external_prepared_like_training(tmp_path: Path) -> None:
    """A checkpoint trained without class 9 and padded to 36: class-9 images are dropped, the
    rest padded and normalized; pixel-space round trip is exact."""
    from invlab.checkpoint import read_metadata
    from invlab.data import last_data_check, load_for_checkpoint

    ck, _ = _checkpoint(tmp_path, model_kwargs={"in_shape": [1, 36, 36], "num_classes": 9},
                        normalization={"mean": 0.2, "std": 0.5},
                        data={"pad_to": 36, "exclude_class": 9})
    x, y = _digits()
    npz = _npz(tmp_path / "mine.npz", images=x, labels=y)
    xt, yt = load_for_checkpoint(str(npz), read_metadata(ck))
    keep = y != 9
    assert xt.shape == (int(keep.sum()), 1, 36, 36) and yt.tolist() == y[keep].tolist()
    assert torch.allclose(xt[:, :, 4:32, 4:32] * 0.5 + 0.2,
                          torch.from_numpy(x[keep]).float()[:, None] / 255, atol=1e-6)
    assert float((xt[:, :, :4] * 0.5 + 0.2).abs().max()) < 1e-6  # zero padding
    assert last_data_check()["external"]["dropped"] == int((~keep).sum())


@pytest.mark.parametrize("case, match", [
    ("shape", r"images are \[1, 20, 20\].*takes \[1, 28, 28\]"),
    ("label", r"label\(s\) \[12\] are unknown.*10 classes"),
    ("split", "have no train/val/test splits"),
    ("missing", "no such file or folder"),
    ("channels", "3-channel images, but the checkpoint's normalization does not fit them"),
])
def test_measure_cli_external_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         case: str, match: str) -> None:
    import re

    from invlab.cli import main

    ck, _ = _checkpoint(tmp_path, normalization={"mean": [0.1], "std": [0.3]})
    x, y = _digits()
    data = str(_npz(tmp_path / "ok.npz", images=x, labels=y))
    if case == "shape":
        data = str(_npz(tmp_path / "s.npz", images=_digits(size=20)[0], labels=y))
    elif case == "label":
        data = str(_npz(tmp_path / "l.npz", images=x, labels=np.where(y == 3, 12, y)))
    elif case == "split":
        data += ":test"
    elif case == "missing":
        data = str(tmp_path / "nope.npz")
    elif case == "channels":
        ck, _ = _checkpoint(tmp_path, model_kwargs={"in_shape": [3, 28, 28], "num_classes": 10},
                            normalization={"mean": [0.1, 0.2], "std": [0.3, 0.3]})
        data = str(_folder(tmp_path / "rgb", ["0", "1"], mode="RGB"))
    assert main(["measure", "--checkpoint", str(ck), "--data", data, "--metrics", "kl",
                 "--no-progress"]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_measure_cli_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from invlab.cli import main

    ck, _ = _checkpoint(tmp_path, normalization={"mean": 0.1, "std": 0.3})
    root = _folder(tmp_path / "imgs", ["3", "7"], n=4)
    assert main(["measure", "--checkpoint", str(ck), "--data", str(root), "--metrics", "kl",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "your own images" in out and "n: 8" in out


def test_measure_cli_preprocess_and_class_mapping(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--preprocess reaches the reader (40×30 photos → 28×28 = the model's input); folder
    names map in sorted order, printed in the header and recorded in the JSON."""
    import json

    from PIL import Image

    from invlab.cli import main

    ck, _ = _checkpoint(tmp_path, normalization={"mean": 0.1, "std": 0.3})
    rng = np.random.default_rng(0)
    for c in ("zebra", "ant"):
        (tmp_path / "p" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (30 + i, 40), dtype=np.uint8)).save(
                tmp_path / "p" / c / f"{i}.png")
    args = ["measure", "--checkpoint", str(ck), "--data", str(tmp_path / "p"), "--metrics", "kl",
            "--no-progress"]
    assert main(args) == 2
    assert "pass a preprocess spec" in capsys.readouterr().err
    assert main(args + ["--preprocess", "resize=28,crop=28"]) == 0
    out = capsys.readouterr().out
    assert "classes by sorted folder name: ant→0, zebra→1" in out and "n: 6" in out
    assert main(args + ["--preprocess", "resize=28,crop=28", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["class_to_idx"] == {"ant": 0, "zebra": 1}
    assert doc["preprocess"] == "resize=28,crop=28"
    assert main(args + ["--preprocess", "resize=28,crp=28"]) == 2
    assert "valid keys: resize=N, crop=N" in capsys.readouterr().err
    assert main(["measure", "--checkpoint", str(ck), "--data", "mnist-5k", "--preprocess",
                 "crop=20", "--no-progress"]) == 2
    assert "applies to your own images" in capsys.readouterr().err


def test_excluded_class_needs_matching_class_names(tmp_path: Path) -> None:
    """Folders zero..nine sort as eight→0 … zero→9: a checkpoint that drops class 9 must
    record its class names, and they must match (issue 24 §3)."""
    from invlab.checkpoint import read_metadata
    from invlab.data import load_for_checkpoint

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    root = _folder(tmp_path / "w", names, n=1)
    ck, _ = _checkpoint(tmp_path, model_kwargs={"in_shape": [1, 28, 28], "num_classes": 9},
                        data={"exclude_class": 9})
    with pytest.raises(DataError, match=r"eight→0.*records no class names"):
        load_for_checkpoint(str(root), read_metadata(ck))
    ck2, _ = _checkpoint(tmp_path / "b", model_kwargs={"in_shape": [1, 28, 28], "num_classes": 9},
                         data={"exclude_class": 9, "class_names": names})
    with pytest.raises(DataError, match=r"trained on classes \['zero', 'one'"):
        load_for_checkpoint(str(root), read_metadata(ck2))
    ck3, _ = _checkpoint(tmp_path / "c", model_kwargs={"in_shape": [1, 28, 28], "num_classes": 9},
                         data={"exclude_class": 9, "class_names": sorted(names)})
    x, y = load_for_checkpoint(str(root), read_metadata(ck3))
    assert len(y) == 9  # 'zero' (index 9 in sorted order) dropped


def test_audit_reads_photos_and_preprocess(tmp_path: Path) -> None:
    """invlab audit's data loader: photos (unlabelled) decoded lazily at the given size."""
    from invlab.audit import AuditError, load_audit_data
    from invlab.data import open_images

    n = min(3, len(open_images("photos", preprocess="crop=32")))  # 2 photos without scikit-image, 10 with it
    x, y, info = load_audit_data("photos", {}, limit=3, seed=0, preprocess="resize=40,crop=32")
    assert x.shape == (n, 3, 32, 32) and y is None and info["images"] == n
    assert info["preprocess"] == "resize=40,crop=32" and "unlabelled" in info["description"]
    with pytest.raises(AuditError, match="--preprocess applies to image files"):
        load_audit_data("mnist-5k", {}, limit=3, preprocess="crop=20")


# ------------------------------------------------ your own images as a source (genuine study)

def test_file_source_equals_named_source_and_is_spelling_free(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from invlab.data import canonical_source, load_source, source_label

    ds = load_source("mnist-5k")
    npz = _npz(tmp_path / "my digits.npz", images=ds.images[:300, 0], labels=ds.labels[:300])
    monkeypatch.chdir(tmp_path)
    mine = load_source("./my digits.npz")
    assert mine.name == str(npz.resolve()) and mine.images.dtype == np.uint8
    assert (mine.images == ds.images[:300]).all() and (mine.labels == ds.labels[:300]).all()
    assert canonical_source("./my digits.npz") == canonical_source(str(npz)) == mine.name
    assert canonical_source("MNIST") == "mnist" and source_label(str(npz)) == "my-digits"
    rgb = _folder(tmp_path / "rgb", ["0", "1"], mode="RGB")
    with pytest.raises(DataError, match="3-channel images; a data source is grayscale"):
        load_source(str(rgb))
    with pytest.raises(DataError, match="or a path to your own images"):
        load_source("mnistt")


def test_genuine_study_on_your_own_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str],
                                       caplog: pytest.LogCaptureFixture) -> None:
    """``--datasets PATH``: the study trains on the file, names its outputs after it, resumes
    under another spelling of the path, and ``measure --data PATH`` rebuilds its test split."""
    import json

    from invlab.cli import main
    from invlab.data import load_source

    ds = load_source("mnist-5k")
    _npz(tmp_path / "mine.npz", images=ds.images[:, 0], labels=ds.labels)
    monkeypatch.chdir(tmp_path)
    args = ["study", "genuine", "--quick", "--groups", "r4", "--epochs", "1", "--seeds", "1",
            "--out", "out", "--checkpoints", "ck", "--no-progress"]
    monkeypatch.setattr("invlab.studies.genuine.load_preset", _tiny_genuine_preset())
    assert main(args + ["--datasets", "mine.npz"]) == 0
    assert (tmp_path / "out" / "table1_mine.md").exists()
    assert (tmp_path / "out" / "fig2_tsne_mine_r4.png").exists()
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level("INFO", logger="invlab"):
        assert main(args + ["--datasets", str(tmp_path / "." / "mine.npz")]) == 0
    assert "genuine: 0 ran, 5 skipped, 0 failed" in caplog.text
    capsys.readouterr()
    ck = sorted((tmp_path / "ck").glob("*.safetensors"))[0]
    assert main(["measure", "--checkpoint", str(ck), "--data", "mine.npz", "--metrics", "kl",
                 "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 200 and out["data_check"]["verified"] and not out["data_check"]["mismatch"]


def _tiny_genuine_preset():  # type: ignore[no-untyped-def]
    from invlab.studies import genuine

    real = genuine.load_preset

    def load(cls, study, name, overrides):  # type: ignore[no-untyped-def]
        small = dict(n_train=600, n_val=200, n_test_max=200, n_si=20, ig_steps=8,
                     tune_n_val_si=20, tune_max_trials=2, methods=("da", "ir"))
        return real(cls, study, name, {**small, **{k: v for k, v in overrides.items()
                                                   if v is not None}})
    return load


def test_measure_cli_pixel_space_transform_with_per_channel_statistics(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A non-exact transform (rotate:30) on a checkpoint with list-valued statistics: the CLI
    equals ``invlab.measure`` on pixel images with ``normalization=``."""
    import json

    import invlab
    from invlab.cli import main

    norm = {"mean": [0.13], "std": [0.31]}
    ck, model = _checkpoint(tmp_path, normalization=norm)
    x, y = _digits()
    npz = _npz(tmp_path / "mine.npz", images=x, labels=y)
    assert main(["measure", "--checkpoint", str(ck), "--data", str(npz), "--transform",
                 "rotate:30", "--metrics", "kl,EI", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = invlab.measure(model, torch.from_numpy(x).float()[:, None] / 255,
                         labels=torch.from_numpy(y), transform="rotate:30", normalization=norm,
                         metrics=["kl", "effective_invariance"]).to_dict()["metrics"]
    for k in ("kl", "effective_invariance"):
        assert out["metrics"][k]["mean"] == pytest.approx(ref[k]["mean"], rel=1e-4, abs=1e-6)
