"""The lazy natural-image reader (invlab.data.open_images): every format against an
independent decode, the preprocess spec against a hand computation, laziness, the streaming
fingerprint, and every bad input → one clear DataError."""

from __future__ import annotations

import hashlib
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from invlab.data import DataError, load_images, open_images, parse_preprocess

RNG = np.random.default_rng(0)


def _rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ref(path: Path, mode: str = "RGB") -> torch.Tensor:
    """Independent decode: Pillow convert + numpy, [C, H, W] float32 / 255."""
    with Image.open(path) as im:
        a = np.asarray(im.convert(mode), dtype=np.float32) / np.float32(255)
    return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())


def _png16_rgb(path: Path, arr: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------ formats


def test_class_folder_rgb_jpeg_and_png(tmp_path: Path) -> None:
    for c in ("dog", "cat"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(_rgb(12, 16)).save(tmp_path / c / f"{i}.png")
        Image.fromarray(_rgb(12, 16)).save(tmp_path / c / "j.jpg", quality=90)
    ds = open_images(tmp_path)
    assert len(ds) == 6 and ds.image_shape == (3, 12, 16) and ds.format == "class-folder"
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert ds.mapping_text() == "classes by sorted folder name: cat→0, dog→1"
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    files = sorted((tmp_path / "cat").iterdir()) + sorted((tmp_path / "dog").iterdir())
    for i, f in enumerate(files):
        x, y = ds[i]
        assert x.dtype == torch.float32 and y == (0 if i < 3 else 1)
        assert torch.equal(x, _ref(f))
    s = load_images(tmp_path)
    assert torch.equal(s.images, torch.stack([ds[i][0] for i in range(6)]))
    assert s.mapping == {"cat": 0, "dog": 1} and s.classes == ["cat", "dog"]


def test_flat_folder_with_labels_file(tmp_path: Path) -> None:
    names = ["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000001.JPEG"]
    for n in names:
        Image.fromarray(_rgb(10, 10)).save(tmp_path / n, format="JPEG")
    ds = open_images(tmp_path)  # no labels file: unlabelled
    assert ds.labels is None and isinstance(ds[0], torch.Tensor)
    (tmp_path / "labels.csv").write_text(f"{names[0]},65\n\n# a comment\n{names[1]},970\n")
    ds = open_images(tmp_path)  # found beside the images
    assert ds.labels.tolist() == [970, 65] and ds.classes is None  # sorted file names
    assert torch.equal(ds[0][0], _ref(tmp_path / names[1])) and ds[0][1] == 970
    lab = tmp_path.parent / "val_labels.txt"
    lab.write_text(f"filename,label\n{names[0]},goldfish\n{names[1]},tench\n")
    ds2 = open_images(tmp_path / ".", labels=lab)
    assert ds2.class_to_idx == {"goldfish": 0, "tench": 1} and ds2.labels.tolist() == [1, 0]
    lab.write_text("ILSVRC2012_val_00000001,3\nILSVRC2012_val_00000002,4\n")  # no extension
    assert open_images(tmp_path, labels=lab).labels.tolist() == [3, 4]


def test_npz_channels_last_and_npy_mmap(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
    y = np.arange(5) % 3
    np.savez(tmp_path / "cl.npz", images=x, labels=y)
    ds = open_images(tmp_path / "cl.npz")
    assert ds.image_shape == (3, 28, 28)
    ref = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.equal(ds[2][0], ref[2]) and torch.equal(load_images(tmp_path / "cl.npz").images, ref)
    np.save(tmp_path / "fog.npy", x)
    np.save(tmp_path / "labels.npy", y)
    ds = open_images(tmp_path / "fog.npy", labels=tmp_path / "labels.npy")
    assert ds.describe()["labels_file"] == str(tmp_path / "labels.npy")
    assert isinstance(ds._mapped(), np.memmap)  # memory-mapped, not read
    assert torch.equal(ds.to_tensors()[0], ref) and torch.equal(ds[4][0], ref[4])
    assert ds.labels.tolist() == y.tolist()
    assert len(pickle.dumps(ds)) < 20_000  # DataLoader workers re-map, never copy the array
    assert open_images(tmp_path / "fog.npy").labels.tolist() == y.tolist()  # labels.npy beside
    (tmp_path / "labels.npy").unlink()
    assert open_images(tmp_path / "fog.npy").labels is None
    np.save(tmp_path / "v6_data.npy", x)
    np.save(tmp_path / "v6_labels.npy", y[::-1].copy())
    assert open_images(tmp_path / "v6_data.npy").labels.tolist() == y[::-1].tolist()
    g = RNG.integers(0, 256, (4, 9, 7), dtype=np.uint8)  # [N, H, W]
    np.save(tmp_path / "g.npy", g)
    assert torch.equal(open_images(tmp_path / "g.npy")[1], torch.from_numpy(g[1:2] / np.float32(255)))


@pytest.mark.parametrize("shape", [(4, 3, 8, 3), (4, 28, 28, 5), (4, 28)])
def test_array_layout_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    np.save(tmp_path / "a.npy", np.zeros(shape, np.uint8))
    with pytest.raises(DataError, match=r"a\.npy: .*(channel axis|\[N, H, W\])"):
        open_images(tmp_path / "a.npy")


def _cifar(path: Path, n: int, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    labels = RNG.integers(0, 10 if label_bytes == 1 else 100, (n, label_bytes), dtype=np.uint8)
    pix = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    path.write_bytes(np.concatenate([labels, pix], axis=1).tobytes())
    return labels[:, -1].astype(np.int64), pix.reshape(n, 3, 32, 32)


@pytest.mark.parametrize("label_bytes, name", [(1, "test_batch.bin"), (2, "test.bin")])
def test_cifar_binary(tmp_path: Path, label_bytes: int, name: str) -> None:
    y, pix = _cifar(tmp_path / name, 7, label_bytes)
    ds = open_images(tmp_path / name)
    assert ds.format == ("cifar10-bin" if label_bytes == 1 else "cifar100-bin")
    assert ds.labels.tolist() == y.tolist()  # CIFAR-100: the fine label (second byte)
    for i in (0, 6):
        assert torch.equal(ds[i][0], torch.from_numpy(pix[i].astype(np.float32) / 255))
    if label_bytes == 1:
        (tmp_path / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
        assert open_images(tmp_path / name).classes == [f"c{i}" for i in range(10)]


def test_cifar_pickle_refused(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "data_batch_1").write_bytes(pickle.dumps({"data": [1, 2]}, protocol=2))
    (d / "test_batch").write_bytes(pickle.dumps({"data": [1]}, protocol=2))
    (d / "readme.html").write_text("<html></html>")
    for p in (d, d / "data_batch_1"):
        with pytest.raises(DataError, match="pickled CIFAR 'python version'.*binary version"):
            open_images(p)
    (tmp_path / "odd.bin").write_bytes(b"\x80\x02" + b"x" * 100)
    with pytest.raises(DataError, match="python version"):
        open_images(tmp_path / "odd.bin")


# ------------------------------------------------------------------ modes


def test_modes_converted_exactly(tmp_path: Path) -> None:
    rgb = _rgb(6, 5)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")
    rgba = np.concatenate([rgb, RNG.integers(0, 256, (6, 5, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    ds = open_images(tmp_path)  # flat, all colour
    by = {Path(n).name: i for i, n in enumerate(ds._names)}
    assert torch.equal(ds[by["p.png"]], _ref(tmp_path / "p.png"))  # palette applied
    assert torch.equal(ds[by["c.tif"]], _ref(tmp_path / "c.tif"))  # Pillow's CMYK→RGB
    # the CMYK formula stated in the docstring, by hand
    with Image.open(tmp_path / "c.tif") as im:
        cmyk = np.asarray(im).astype(np.float64)
    hand = np.round((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255) / 255
    assert np.abs(ds[by["c.tif"]].numpy().transpose(1, 2, 0) - hand).max() <= 1 / 255 + 1e-7
    assert torch.equal(ds[by["a.png"]], torch.from_numpy(rgb.transpose(2, 0, 1) / np.float32(255)))


def test_16bit_png_and_float_tiff(tmp_path: Path) -> None:
    a16 = RNG.integers(0, 65536, (9, 11), dtype=np.uint16)
    a16[0, 0], a16[0, 1] = 65535, 300  # > 255: would clip under convert("L")
    Image.fromarray(a16).save(tmp_path / "g16.png")
    Image.fromarray(a16).save(tmp_path / "g16.tif")
    f = RNG.random((9, 11)).astype(np.float32)
    f[0, 0], f[0, 1] = 0.0, 1.0
    Image.fromarray(f).save(tmp_path / "f.tif")
    ds = open_images(tmp_path)
    assert ds.image_shape == (1, 9, 11)
    by = {Path(n).name: i for i, n in enumerate(ds._names)}
    want16 = torch.from_numpy(a16.astype(np.float32) / np.float32(65535))[None]
    assert torch.equal(ds[by["g16.png"]], want16) and torch.equal(ds[by["g16.tif"]], want16)
    assert float(ds[by["g16.png"]][0, 0, 0]) == 1.0
    assert abs(float(ds[by["g16.png"]][0, 0, 1]) - 300 / 65535) < 1e-9
    assert torch.equal(ds[by["f.tif"]], torch.from_numpy(f)[None])  # taken as is


def test_16bit_colour_tiff_refused(tmp_path: Path) -> None:
    """Pillow reads a 48-bit RGB TIFF by keeping the high byte of each value: refused."""
    tifffile = pytest.importorskip("tifffile")  # Pillow cannot write one
    tifffile.imwrite(tmp_path / "c16.tif", RNG.integers(0, 65536, (6, 5, 3)).astype(np.uint16),
                     photometric="rgb")
    with pytest.raises(DataError, match=r"c16\.tif: a 16-bit RGB image.*high byte"):
        open_images(tmp_path)


def test_one_bit_images(tmp_path: Path) -> None:
    b = RNG.integers(0, 2, (5, 7)).astype(bool)
    Image.fromarray(b).save(tmp_path / "b.png")
    assert torch.equal(open_images(tmp_path)[0], torch.from_numpy(b.astype(np.float32))[None])


def test_grey_and_colour_mixed_replicates_grey(tmp_path: Path) -> None:
    g = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "a_grey.png")
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "b_rgb.png")
    ds = open_images(tmp_path)
    assert ds.image_shape == (3, 8, 8)
    assert torch.equal(ds[0], torch.from_numpy(g / np.float32(255))[None].expand(3, 8, 8))


@pytest.mark.parametrize("writer, match", [
    (lambda p: Image.fromarray(np.full((4, 4), 1.5, np.float32)).save(p / "hot.tif"),
     r"hot\.tif: float image values must lie in \[0, 1\], found range \[1\.5, 1\.5\]"),
    (lambda p: _png16_rgb(p / "rgb16.png", RNG.integers(0, 65536, (4, 4, 3)).astype(np.uint16)),
     r"rgb16\.png: a 16-bit RGB image.*high byte"),
    (lambda p: Image.fromarray(np.zeros((4, 4), np.int32), "I").save(p / "i32.tif"),
     r"i32\.tif: a 32-bit integer image"),
    (lambda p: (p / "README.txt").write_text("notes"), r"README\.txt: unreadable image file"),
])
def test_bad_files_stop_with_one_line(tmp_path: Path, writer, match: str) -> None:  # type: ignore[no-untyped-def]
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
    writer(tmp_path)
    with pytest.raises(DataError, match=match) as e:
        ds = open_images(tmp_path)
        ds.to_tensors()  # a float range is checked when the pixels are decoded
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ preprocess


def test_preprocess_matches_hand_computation(tmp_path: Path) -> None:
    a = _rgb(30, 40)
    Image.fromarray(a).save(tmp_path / "x.png")
    ds = open_images(tmp_path, preprocess="resize=20,crop=16")
    x = torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    r = F.interpolate(x, size=(20, 26), mode="bilinear", align_corners=False, antialias=True)
    want = r.clamp(0, 1)[0, :, 2:18, 5:21]  # top round(4/2)=2, left round(10/2)=5
    assert ds.image_shape == (3, 16, 16) and torch.equal(ds[0], want)
    assert parse_preprocess("crop=16,resize=20") == parse_preprocess(" resize=20, crop=16 ")
    assert open_images(tmp_path, preprocess="resize=15")[0].shape == (3, 15, 20)
    assert torch.equal(open_images(tmp_path, preprocess="crop=10x12")[0],
                       x[0, :, 10:20, 14:26])


def test_mixed_sizes_need_preprocess(tmp_path: Path) -> None:
    Image.fromarray(_rgb(24, 32)).save(tmp_path / "a.jpg")
    Image.fromarray(_rgb(40, 30)).save(tmp_path / "b.jpg")
    with pytest.raises(DataError, match=r"b\.jpg: image size 30x40 differs from 32x24 .*preprocess"):
        open_images(tmp_path)
    with pytest.raises(DataError, match=r"after preprocess 'resize=20'.*add a crop"):
        open_images(tmp_path, preprocess="resize=20")
    ds = open_images(tmp_path, preprocess="resize=20,crop=20")
    assert [tuple(ds[i].shape) for i in range(2)] == [(3, 20, 20)] * 2


@pytest.mark.parametrize("spec, match", [
    ("resize=256,crp=224", r"unknown item 'crp=224'; valid keys: resize=N, crop=N"),
    ("size=3", "valid keys"),
    ("resize=0", "positive integer"),
    ("resize=2.5", "positive integer"),
    ("crop=3,crop=4", "given twice"),
])
def test_preprocess_typos(spec: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        parse_preprocess(spec)


def test_crop_larger_than_image_names_the_file(tmp_path: Path) -> None:
    Image.fromarray(_rgb(24, 32)).save(tmp_path / "big.png")
    Image.fromarray(_rgb(20, 20)).save(tmp_path / "small.png")
    with pytest.raises(DataError, match=r"small\.png: crop=24x24 .* larger than the image, 20x20"):
        open_images(tmp_path, preprocess="crop=24")
    np.save(tmp_path.parent / "s.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"s\.npy: crop=9x9"):
        open_images(tmp_path.parent / "s.npy", preprocess="crop=9")


# ------------------------------------------------------------------ laziness, fingerprint


def test_construction_does_not_decode_pixels(tmp_path: Path) -> None:
    """A file whose header is valid but whose pixel data is corrupt: opening the folder only
    reads headers (succeeds); the access that decodes it names the file."""
    Image.fromarray(_rgb(16, 16)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(16, 16)).save(tmp_path / "b.png")
    raw = (tmp_path / "b.png").read_bytes()
    i = raw.index(b"IDAT") + 8
    (tmp_path / "b.png").write_bytes(raw[:i] + b"\x00" * 64 + raw[i + 64:])
    ds = open_images(tmp_path)  # does not raise: nothing decoded
    assert len(ds) == 2 and ds[0].shape == (3, 16, 16)
    with pytest.raises(DataError, match=r"b\.png: unreadable image file"):
        ds[1]


def _hand_fingerprint(items: list[tuple[str, str, Path]], spec: str = "") -> str:
    h = hashlib.sha256(b"invlab-images-v1\n" + f"preprocess={spec}\n".encode())
    for name, lab, f in items:
        data = f.read_bytes()
        h.update(f"{name}\t{lab}\t{len(data)}\n".encode() + data)
    return "sha256:" + h.hexdigest()


def test_fingerprint_streaming_reference_and_one_pixel(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for c in ("0", "1"):
        (root / c).mkdir(parents=True)
        Image.fromarray(_rgb(8, 8)).save(root / c / "x.png")
    ds = open_images(root)
    before = ds.fingerprint()
    items = [("0/x.png", "0", root / "0" / "x.png"), ("1/x.png", "1", root / "1" / "x.png")]
    assert ds.fingerprint() == _hand_fingerprint(items)
    assert open_images(root, preprocess="crop=4").fingerprint() == _hand_fingerprint(items, "crop=4")
    a = np.asarray(Image.open(root / "1" / "x.png")).copy()
    a[3, 3, 0] ^= 1
    Image.fromarray(a).save(root / "1" / "x.png")
    assert open_images(root).fingerprint() != before
    x = RNG.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(3))
    got = open_images(tmp_path / "x.npy", labels=tmp_path / "y.npy").fingerprint()
    assert got == _hand_fingerprint([("x.npy", "", tmp_path / "x.npy"), ("y.npy", "", tmp_path / "y.npy")])


# ------------------------------------------------------------------ labels files, photos


def test_labels_file_errors(tmp_path: Path) -> None:
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "b.png")
    lab = tmp_path.parent / "l.csv"
    lab.write_text("a.png,1\nb.png,2\nmissing.png,3\n")
    with pytest.raises(DataError, match=r"l\.csv: 1 listed file\(s\) are not in .*missing\.png"):
        open_images(tmp_path, labels=lab)
    lab.write_text("a.png,1\n")
    with pytest.raises(DataError, match=r"not in the labels file l\.csv \(e\.g\. b\.png\)"):
        open_images(tmp_path, labels=lab)
    lab.write_text("a.png 1\n")
    with pytest.raises(DataError, match=r"l\.csv:1: expected 'filename,label'"):
        open_images(tmp_path, labels=lab)
    with pytest.raises(DataError, match="no labels"):
        load_images(tmp_path)


def test_photos_source() -> None:
    ds = open_images("photos", preprocess="resize=64,crop=64")
    assert ds.labels is None and len(ds) >= 2 and ds.image_shape == (3, 64, 64)
    x = ds[0]
    assert x.shape == (3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert ds.photo_names[:2] == ["sklearn/china.jpg", "sklearn/flower.jpg"]
    try:
        import skimage  # noqa: F401
    except ImportError:
        assert len(ds) == 2
    else:
        import skimage.data

        assert len(ds) == 10
        i = ds.photo_names.index("skimage/chelsea")
        ref = torch.from_numpy(skimage.data.chelsea().transpose(2, 0, 1) / np.float32(255))
        assert torch.equal(ds._raw(i), ref)  # the same file skimage.data reads, decoded alike
        with pytest.raises(DataError, match="preprocess"):
            open_images("photos")


def test_dataloader_streams(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(10))
    ds = open_images(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), ds.to_tensors()[0])
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))


# ------------------------------------------------------------------ the papers' presets
# Plumbing only, on small colour fixtures written in the exact file formats; the presets'
# real runs (CIFAR-10 + CIFAR-10-C, ImageNet validation) were not run here.

ZOO_PY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(16, k)

    def forward(self, x):
        return self.fc(self.body(x))


def models():
    for i in range({n}):
        torch.manual_seed(i)
        yield f"net{{i}}", Tiny({k}), {{"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}}
'''


def _cifar_fixtures(root: Path, n: int = 30) -> dict[str, Path]:
    """test_batch.bin (CIFAR-10 binary), CIFAR-10-C fog.npy + labels.npy, CIFAR-10.1 v6."""
    root.mkdir()
    (root / "cifar-10-batches-bin").mkdir()
    _cifar(root / "cifar-10-batches-bin" / "test_batch.bin", n, 1)
    (root / "CIFAR-10-C").mkdir()
    np.save(root / "CIFAR-10-C" / "fog.npy", RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    np.save(root / "CIFAR-10-C" / "labels.npy", RNG.integers(0, 10, n).astype(np.int64))
    np.save(root / "cifar10.1_v6_data.npy", RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    np.save(root / "cifar10.1_v6_labels.npy", RNG.integers(0, 10, n).astype(np.int64))
    return {"cifar10": root / "cifar-10-batches-bin" / "test_batch.bin",
            "fog": root / "CIFAR-10-C" / "fog.npy", "cifar10_1": root / "cifar10.1_v6_data.npy"}


def test_generalization_preset_cifar10_plumbing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import pandas as pd

    from invlab.cli import main

    monkeypatch.setenv("INVLAB_CACHE", str(tmp_path / "cache"))
    sets = _cifar_fixtures(tmp_path / "data")
    (tmp_path / "zoo.py").write_text(ZOO_PY.format(n=5, k=10))
    args = ["study", "generalization", "--preset", "cifar10", "--out", str(tmp_path / "out"),
            "--checkpoints", str(tmp_path / "ck"), "--no-progress"]
    with pytest.raises(SystemExit, match="--preset cifar10 .*--models zoo.py"):
        main(args)
    args += ["--models", str(tmp_path / "zoo.py")] + [
        a for name, p in sets.items() for a in ("--test-set", f"{name}={p}")]
    assert main(args) == 0
    df = pd.read_csv(tmp_path / "out" / "models.csv")
    assert list(df.test_set.unique()) == ["cifar10", "fog", "cifar10_1"]
    assert {"accuracy", "ei", "ei_grayscale"} <= set(df.measure)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["zoo_size"] == 5 and s["id_test_set"] == "cifar10"


def test_origins_preset_imagenet_plumbing(tmp_path: Path) -> None:
    import json

    from invlab.cli import main

    val = tmp_path / "val"
    val.mkdir()
    lines = []
    for i in range(12):  # ImageNet-val layout: flat JPEGs of mixed sizes + labels file
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.fromarray(_rgb(30 + 2 * i, 40)).save(val / name, format="JPEG")
        lines.append(f"{name},{i % 3}")
    (val / "labels.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "zoo.py").write_text(ZOO_PY.format(n=1, k=3))
    base = ["study", "origins", "--preset", "imagenet", "--out", str(tmp_path / "out"),
            "--no-progress"]
    with pytest.raises(SystemExit, match="--preset imagenet .*--data PATH"):
        main(base + ["--models", str(tmp_path / "zoo.py")])
    # the preset's default is resize=256,crop=224; a smaller crop keeps this test fast
    rc = main(base + ["--models", str(tmp_path / "zoo.py"), "--data", str(val),
                      "--preprocess", "resize=36,crop=32"])
    assert rc == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(s["profiles_median"]["penultimate"]) == {"net0"}
    conf = json.loads((tmp_path / "out" / "config.json").read_text())["config"]
    assert conf["data"]["preprocess"] == "resize=36,crop=32" and conf["data"]["n_test"] == 2000
    assert conf["data"]["dataset"] == "external"


def test_npy_object_array_never_unpickled(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"o\.npy: the array holds Python objects"):
        open_images(tmp_path / "o.npy")
    (tmp_path / "t.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"t\.npy: not a \.npy file"):
        open_images(tmp_path / "t.npy")


def test_generalization_test_sets_preprocess_and_subset(tmp_path: Path) -> None:
    """--test-set with --preprocess: mixed sizes made uniform; only the seeded subset is
    decoded, equal to the old route (decode all, then subset)."""
    from invlab.studies.generalization import external_test_sets

    for c in ("a", "b"):
        (tmp_path / "s" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(_rgb(20 + i, 24)).save(tmp_path / "s" / c / f"{i}.png")
    refs = external_test_sets({"mine": str(tmp_path / "s")}, str(tmp_path / "c"), 4, 0, None, None,
                              "resize=16,crop=16")
    with np.load(next((tmp_path / "c").glob("mine-*.npz"))) as f:
        x, y = f["images"], f["labels"]
    assert x.shape[1:] == (3, 16, 16) and len(x) == 4
    full = load_images(tmp_path / "s", preprocess="resize=16,crop=16")
    idx = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:4]
    assert np.array_equal(x, full.images[idx].numpy()) and y.tolist() == full.labels[idx].tolist()
    assert refs[0].name == "mine"
