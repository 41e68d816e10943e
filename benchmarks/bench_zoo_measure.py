"""Benchmark: measuring the whole zoo of the generalization study's full preset (issue 11).

Run:  .venv/bin/python benchmarks/bench_zoo_measure.py [--preset full] [--workers 2] [--n-eval N]

The study's measuring stage is one cell per zoo member: every measure of
``invlab.studies.generalization_measures.measure_model`` (accuracy, confidence, EI,
agreement, JS, KL, LI under R4) on every test set. Its cost does not depend on the weights,
so this script times exactly that work on the preset's zoo with freshly initialized models
(no training needed) and ``n_eval`` random 28×28 pixel images per test set (9 sets in the full
preset), in ``--workers`` processes with one intra-op thread each, as the study runs it.
Model loading from safetensors (milliseconds per model) is not included. Target: ≤ 5 min.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _measure_member(args: tuple) -> tuple[str, str, float]:
    cfg, n_sets, n_eval = args
    torch.set_num_threads(1)
    from invlab.studies.generalization_measures import measure_model
    from invlab.zoo.trainer import build_zoo_model

    model = build_zoo_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(n_sets):
        x = torch.rand(n_eval, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (n_eval,), generator=g)
        measure_model(model, x, y, [0.1307], [0.3081])
    return cfg.model_id, cfg.arch, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from invlab.studies.generalization import preset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-eval", type=int, default=None, help="default: the preset's n_eval")
    a = ap.parse_args(argv)
    p = preset(a.preset)
    n_eval = a.n_eval or p.settings.n_eval
    n_sets = len(p.settings.test_sets)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        rows = list(pool.map(_measure_member, [(m, n_sets, n_eval) for m in p.zoo]))
    wall = time.perf_counter() - t0
    by_arch: dict[str, list[float]] = {}
    for _, arch, s in rows:
        by_arch.setdefault(arch, []).append(s)
    print(f"measured {len(rows)} models × {n_sets} test sets × {n_eval} images in {wall:.1f} s "
          f"wall ({a.workers} workers × 1 thread; load average {load0:.1f} → "
          f"{os.getloadavg()[0]:.1f}); target ≤ 300 s")
    for arch, ss in sorted(by_arch.items()):
        print(f"  {arch:>10}: {len(ss):3d} models, {sum(ss):6.1f} s in total, "
              f"{sum(ss) / len(ss):.2f} s per model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
