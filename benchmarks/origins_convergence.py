"""How converged are the origins study's models? Validation-accuracy trends from checkpoints.

Run:  .venv/bin/python benchmarks/origins_convergence.py --checkpoints runs/checkpoints-origins \
          [--window 20] [--out results/origins]

For every ``origins-*.safetensors`` in ``--checkpoints`` (the study's cache) it reads the
per-epoch validation curve stored in the checkpoint and prints, per model: epochs run, best
epoch, and the least-squares slope of validation accuracy over the last ``--window`` epochs
(points per 10 epochs, with its standard error). A slope within about two standard errors
of 0 is a plateau; a clearly positive one means the model was still improving when training
stopped (at the epoch cap, or by patience on a noisy curve). With ``--out`` the table is
also written as ``convergence.md`` / ``.csv`` / ``.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from invlab.checkpoint import load_checkpoint  # noqa: E402
from invlab.report.tables import write_table  # noqa: E402
from invlab.studies.origins import late_slope  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows = []
    for f in sorted(Path(a.checkpoints).glob("origins-*.safetensors")):
        _, meta = load_checkpoint(f)
        curve = list(meta.get("val_curve", []))
        if not curve:
            continue
        slope, se = late_slope(curve, a.window)
        epochs = int(meta.get("train", {}).get("epochs", 0))
        rows.append({"arch": meta.get("train", {}).get("model"),
                     "regime": meta.get("origins", {}).get("regime"), "seed": meta.get("seed"),
                     "epochs run": len(curve), "cap": epochs,
                     "best epoch": int(np.argmax(curve)) + 1,
                     "best val acc (%)": round(100 * max(curve), 2),
                     f"slope, last {a.window} epochs (points / 10 epochs)": round(slope, 2),
                     "slope s.e.": round(se, 2),
                     "still rising (slope > 2 s.e.)": bool(slope > 2 * se)})
    df = pd.DataFrame(rows).sort_values(["arch", "regime", "seed"]).reset_index(drop=True)
    print(df.to_string(index=False))
    if a.out:
        write_table(df, Path(a.out), "convergence", f"Validation-accuracy slope over the last "
                    f"{a.window} epochs of each model (from the checkpoints; "
                    "benchmarks/origins_convergence.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
