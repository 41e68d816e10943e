"""Normalized-L2 IR as defined vs with a detached denominator: one seed, reduced scale.

    python benchmarks/normalized_l2_variants.py [--epochs 80] [--nus 10,100]

MNIST R4, n_train 3000 / n_val 500 / test 1000 (fits the bundled subset), seed 0, fixed ν
(no tuning). Prints, per (regularizer, ν): test accuracy, test SI (200 images), σ_max
(mean over the test split) and ‖f(x)‖ (mean logit norm), beside DA.
"""

from __future__ import annotations

import argparse
import time

import torch

from invlab.data import DataConfig, prepare_transforming
from invlab.metrics import measure
from invlab.metrics.functional import jacobian_spectral_norm
from invlab.train import TrainConfig, evaluate_accuracy, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--nus", default="10,100")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = prepare_transforming(DataConfig(dataset="mnist", n_train=3000, n_val=500,
                                           n_test_max=1000), "r4")
    test = data.test
    runs = [("da", "-", 0.0)] + [("ir", r, float(nu)) for nu in args.nus.split(",")
                                 for r in ("logit_l2_normalized", "logit_l2_normalized_detached")]
    print("| model | ν | acc % | test SI | σ_max | mean ‖f(x)‖ | train s |")
    print("|---|---|---|---|---|---|---|")
    for method, reg, nu in runs:
        cfg = TrainConfig(method=method, group="r4", epochs=args.epochs, nu=nu,
                          regularizer=reg if method == "ir" else "logit_l2", seed=0)
        t0 = time.perf_counter()
        model = train(cfg, data, progress=False).model
        secs = time.perf_counter() - t0
        si = measure(model, test.images[:200], labels=test.labels[:200], transform="r4",
                     metrics=["saliency_similarity"]).summary["saliency_similarity"]
        sig = float(jacobian_spectral_norm(model, test.images).mean())
        with torch.no_grad():
            norm = float(model(test.images).norm(dim=1).mean())
        print(f"| {method.upper()}{'' if method == 'da' else ': ' + reg} | {nu:g} | "
              f"{100 * evaluate_accuracy(model, test):.1f} | {float(si):.3f} | {sig:.2f} | "
              f"{norm:.1f} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
