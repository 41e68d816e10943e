"""Test-set construction of the generalization study: seeded, label-preserving, in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invlab.data import DataError, shifts


@pytest.fixture(scope="module")
def digits_like() -> torch.Tensor:
    """Synthetic stroke images [16, 1, 28, 28] in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 6:22, 11:17] = torch.rand(16, 1, 1, 1, generator=g) * 0.5 + 0.5  # constant stroke
    return x


@pytest.mark.parametrize("name", shifts.SHIFTS)
def test_shift_shape_range_seeded(name: str, digits_like: torch.Tensor) -> None:
    a = shifts.make_shift(name, digits_like, seed=3)
    b = shifts.make_shift(name, digits_like, seed=3)
    assert a.shape == digits_like.shape and a.dtype == digits_like.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, digits_like)  # it is a shift


def test_shift_semantics(digits_like: torch.Tensor) -> None:
    x = digits_like
    thick, thin = shifts.make_shift("thick", x), shifts.make_shift("thin", x)
    assert torch.all(thick >= x) and torch.all(thin <= x)
    assert thick.sum() > x.sum() > thin.sum()
    sk = shifts.make_shift("sketch", x)
    assert torch.allclose(sk.flatten(1).amax(1), torch.ones(len(x)))
    assert float(sk[:, :, 10, 14].max()) < 0.2  # stroke interior has no edge
    n1, n2 = shifts.make_shift("noise", x, seed=0), shifts.make_shift("noise", x, seed=1)
    assert not torch.equal(n1, n2)
    c = shifts.make_shift("contrast", x, factor=0.5)
    assert torch.allclose(c, 0.5 + 0.5 * (x - 0.5))
    bl = shifts.make_shift("blur", x, sigma=1.0)
    assert float(bl.sum()) == pytest.approx(float(x.sum()), rel=0.02)  # blur keeps the mass
    with pytest.raises(DataError, match="unknown shift 'fog'"):
        shifts.make_shift("fog", x)


def test_digits_in_mnist_format() -> None:
    x, y = shifts.digits_mnist_format()
    assert x.shape == (1797, 1, 28, 28) and y.shape == (1797,)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    from sklearn.datasets import load_digits
    assert torch.equal(y, torch.from_numpy(load_digits().target).long())  # label-preserving
    nz = x[:, 0] > 0
    rows, cols = nz.any(2), nz.any(1)
    h = rows.float().sum(1)
    w = cols.float().sum(1)
    assert float(torch.maximum(h, w).max()) <= 21 and float(torch.maximum(h, w).median()) >= 19
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    m = x[:, 0].sum((1, 2))
    cy, cx = (x[:, 0] * yy).sum((1, 2)) / m, (x[:, 0] * xx).sum((1, 2)) / m
    assert float((cy - 13.5).abs().max()) < 1.0 and float((cx - 13.5).abs().max()) < 1.0


def test_natural_adversarial_rules() -> None:
    x = torch.arange(5.0).view(5, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 3, 4])
    preds = torch.tensor([[0, 1, 9, 9, 4], [0, 9, 9, 3, 4], [0, 1, 9, 9, 4]])
    xa, ya, ia = shifts.natural_adversarial(x, y, preds, "any")
    assert ia.tolist() == [1, 2, 3] and torch.equal(ya, y[ia]) and torch.equal(xa, x[ia])
    _, _, im = shifts.natural_adversarial(x, y, preds, "majority")
    assert im.tolist() == [2, 3]
    with pytest.raises(DataError, match="unknown natural-adversarial rule"):
        shifts.natural_adversarial(x, y, preds, "all")


def test_cached_atomic_roundtrip(tmp_path, digits_like: torch.Tensor) -> None:
    y = torch.arange(16) % 10
    calls = []

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return shifts.make_shift("blur", digits_like), y

    a = shifts.cached("blur", {"seed": 0}, build, root=tmp_path)
    b = shifts.cached("blur", {"seed": 0}, build, root=tmp_path)
    assert len(calls) == 1 and torch.equal(a[0], b[0]) and torch.equal(b[1], y)
    shifts.cached("blur", {"seed": 1}, build, root=tmp_path)
    assert len(calls) == 2
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("blur-") and f.endswith(".npz") for f in files)


def test_fingerprint_changes_with_content() -> None:
    a = np.zeros((3, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 1
    assert shifts.fingerprint(a) == shifts.fingerprint(a.copy()) != shifts.fingerprint(b)


def test_mnist_id_split_sizes(mnist_test_dir) -> None:
    from invlab.data import load_source

    n = len(load_source("mnist"))  # 15,000 with the shared data, 5,000 bundled in a fresh clone
    n_pool = n * 2 // 3
    px, py, tx, ty = shifts.mnist_id_split(n_pool, seed=0)
    assert px.shape == (n_pool, 1, 28, 28) and len(py) == n_pool
    assert len(tx) == len(ty) == n - n_pool and float(tx.max()) <= 1.0
    with pytest.raises(shifts.DataError, match="smaller pool"):
        shifts.mnist_id_split(n, seed=0)
    assert len(set(py.tolist())) == 10  # all classes in the pool
