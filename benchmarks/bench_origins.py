"""Benchmark of the origins study's invariance profile (issue "B21 as a study").

Run:  .venv/bin/python benchmarks/bench_origins.py [--n 2000] [--loop-n 40] [--no-write]

One model's full profile: B21's representation invariance for the 13 transformations × 10
magnitudes (9 measured, identity = 1) on ``--n`` random 28×28 pixel-space images at one
layer (the penultimate), with :func:`invlab.studies.origins.profile` (one batched
``measure`` call per family: ``apply_all`` builds every magnitude of a chunk at once and the
model embeds the stacked orbit). Baseline: a per-image loop as the official code does it —
for each image, transform it (``fam.at(m)`` on one image) and embed it alone, then score
against a deranged partner. The loop is timed on ``--loop-n`` images and extrapolated per
image. Randomly initialized registry models (``mlp5``, ``cnn_medium``, ``vit_tiny``,
``cnn_small``), 10 classes. The machine may be shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from invlab.factors import B21_FAMILIES  # noqa: E402
from invlab.metrics.functional import derangement  # noqa: E402
from invlab.models import create_model, list_models  # noqa: E402
from invlab.studies.origins import PENULTIMATE, profile  # noqa: E402
from invlab.transforms import create_transform  # noqa: E402

NORM = {"mean": [0.29], "std": [0.35]}


@torch.no_grad()
def per_image_loop(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds for the per-image profile of ``x`` (all 13 families × 9 magnitudes)."""
    mean, std = NORM["mean"][0], NORM["std"][0]
    perm = derangement(x.shape[0], torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    z = [model.forward_features((x[i:i + 1] - mean) / std)[0] for i in range(len(x))]
    for name in B21_FAMILIES:
        fam = create_transform(name)
        for mag in fam.members[1:]:
            t = fam.at(mag)
            zt = [model.forward_features((t(x[i:i + 1]) - mean) / std)[0]
                  for i in range(len(x))]
            for i in range(len(x)):
                d_same = 1 - F.cosine_similarity(z[i], zt[i], 0)
                d_other = 1 - F.cosine_similarity(z[i], zt[int(perm[i])], 0)
                float(1 - d_same / d_other)
    return time.perf_counter() - t0


def bench(arch: str, n: int, loop_n: int, repeats: int = 1) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(arch, in_shape=[1, 28, 28], num_classes=10).eval()
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    profile(model, x[:64], NORM, [PENULTIMATE])  # warm-up
    runs = []
    for _ in range(repeats):  # the median run (wall, CPU) of `repeats`
        t0, c0 = time.perf_counter(), time.process_time()
        out = profile(model, x, NORM, [PENULTIMATE])[PENULTIMATE]
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    batched, cpu = sorted(runs)[len(runs) // 2]
    assert out.shape == (13, n, 10)
    loop = per_image_loop(model, x[:loop_n]) / loop_n * n
    return {"batched_s": batched, "cpu_s": cpu, "loop_s": loop, "speedup": loop / batched}


def write_results(text: str, path: Path) -> None:
    """Replace (or add) the ``## Origins profile`` section, keeping the other sections."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    out, skip = [], False
    for ln in old.splitlines():
        if ln.startswith("## "):
            skip = ln.strip() == "## Origins profile"
        if not skip:
            out.append(ln)
    path.write_text("\n".join(out).rstrip() + "\n\n" + text.rstrip() + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="profile images (default 2000)")
    p.add_argument("--loop-n", type=int, default=40, help="images for the per-image loop")
    p.add_argument("--archs", default="mlp5,cnn_medium,vit_tiny")
    p.add_argument("--repeats", type=int, default=3, help="profile runs; the median is kept")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    archs = [s for s in a.archs.split(",") if s in list_models()]
    load0 = os.getloadavg()[0]
    rows = []
    for arch in archs:
        r = bench(arch, a.n, a.loop_n, a.repeats)
        rows.append((arch, r))
        print(f"{arch:>10}: profile {r['batched_s']:.1f} s ({r['cpu_s']:.1f} CPU s), per-image loop {r['loop_s']:.0f} s "
              f"(extrapolated from {a.loop_n} images), {r['speedup']:.0f}x", flush=True)
    load1 = os.getloadavg()[0]
    md = ["## Origins profile", "",
          f"`.venv/bin/python benchmarks/bench_origins.py --n {a.n} --loop-n {a.loop_n} "
          f"--repeats {a.repeats} --threads {a.threads}`: one model's full profile (13 transformations × 10 "
          f"magnitudes × {a.n} random 28×28 images, penultimate layer) with "
          "`invlab.studies.origins.profile` (one batched `measure` per family; median of "
          f"{a.repeats} runs) vs a per-image "
          "loop that transforms and embeds one image at a time (timed on "
          f"{a.loop_n} images, extrapolated). Load average {load0:.1f} → {load1:.1f} on "
          f"{os.cpu_count()} cores (shared machine).", "",
          "| model | profile wall (s) | profile CPU (s, all threads) | per-image loop wall (s) "
          "| speed-up (wall) |", "|---|---|---|---|---|"]
    md += [f"| {arch} | {r['batched_s']:.1f} | {r['cpu_s']:.1f} | {r['loop_s']:.0f} | "
           f"{r['speedup']:.0f}× |" for arch, r in rows]
    print("\n".join(md))
    if not a.no_write:
        write_results("\n".join(md), Path(__file__).with_name("RESULTS.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
