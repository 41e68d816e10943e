"""Correlation statistics against scipy; bootstrap CIs; leave-one-shift-out on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as ss

from invlab.stats import correlate, leave_one_shift_out, probit, rankdata, selection_regret


def _data(seed: int, n: int = 40, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(size=n)
    if ties:
        x[:6] = 0.5
        y[3:9] = np.round(y[3:9])
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_statistics_match_scipy(seed: int, ties: bool) -> None:
    x, y = _data(seed, ties=ties)
    c = correlate(x, y, n_boot=0)
    lr = ss.linregress(x, y)
    assert c["pearson"] == pytest.approx(ss.pearsonr(x, y)[0], abs=1e-12)
    assert c["spearman"] == pytest.approx(ss.spearmanr(x, y)[0], abs=1e-12)
    assert c["kendall"] == pytest.approx(ss.kendalltau(x, y)[0], abs=1e-12)  # tau-b
    assert c["slope"] == pytest.approx(lr.slope, abs=1e-12)
    assert c["intercept"] == pytest.approx(lr.intercept, abs=1e-12)
    assert c["r2"] == pytest.approx(lr.rvalue ** 2, abs=1e-12)
    assert c["n"] == len(x)


def test_rankdata_matches_scipy_batched() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, size=(7, 30)).astype(float)
    np.testing.assert_allclose(rankdata(a), ss.rankdata(a, axis=1))


def test_bootstrap_ci_seeded_and_brackets_estimate() -> None:
    x, y = _data(4, n=80, ties=False)
    a = correlate(x, y, n_boot=400, seed=7)
    b = correlate(x, y, n_boot=400, seed=7)
    c = correlate(x, y, n_boot=400, seed=8)
    assert a["spearman_ci"] == b["spearman_ci"]
    assert a["spearman_ci"] != c["spearman_ci"]
    for k in ("pearson", "spearman", "kendall", "slope", "r2"):
        lo, hi = a[f"{k}_ci"]
        assert lo <= a[k] <= hi, k
    # a perfectly linear relation has a degenerate CI at 1
    d = correlate(x, 2 * x + 1, n_boot=100)
    assert d["pearson_ci"] == pytest.approx([1.0, 1.0])


def test_probit_and_nan_pairs() -> None:
    assert probit(np.array([0.5]))[0] == pytest.approx(0.0)
    assert probit(np.array([0.0, 1.0])) == pytest.approx(ss.norm.ppf([0.01, 0.99]))
    x, y = _data(5, ties=False)
    y01 = 1 / (1 + np.exp(-y))
    c = correlate(x, y01, n_boot=0, probit_y=True)
    assert c["pearson"] == pytest.approx(ss.pearsonr(x, ss.norm.ppf(np.clip(y01, .01, .99)))[0])
    xn = x.copy()
    xn[0] = np.nan
    assert correlate(xn, y, n_boot=0)["n"] == len(x) - 1


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="pair up"):
        correlate([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3"):
        correlate([1, 2], [1, 2])


def test_leave_one_shift_out_exact_on_linear_data() -> None:
    rng = np.random.default_rng(0)
    scores = {s: rng.uniform(0.2, 0.9, 30) for s in ("id", "a", "b", "c")}
    acc = {s: 0.8 * v + 0.1 for s, v in scores.items()}
    r = leave_one_shift_out(scores, acc)
    assert set(r["per_set"]) == {"a", "b", "c"}
    assert r["mae"] == pytest.approx(0.0, abs=1e-12)
    for v in r["per_set"].values():
        assert v["slope"] == pytest.approx(0.8) and v["intercept"] == pytest.approx(0.1)


def test_leave_one_shift_out_noise_and_offset() -> None:
    rng = np.random.default_rng(1)
    scores = {s: rng.uniform(0.2, 0.9, 200) for s in ("id", "a", "b")}
    acc = {s: 0.5 * v + 0.2 + rng.normal(0, 0.01, 200) for s, v in scores.items()}
    assert leave_one_shift_out(scores, acc)["mae"] == pytest.approx(0.008, abs=0.003)
    # a shift whose accuracy sits 0.1 below the line of the others is predicted 0.1 too high
    acc["b"] = acc["b"] - 0.1
    r = leave_one_shift_out(scores, acc, held_out=["b"])
    assert r["per_set"]["b"]["mae"] == pytest.approx(0.1, abs=0.01)
    # probit fit recovers a probit-linear relation exactly
    from scipy.special import ndtr
    acc2 = {s: ndtr(2.0 * v - 0.5) for s, v in scores.items()}
    assert leave_one_shift_out(scores, acc2, probit=True)["mae"] < 1e-9


def test_selection_regret() -> None:
    r = selection_regret([0.1, 0.9, 0.5], [0.7, 0.6, 0.95])
    assert r["chosen"] == 1 and r["regret"] == pytest.approx(0.35)
    assert selection_regret([1, 2, 3], [0.1, 0.2, 0.3])["regret"] == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        selection_regret([1, 2], [1])
