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
    with pytest.raises(DataError, match="unsupported test-set format"):
        load_images(tmp_path / "x.txt")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_images(tmp_path / "junk.npz")


def test_cli_test_set_flag_format() -> None:
    from invlab.studies.cli import _kv

    assert _kv(["a=x.npz", "b=dir/"]) == {"a": "x.npz", "b": "dir/"}
    with pytest.raises(SystemExit, match="NAME=PATH"):
        _kv(["x.npz"])
