"""Lie derivative on a small trained CNN on MNIST: ``method="jvp"`` (Gruver et al.: exact
derivative of the resampling at t=0, probabilities, mean |.| over classes) against a central
difference with the same output convention, and the default ``method="central"`` (logit L2).

Trains ``cnn_small`` on the first 8,000 images of MNIST's t10k file (the only image file in
the shared data), 3 epochs, pixel space [0, 1]; measures on the last 500 images.

    INVLAB_DATA=/work/shared/data .venv/bin/python benchmarks/lie_jvp_vs_central.py
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

from invlab.data.idx import read_idx
from invlab.metrics import lie_derivative
from invlab.models import create_model
from invlab.transforms import create_transform


def main() -> int:
    root = os.path.join(os.environ.get("INVLAB_DATA", "/work/shared/data"), "mnist")
    x = torch.from_numpy(read_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz")).copy())
    y = torch.from_numpy(read_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz")).copy()).long()
    x = x.float().div(255).unsqueeze(1)
    torch.manual_seed(0)
    model = create_model("cnn_small", in_shape=(1, 28, 28), num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xtr, ytr, xte, yte = x[:8000], y[:8000], x[-500:], y[-500:]
    t0 = time.perf_counter()
    for _ in range(3):
        model.train()
        perm = torch.randperm(8000)
        for i in range(0, 8000, 128):
            idx = perm[i:i + 128]
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    out = {"test_accuracy": acc, "train_seconds": round(time.perf_counter() - t0, 1),
           "n": 500, "families": {}}

    def probs(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model(z), -1)

    for fam, unit in (("translate_x", "px"), ("translate_y", "px"), ("rotate", "deg")):
        jvp = lie_derivative(model, xte, fam, method="jvp").double()
        op = create_transform(fam).op
        row = {"unit": unit, "jvp_mean": float(jvp.mean())}
        for eps in (1e-2, 0.5, 1.0):
            ys = op.apply_all(xte, torch.tensor([eps, -eps], dtype=torch.float64), False)
            cd = ((probs(ys[0]) - probs(ys[1])) / (2 * eps)).abs().mean(-1).double()
            r = float(np.corrcoef(jvp.numpy(), cd.numpy())[0, 1])
            row[f"central_probs_eps{eps}"] = {"mean": float(cd.mean()),
                                             "ratio_to_jvp": float(cd.mean() / jvp.mean()),
                                             "pearson_with_jvp": r}
        row["central_logit_l2_eps0.01"] = float(lie_derivative(model, xte, fam).mean())
        out["families"][fam] = row
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
