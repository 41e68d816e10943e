"""What the origins study's training budget costs: train the full preset's models for
``--epochs`` and read their validation accuracy per epoch.

Run:  INVLAB_DATA=../shared/data .venv/bin/python benchmarks/origins_epochs.py \
          [--epochs 30] [--archs cnn_medium] [--regimes none,translate_zoom] \
          [--schedule constant|cosine] [--patience N] [--at 8] [--out runs/origins-epochs]

Each (arch, regime) is the full preset's model spec (seed 0: data, batch size, lr, threads)
with ``--epochs``, ``--schedule`` (default: the preset's) and ``--patience`` (default: no early
stopping), trained with ``invlab.train`` (best-validation checkpoint, cached under ``--out``).
Prints validation accuracy at epoch ``--at`` and at the end, and the test accuracy of the
best-validation model; writes ``--out/epochs-<schedule>-<epochs>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from invlab.studies import origins as O  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--archs", default="cnn_medium")
    p.add_argument("--regimes", default="none,translate_zoom")
    p.add_argument("--out", default="runs/origins-epochs")
    p.add_argument("--at", type=int, default=8, help="also report validation accuracy at this epoch "
                   "(the preset's budget before it trained to convergence)")
    p.add_argument("--schedule", default=None, choices=("constant", "cosine", "plateau"),
                   help="learning-rate schedule (default: the preset's)")
    p.add_argument("--memory-format", default=None, choices=("contiguous", "channels_last"))
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="early stopping (default: none)")
    p.add_argument("--compare", default=None, metavar="CHECKPOINTS",
                   help="also profile the model of the same (arch, regime, seed 0) found in this "
                   "checkpoint directory (e.g. the full study's) and print both models' "
                   "mid-magnitude invariance: what the study's budget costs the profile")
    a = p.parse_args()
    torch.set_num_threads(1)
    pre = O.preset("full")
    data = O.pin_data(O.data_config(pre))
    specs = {(s.arch, s.regime): s for s in O.model_specs(pre) if s.seed == pre.seeds[0]}
    s = O.get_splits(data)
    rows = []
    for arch in a.archs.split(","):
        for regime in a.regimes.split(","):
            spec = replace(specs[(arch, regime)], epochs=a.epochs, patience=a.patience,
                           **({"lr_schedule": a.schedule} if a.schedule else {}),
                           **({"memory_format": a.memory_format} if a.memory_format else {}),
                           **({"lr": a.lr} if a.lr else {}))
            model, meta, _ = O.builtin_model(spec, data, a.out)
            hist = list(meta["val_curve"])  # validation accuracy per epoch (checkpoint metadata)
            row = {"arch": arch, "regime": regime, "epochs": a.epochs,
                   "lr_schedule": spec.lr_schedule, "patience": spec.patience, "lr": spec.lr,
                   "memory_format": spec.memory_format,
                   "train_seconds": meta.get("wall_seconds"),
                   "val_at": hist[min(a.at, len(hist)) - 1], "val_best": max(hist),
                   "best_epoch": hist.index(max(hist)) + 1, "val_last": hist[-1],
                   "test_best_val_model": O.accuracy(model, s.test_x, s.test_y, data_norm(s)),
                   "val_history": hist}
            if a.compare:
                row["mid_invariance"] = mid_invariance(model, s, pre.n_profile)
                other = find_checkpoint(Path(a.compare), arch, regime, pre.seeds[0])
                if other is not None:
                    ref, ref_meta = other
                    row["compare"] = {"epochs_run": ref_meta.get("epochs_run"),
                                      "val_best": ref_meta.get("best_val_accuracy"),
                                      "test": O.accuracy(ref, s.test_x, s.test_y, data_norm(s)),
                                      "mid_invariance": mid_invariance(ref, s, pre.n_profile)}
                    print(f"  this model: mid invariance {row['mid_invariance']:.4f}; "
                          f"{a.compare} ({ref_meta.get('epochs_run')} epochs): test "
                          f"{row['compare']['test']:.4f}, mid invariance "
                          f"{row['compare']['mid_invariance']:.4f}", flush=True)
            rows.append(row)
            print(f"{arch} {regime}: val acc at epoch {a.at} {row['val_at']:.4f}, "
                  f"best {row['val_best']:.4f} at epoch {row['best_epoch']}, last {row['val_last']:.4f}; "
                  f"test (best-val model) {row['test_best_val_model']:.4f}", flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"epochs-{a.archs.replace(',', '+')}-{a.regimes.replace(',', '+')}-{spec.lr_schedule}-{spec.lr:g}-{spec.memory_format}-{a.epochs}.json").write_text(json.dumps(rows, indent=1))
    return 0


def mid_invariance(model: torch.nn.Module, s: O.Splits, n: int) -> float:
    """The study's summary number: median representation invariance (penultimate layer) over
    the first ``n`` test images, averaged over magnitudes 3-7 and then the 13 transforms."""
    prof = O.profile(model, s.test_x[:n], data_norm(s), [O.PENULTIMATE])[O.PENULTIMATE]
    return float(prof[:, :, 3:8].median(dim=1).values.mean())  # [T, N, M] -> [T, M] -> mean


def find_checkpoint(ckpt_dir: Path, arch: str, regime: str, seed: int
                    ) -> tuple[torch.nn.Module, dict] | None:
    from invlab.checkpoint import load_checkpoint

    for f in sorted(ckpt_dir.glob("origins-*.safetensors")):
        model, meta = load_checkpoint(f)
        if (meta.get("train", {}).get("model") == arch and meta.get("seed") == seed
                and meta.get("origins", {}).get("regime") == regime):
            return model.eval(), meta
    return None


def data_norm(s: O.Splits) -> dict[str, list[float]]:
    return {"mean": [float(s.mean)], "std": [float(s.std)]}


if __name__ == "__main__":
    sys.exit(main())
