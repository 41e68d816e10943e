"""Helpers for the sweep tests: picklable cell functions and a study script to kill.

Run as a script::

    python tests/_sweep_worker_script.py STORE [--mode slow|fast] [--n N]
        [--executor serial|process] [--workers W]

``slow`` cells sleep ``$SWEEP_TEST_SLEEP`` seconds (default 0.05-0.1 s, varying by cell) and
write 3 metrics; ``fast`` cells do not sleep and write ``FAST_METRICS`` metrics, so a kill
is likely to land inside a write transaction. Values depend only on the config.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from invlab.sweep import CellContext, CellResult, ResultsStore, run_study

FAST_METRICS = 40
SLOW_METRICS = ("a", "b", "c")


@dataclass(frozen=True)
class KCell:
    i: int
    mode: str = "slow"
    seed: int = 0


def cells(n: int, mode: str = "slow") -> list[KCell]:
    return [KCell(i=i, mode=mode, seed=1000 + i) for i in range(n)]


def _value(i: int, k: int, seed: int, terms: int = 200) -> float:
    return sum(math.sin(0.001 * j * (i + 1) + k + seed) for j in range(terms))


def metric_names(mode: str) -> list[str]:
    if mode == "slow":
        return list(SLOW_METRICS)
    return [f"m{k:02d}" for k in range(FAST_METRICS)]


def cell_fn(cfg: KCell, ctx: CellContext) -> CellResult:
    """Deterministic tiny computation; records each invocation as a file in ctx.dir."""
    if cfg.mode == "slow":
        env = os.environ.get("SWEEP_TEST_SLEEP")
        time.sleep(float(env) if env is not None else 0.05 + 0.05 * ((cfg.i * 7) % 11) / 10)
    calls = ctx.dir / "calls"
    with open(calls, "a") as f:
        f.write(f"{os.getpid()}\n")
    res = CellResult(extra={"i": cfg.i, "nu": cfg.i / 10, "seed": ctx.seed})
    terms = 200 if cfg.mode == "slow" else 3  # fast: the time goes into writing
    for k, name in enumerate(metric_names(cfg.mode)):
        res.add(name, _value(cfg.i, k, cfg.seed, terms),
                std=abs(_value(cfg.i, k + 1, 0, terms)) / 10, n=cfg.i + k + 1)
    return res


def calls_of(root: Path, cid: str) -> int:
    """How many times cell ``cid`` ran under ``root`` (from its calls file)."""
    p = root / "cells" / cid / "calls"
    return len(p.read_text().split()) if p.exists() else 0


def failing_cell_fn(cfg: KCell, ctx: CellContext) -> CellResult:
    """Like cell_fn, but cell i == 3 raises."""
    if cfg.i == 3:
        raise RuntimeError(f"boom in cell {cfg.i}")
    return cell_fn(cfg, ctx)


def write_many(path: str, start: int, count: int) -> None:
    """Write ``count`` cells straight into the store (for the multi-writer test)."""
    store = ResultsStore(path)
    for i in range(start, start + count):
        store.put_cell(f"cell{i:04d}", "multi", {"i": i},
                       [{"metric": "x", "value": float(i), "std": None, "n": 1},
                        {"metric": "y", "value": -float(i), "std": 0.5, "n": 2}],
                       wall_seconds=0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--mode", default="slow", choices=["slow", "fast"])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--executor", default="serial")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args(argv)
    # import by module name so the process pool can pickle the function by reference
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _sweep_worker_script as mod

    store = ResultsStore(a.store)
    run_study(mod.cells(a.n, a.mode), mod.cell_fn, store, "kill",
              executor=a.executor, workers=a.workers, progress=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
