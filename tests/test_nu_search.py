"""ν search: smallest passing ν on synthetic monotone SI(ν) curves (no training)."""

from __future__ import annotations

import math

import pytest

from invlab.train.nu_search import search_nu


def _curve(nu_star: float, target: float = 0.95):
    """Monotone SI(ν) crossing ``target`` exactly at ``nu_star``; records every call."""
    calls: list[list[float]] = []

    def si(nu: float) -> float:
        return target * (nu / nu_star) ** 0.25 if nu < nu_star else 1 - (1 - target) * (nu_star / nu)

    def evaluate(nus):
        calls.append(list(nus))
        return [(si(v), 1.0 - 0.01 * math.log10(v + 1)) for v in nus]

    return evaluate, calls


@pytest.mark.parametrize("nu_star", [0.013, 0.7, 4.2, 31.6, 57.0, 400.0])
@pytest.mark.parametrize("parallel", [1, 2])
@pytest.mark.parametrize("nu_start", [0.1, 10.0, 1000.0])
def test_finds_smallest_passing_within_tolerance(nu_star, parallel, nu_start):
    evaluate, calls = _curve(nu_star)
    r = search_nu(evaluate, nu_start=nu_start, parallel=parallel, tolerance=1.3)
    assert r.reached
    assert r.nu >= nu_star * (1 - 1e-12)            # it passes
    assert r.nu / nu_star <= 1.3 + 1e-9             # and is within the tolerance of the true edge
    lo, hi = r.bracket
    assert hi == r.nu
    assert lo is None or (lo < nu_star and hi / lo <= 1.3 + 1e-9)
    # every trial is reported once, and the answer is the smallest passing one
    nus = [t.nu for t in r.trials]
    assert nus == sorted(set(nus))
    assert r.nu == min(t.nu for t in r.trials if t.si >= 0.95)
    assert all(len(c) <= parallel for c in calls)
    assert sum(len(c) for c in calls) == len(r.trials)


def test_parallel_rounds_take_fewer_sequential_steps():
    ev1, calls1 = _curve(57.0)
    ev2, calls2 = _curve(57.0)
    search_nu(ev1, nu_start=10.0, parallel=1)
    search_nu(ev2, nu_start=10.0, parallel=2)
    assert len(calls2) < len(calls1)


def test_no_nu_passes_reports_best_and_not_reached():
    def evaluate(nus):
        return [(0.5 + 0.1 * math.tanh(math.log10(v)), 0.9) for v in nus]

    r = search_nu(evaluate, nu_start=1.0, nu_max=100.0)
    assert not r.reached
    assert r.nu == 100.0                  # highest SI on this increasing curve
    assert r.bracket == (100.0, None)
    assert [t.nu for t in r.trials] == [10 ** (k / 2) for k in range(0, 5)]


def test_everything_passes_returns_grid_floor():
    r = search_nu(lambda nus: [(0.99, 0.9)] * len(nus), nu_start=1.0, nu_min=0.1)
    assert r.reached and r.nu == pytest.approx(0.1)
    assert r.bracket[0] is None


def test_max_trials_is_a_hard_cap():
    evaluate, _ = _curve(57.0)
    r = search_nu(evaluate, nu_start=0.01, max_trials=3)
    assert len(r.trials) == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"nu_min": 10.0, "nu_start": 1.0}, "nu_min <= nu_start"),
    ({"tolerance": 1.0}, "tolerance"),
    ({"parallel": 0}, "parallel"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        search_nu(lambda nus: [(1.0, 1.0)] * len(nus), **kwargs)


def test_diverged_trial_is_an_error():
    with pytest.raises(ValueError, match="diverged"):
        search_nu(lambda nus: [(float("nan"), 0.1)] * len(nus))
