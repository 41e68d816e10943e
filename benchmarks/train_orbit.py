"""Training epochs with batches read from the precomputed orbit vs acting on every batch.

Run:  .venv/bin/python benchmarks/train_orbit.py [--repeats 5] [--epochs 3]

``invlab.train`` builds the orbit ``g·x`` of the training set once and reads every batch
``g_k·x_{i_k}`` (and IR's pair batch) with one ``index_select``
(``invlab.train.orbit_batches``); before, each batch was indexed, then acted on with a
per-sample gather (and IR's pairs concatenated). Both give bit-identical weights
(``tests/test_train_orbit_batches.py``), so the comparison is speed only.

For each cell type of the genuine study's full preset (DA / IR / WT × R4 / T3, ``mlp5``,
10,000 training and 2,000 validation images of 1×36×36, batch 512, one thread), the two
variants are trained ``--epochs`` epochs (the orbit build included), interleaved,
``--repeats`` times; the table gives the median seconds per epoch and the median of the
per-repeat ratios. Synthetic data of the real shapes: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import synthetic_data  # noqa: E402

import invlab.train.orbit_batches as ob  # noqa: E402
from invlab.train import TrainConfig, train  # noqa: E402

CELLS = [("da", "r4"), ("ir", "r4"), ("wt", "r4"), ("da", "t3"), ("ir", "t3"), ("wt", "t3")]


def epoch_seconds(method: str, group: str, data: object, epochs: int, orbit: bool) -> float:
    cfg = TrainConfig(model="mlp5", method=method, group=group, epochs=epochs, batch_size=512,
                      lr=8e-4, nu=10.0 if method == "ir" else 0.0, seed=0, threads=1)
    ob.ORBIT_MAX_BYTES = 1 << 30 if orbit else 0
    t = time.perf_counter()
    train(cfg, data, progress=False)  # type: ignore[arg-type]
    return (time.perf_counter() - t) / epochs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    data = synthetic_data(10_000, n_val=2_000)
    load0 = os.getloadavg()[0]
    print("| cell | per-batch act (s/epoch) | orbit (s/epoch) | speed-up |")
    print("|---|---|---|---|")
    for method, group in CELLS:
        old: list[float] = []
        new: list[float] = []
        epoch_seconds(method, group, data, 1, True)  # warm-up
        for _ in range(a.repeats):
            old.append(epoch_seconds(method, group, data, a.epochs, False))
            new.append(epoch_seconds(method, group, data, a.epochs, True))
        ratio = statistics.median(o / n for o, n in zip(old, new))
        print(f"| {method.upper()} {group.upper()} | {statistics.median(old):.3f} | "
              f"{statistics.median(new):.3f} | {ratio:.2f}x |", flush=True)
    print(f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{a.repeats} interleaved repeats of {a.epochs} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
