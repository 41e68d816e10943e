"""Measured inputs of the cost model (docs/speed.md, "Cost model for the paper-scale runs").

Run:  .venv/bin/python benchmarks/bench_cost_model.py [--threads 2] [--n 2048]

Measures on this machine, for two CNNs (``cnn_small`` at 36×36, 1 channel; a CIFAR-size
ResNet-style CNN at 3×32×32):

- FLOPs of one forward pass per image, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (2 FLOPs per multiply-add, the convention used below for the published counts too);
- the CPU FLOP rate of plain batched forwards (``torch.no_grad``, batch 512);
- the FLOP rate of invlab's ``measure`` over the ``rotate`` family (10 magnitudes: each image
  forwarded 10 times inside the engine, with the transforms and metrics), as forward passes
  per second and as a fraction of the plain-forward rate.

Timings are the median of 3 repeats; the machine may be shared, so the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from invlab.metrics import measure
from invlab.models import create_model


def cifar_cnn() -> nn.Module:
    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(), nn.Conv2d(o, o, 3, padding=1, bias=False),
                             nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(128, 10)).eval()


def flops_per_image(model: nn.Module, shape: tuple[int, ...]) -> float:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.rand(8, *shape))
    return fc.get_total_flops() / 8


def timed(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=2048, help="images per timing")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"threads {a.threads}, load average {os.getloadavg()[0]:.1f}, torch "
          f"{torch.__version__}")
    for name, model, shape in (
            ("cnn_small 1x36x36", create_model("cnn_small").eval(), (1, 36, 36)),
            ("cifar cnn 3x32x32", cifar_cnn(), (3, 32, 32))):
        f = flops_per_image(model, shape)
        x = torch.rand(a.n, *shape)

        def plain() -> None:
            with torch.no_grad():
                for i in range(0, a.n, 512):
                    model(x[i:i + 512])

        n_eng = max(64, a.n // 10)
        xe = x[:n_eng]

        def engine() -> None:
            measure(model, xe, transform="rotate", options={"include_identity": True},
                    metrics=["kl", "logit_l2", "effective_invariance", "agreement"],
                    progress=False)

        tp, te = timed(plain), timed(engine)
        fwd_plain = a.n / tp
        fwd_eng = n_eng * 10 / te
        print(f"{name}: {f / 1e6:.1f} MFLOP/forward; plain forwards {fwd_plain:,.0f} img/s = "
              f"{f * fwd_plain / 1e9:.1f} GFLOP/s; measure(rotate, 10 magnitudes) "
              f"{fwd_eng:,.0f} forwards/s = {f * fwd_eng / 1e9:.1f} GFLOP/s "
              f"({fwd_eng / fwd_plain:.0%} of plain)")


if __name__ == "__main__":
    main()
