"""The smallest IR weight ν that meets a saliency-invariance target: bracket, then refine.

``SI(ν)`` (validation saliency invariance of the model trained with weight ν) rises with ν
in expectation. :func:`search_nu` finds the smallest ν with ``SI(ν) ≥ target`` to within a
factor ``tolerance`` (default 1.3) with few trainings:

1. **Bracket** on the half-decade grid ``ν_k = 10^(k/2)`` inside ``[nu_min, nu_max]``,
   starting at ``nu_start``: step down while trials pass, up while they fail, until one grid
   step separates a failing ``lo`` from a passing ``hi`` (or a grid end is reached).
2. **Refine** in log-space: evaluate ``parallel`` points evenly spaced in
   ``(log lo, log hi)`` per round (one point = bisection; two = a 3-section that uses two
   cores), keep the sub-bracket between the largest failing and the smallest passing point,
   until ``hi / lo ≤ tolerance``.

The answer is the smallest passing ν among all trials (so a non-monotone, noisy ``SI(ν)``
still returns a ν that was measured to pass); if no trial passes, the trial with the highest
SI is returned with ``reached=False``. Trials are evaluated through ``evaluate(nus) ->
[(si, accuracy), ...]`` so the caller decides how to run them (serially, in a process pool,
on a cluster) and where to record them; every trial is returned in ``trials`` for the
SI(ν) / accuracy(ν) figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Evaluate = Callable[[Sequence[float]], Sequence[tuple[float, float]]]
"""``evaluate([ν₁, …]) -> [(SI, accuracy), …]``: train and validate one model per ν."""


@dataclass(frozen=True)
class NuTrial:
    nu: float
    si: float
    accuracy: float
    stage: str  # "bracket" or "refine"


@dataclass
class NuSearchResult:
    """Outcome of :func:`search_nu`: the chosen ν and every trial, sorted by ν."""

    nu: float
    si: float
    accuracy: float
    reached: bool
    target: float
    bracket: tuple[float | None, float | None]  # (largest failing ν, smallest passing ν)
    trials: list[NuTrial] = field(default_factory=list)


def _grid(k: int) -> float:
    return 10 ** (k / 2)


def _check(target: float, nu_start: float, nu_min: float, nu_max: float, tolerance: float,
           parallel: int, max_trials: int) -> None:
    if not 0 < nu_min <= nu_start <= nu_max:
        raise ValueError(f"need 0 < nu_min <= nu_start <= nu_max, found nu_min={nu_min}, "
                         f"nu_start={nu_start}, nu_max={nu_max}")
    if not tolerance > 1:
        raise ValueError(f"tolerance is a ratio hi/lo and must be > 1, found {tolerance}")
    if parallel < 1 or max_trials < 1:
        raise ValueError(f"parallel and max_trials must be >= 1, found {parallel}, {max_trials}")
    if not math.isfinite(target):
        raise ValueError(f"target must be finite, found {target}")


def search_nu(evaluate: Evaluate, target: float = 0.95, nu_start: float = 10.0,
              nu_min: float = 1e-2, nu_max: float = 1e3, tolerance: float = 1.3,
              parallel: int = 1, max_trials: int = 16) -> NuSearchResult:
    """Smallest ν with ``SI(ν) ≥ target``, to within a factor ``tolerance`` (module docstring).

    Args:
        evaluate: trains/validates the models for a list of ν (see :data:`Evaluate`).
        target: SI threshold.
        nu_start: first grid point (rounded to the half-decade grid).
        nu_min, nu_max: search range (grid points outside are never tried).
        tolerance: stop refining when ``hi / lo ≤ tolerance``.
        parallel: trials per round (bracketing evaluates the next ``parallel`` grid points
            in the current direction; refinement that many interior points).
        max_trials: hard cap on the number of trainings.

    Raises:
        ValueError: for inconsistent bounds or a non-finite SI returned by ``evaluate``.
    """
    _check(target, nu_start, nu_min, nu_max, tolerance, parallel, max_trials)
    seen: dict[float, NuTrial] = {}

    def run(nus: list[float], stage: str) -> None:
        nus = [v for v in nus if v not in seen][: max_trials - len(seen)]
        if not nus:
            return
        results = list(evaluate(nus))
        if len(results) != len(nus):
            raise ValueError(f"evaluate returned {len(results)} results for {len(nus)} values of nu")
        for v, (si, acc) in zip(nus, results):
            if not math.isfinite(si):
                raise ValueError(f"validation SI for nu={v:g} is {si}; the trial diverged")
            seen[v] = NuTrial(v, float(si), float(acc), stage)

    def passes(v: float) -> bool:
        return seen[v].si >= target

    k_min, k_max = math.ceil(2 * math.log10(nu_min) - 1e-9), math.floor(2 * math.log10(nu_max) + 1e-9)
    k = min(max(round(2 * math.log10(nu_start)), k_min), k_max)
    run([_grid(k)], "bracket")
    lo, hi = _bracket(run, passes, seen, k, k_min, k_max, parallel, max_trials)
    while lo is not None and hi is not None and hi / lo > tolerance and len(seen) < max_trials:
        step = (math.log(hi) - math.log(lo)) / (parallel + 1)
        run([math.exp(math.log(lo) + i * step) for i in range(1, parallel + 1)], "refine")
        inside = sorted(v for v in seen if lo < v < hi)
        for v in inside:
            if passes(v):
                hi = v
                break
            lo = v
    return _result(seen, target, lo, hi)


def _bracket(run: Callable[[list[float], str], None], passes: Callable[[float], bool],
             seen: dict[float, NuTrial], k: int, k_min: int, k_max: int, parallel: int,
             max_trials: int) -> tuple[float | None, float | None]:
    """Walk the half-decade grid from ``k`` until a failing/passing neighbour pair is found."""
    direction = -1 if passes(_grid(k)) else 1
    while len(seen) < max_trials:
        ks = [k + direction * i for i in range(1, parallel + 1) if k_min <= k + direction * i <= k_max]
        if not ks:
            break
        run([_grid(j) for j in ks], "bracket")
        done = [j for j in ks if _grid(j) in seen]
        if not done:
            break
        flip = [j for j in done if passes(_grid(j)) != (direction == -1)]
        if flip:
            j = flip[0]
            return (_grid(j), _grid(j - direction)) if direction == -1 else (_grid(j - direction), _grid(j))
        k = done[-1]
    fails = [v for v in seen if not passes(v)]
    oks = [v for v in seen if passes(v)]
    return (max(fails) if fails else None, min(oks) if oks else None)


def _result(seen: dict[float, NuTrial], target: float, lo: float | None,
            hi: float | None) -> NuSearchResult:
    trials = sorted(seen.values(), key=lambda t: t.nu)
    passing = [t for t in trials if t.si >= target]
    best = passing[0] if passing else max(trials, key=lambda t: t.si)
    return NuSearchResult(best.nu, best.si, best.accuracy, bool(passing), target, (lo, hi), trials)
