"""Does ``torch.compile`` speed up the genuine study's 300-epoch IR training? (issue 10)

Run:  .venv/bin/python benchmarks/train_compile.py

The full preset's IR config (``mlp5``, R4, L2, ν = 27.8, batch 512, seed 0) on 10,000
synthetic 1×36×36 images (2,000 validation), one thread, through ``invlab.train.train``, with
the model as built (eager) or wrapped in ``torch.compile`` (by patching ``build_model``). Each
variant is warmed up once (the compile happens there); then the best of 2 runs of 1 and of 5
epochs, and the time per epoch = (t5 − t1) / 4 is printed. Prints only; writes nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import synthetic_data  # noqa: E402

import invlab.train.loop as loop  # noqa: E402
from invlab.studies.genuine import preset  # noqa: E402
from invlab.train import train  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    base = preset("full").train_config("ir", "r4", 0, 27.8)
    data = synthetic_data(10000, 2000)
    build = loop.build_model

    def run(compiled: bool, epochs: int) -> float:
        loop.build_model = ((lambda *a, **k: torch.compile(build(*a, **k))) if compiled
                            else build)
        t = time.perf_counter()
        train(replace(base, epochs=epochs, patience=None), data, progress=False)
        return time.perf_counter() - t

    try:
        for compiled in (False, True):
            run(compiled, 1)  # warm-up (and the compile)
            t1 = min(run(compiled, 1) for _ in range(2))
            t5 = min(run(compiled, 5) for _ in range(2))
            print(f"{'compiled' if compiled else 'eager':>8}: run of 1 epoch {t1:.2f} s, "
                  f"per extra epoch {(t5 - t1) / 4:.3f} s", flush=True)
    finally:
        loop.build_model = build
    return 0


if __name__ == "__main__":
    sys.exit(main())
