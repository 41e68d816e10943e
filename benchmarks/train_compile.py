"""Do ``torch.compile`` or fused Adam speed up the genuine study's 300-epoch IR training? (issue 10)

Run:  .venv/bin/python benchmarks/train_compile.py

The full preset's IR config (``mlp5``, R4, L2, ν = 27.8, batch 512, seed 0) on 10,000
synthetic 1×36×36 images (2,000 validation), one thread, through ``invlab.train.train``, with
the model as built (eager), wrapped in ``torch.compile`` (by patching ``build_model``), or
eager with ``torch.optim.Adam(..., fused=True)`` (by patching ``torch.optim.Adam``). Each
variant is warmed up once (the compile happens there); then 5 interleaved rounds time a
1-epoch and a 5-epoch run of every variant, and the median time per epoch = (t5 − t1) / 4
is printed with its ratio to eager. Prints only; writes nothing.
"""

from __future__ import annotations

import functools
import statistics
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


def main(repeats: int = 5) -> int:
    torch.set_num_threads(1)
    base = preset("full").train_config("ir", "r4", 0, 27.8)
    data = synthetic_data(10000, 2000)
    build = loop.build_model

    adam = torch.optim.Adam

    def run(variant: str, epochs: int) -> float:
        loop.build_model = ((lambda *a, **k: torch.compile(build(*a, **k)))
                            if variant == "compiled" else build)
        torch.optim.Adam = (functools.partial(adam, fused=True)  # type: ignore[misc]
                            if variant == "fused-adam" else adam)
        t = time.perf_counter()
        train(replace(base, epochs=epochs, patience=None), data, progress=False)
        return time.perf_counter() - t

    variants = ("eager", "compiled", "fused-adam")
    per_epoch: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for v in variants:
            run(v, 1)  # warm-up (and the compile)
        for _ in range(repeats):  # interleaved: each round times every variant once
            for v in variants:
                t1, t5 = run(v, 1), run(v, 5)
                per_epoch[v].append((t5 - t1) / 4)
        eager = statistics.median(per_epoch["eager"])
        for v in variants:
            m = statistics.median(per_epoch[v])
            print(f"{v:>10}: {m:.3f} s per epoch (median of {repeats}; "
                  f"{', '.join(f'{t:.3f}' for t in per_epoch[v])}), {eager / m:.2f}x eager",
                  flush=True)
    finally:
        loop.build_model = build
        torch.optim.Adam = adam  # type: ignore[misc]
    return 0


if __name__ == "__main__":
    sys.exit(main())
