"""Benchmark of batched transforms (issue 8): a whole family over 2,000 images.

Run:  .venv/bin/python benchmarks/bench_transforms.py [--n 2000] [--repeats 5] [--no-write]

For each canvas (1×36×36, 1×28×28, 3×32×32) and family (``rotate``, ``translate_x``; 10
magnitudes each, B21's grid) three ways of producing all ``10 × N`` transformed images are
timed in the same process, interleaved, median of ``--repeats``:

- **invlab**: ``create_transform(family).apply_all(x)`` → ``[10, N, C, H, W]`` (one
  ``grid_sample`` for all magnitudes and images, the batch folded into channels);
- **per-image loop**: the way the official B21 code applies transforms — for each image, for
  each magnitude, one ``affine_grid`` + ``grid_sample`` call on that single ``[1, C, H, W]``
  image with the same theta as invlab (so outputs agree to float precision), then stacked;
- **memory floor**: ``y * 2`` on a random tensor of the output's size (one elementwise
  pass that writes ``[10, N, C, H, W]``), for scale;
- **kornia**: ``kornia.geometry.transform.rotate`` / ``translate`` on the ``10·N`` batch
  (``x.repeat`` inside the timing, per-sample angles / shifts, ``align_corners=False`` to
  match invlab's convention) — skipped when kornia is not installed (it is not a dependency:
  ``.venv/bin/pip install kornia``).

Max |difference| to invlab's output is reported for both references.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from invlab.transforms import create_transform  # noqa: E402
from invlab.transforms import geometric as geo  # noqa: E402
from invlab.transforms.sampling import sampling_theta  # noqa: E402

try:
    import kornia
except ImportError:  # pragma: no cover - optional
    kornia = None

CANVASES = [(1, 36, 36), (1, 28, 28), (3, 32, 32)]
FAMILIES = {"rotate": geo.rotate, "translate_x": geo.translate_x}


def _thetas(family: str, h: int, w: int) -> tuple[list[float], torch.Tensor]:
    fam = create_transform(family)
    mags = fam.magnitudes_for(h, w)
    forward = FAMILIES[family](torch.tensor(mags, dtype=torch.float64), h, w)
    return mags, sampling_theta(forward, h, w)


def loop_lean(x: torch.Tensor, family: str) -> torch.Tensor:
    """Lean per-image loop: thetas precomputed once, then one ``affine_grid`` +
    ``grid_sample`` per (image, magnitude) on a ``[1, C, H, W]`` image."""
    _, _, h, w = x.shape
    mags, thetas = _thetas(family, h, w)
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        for j in range(len(mags)):
            grid = F.affine_grid(thetas[j:j + 1], [1, *x.shape[1:]], align_corners=False)
            out.append(F.grid_sample(xi, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))
    return torch.cat(out).view(x.shape[0], len(mags), *x.shape[1:]).transpose(0, 1)


def _tv_matrix(family: str, m: float, h: int, w: int) -> list[float]:
    """Per-call inverse (sampling) matrix in pixels about the centre, in plain Python."""
    if family == "rotate":
        a = math.radians(m)
        return [math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0]
    return [1.0, 0.0, -m, 0.0, 1.0, 0.0]


def loop_torchvision_style(x: torch.Tensor, family: str) -> torch.Tensor:
    """Per-image loop shaped like torchvision's tensor ``rotate`` / ``affine`` (what B21's
    per-image transforms run): per call, the matrix in Python, a base grid from ``linspace``
    mapped by ``bmm``, then ``grid_sample`` on the single image."""
    _, _, h, w = x.shape
    mags = create_transform(family).magnitudes_for(h, w)
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        for m in mags:
            theta = torch.tensor(_tv_matrix(family, m, h, w), dtype=x.dtype).reshape(1, 2, 3)
            base = torch.empty(1, h, w, 3, dtype=x.dtype)
            base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w))
            base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h)[:, None])
            base[..., 2].fill_(1)
            scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=x.dtype)
            grid = base.view(1, h * w, 3).bmm(scaled).view(1, h, w, 2)
            out.append(F.grid_sample(xi, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))
    return torch.cat(out).view(x.shape[0], len(mags), *x.shape[1:]).transpose(0, 1)


def kornia_batch(x: torch.Tensor, family: str) -> torch.Tensor:
    fam = create_transform(family)
    n, c, h, w = x.shape
    mags = torch.tensor(fam.magnitudes_for(h, w), dtype=x.dtype)
    k = len(mags)
    big = x.repeat(k, 1, 1, 1)
    per = mags.repeat_interleave(n)
    if family == "rotate":
        out = kornia.geometry.transform.rotate(big, per, align_corners=False)
    else:
        shift = torch.stack([per, torch.zeros_like(per)], 1)
        out = kornia.geometry.transform.translate(big, shift, align_corners=False)
    return out.view(k, n, c, h, w)


def timed(fn) -> tuple[float, torch.Tensor]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_one(x: torch.Tensor, family: str, repeats: int) -> dict:
    fam = create_transform(family)
    fns = {"invlab": lambda: fam.apply_all(x), "loop": lambda: loop_lean(x, family),
           "tv_loop": lambda: loop_torchvision_style(x, family)}
    if kornia is not None:
        fns["kornia"] = lambda: kornia_batch(x, family)
    like = torch.rand(len(fam.magnitudes), *x.shape)
    fns["floor"] = lambda: like * 2  # one elementwise pass producing an output-sized tensor
    times: dict = {k: [] for k in fns}
    outs: dict = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            dt, outs[k] = timed(fn)
            times[k].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = {k: float((outs[k] - outs["invlab"]).abs().max()) for k in outs
            if k not in ("invlab", "floor")}
    return {"times": med, "diff": diff, "all": times}


def write_results(text: str, path: Path) -> None:
    """Replace (or add) the ``## Transforms`` section, keeping every other section."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    out, skip = [], False
    for ln in old.splitlines():
        if ln.startswith("## "):
            skip = ln.strip() == "## Transforms"
        if not skip:
            out.append(ln)
    path.write_text("\n".join(out).rstrip() + "\n\n" + text.rstrip() + "\n")


def report(rows: list, args: argparse.Namespace, load: tuple[float, float]) -> str:
    cmd = f"`.venv/bin/python benchmarks/bench_transforms.py --n {args.n} --repeats {args.repeats}`"
    md = ["## Transforms", "", f"Command: {cmd}  ",
          f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {load[0]:.1f} → {load[1]:.1f} "
          f"(shared machine; median of {args.repeats} interleaved repeats, wall clock); "
          f"kornia {kornia.__version__ if kornia else 'not installed'}.", "",
          "| family, N × canvas | invlab batched | lean loop | torchvision-style loop | "
          "kornia | memory floor | vs lean loop | vs tv-style loop | vs kornia | "
          "max abs diff lean / tv / kornia |", "|---|---|---|---|---|---|---|---|---|---|"]
    for fam, shape, r in rows:
        t, d = r["times"], r["diff"]
        kt = f"{t['kornia']:.3f} s" if "kornia" in t else "-"
        kr = f"{t['kornia'] / t['invlab']:.2f}x" if "kornia" in t else "-"
        kd = f"{d['kornia']:.0e}" if "kornia" in d else "-"
        md.append(f"| {fam}, {args.n} × {'×'.join(map(str, shape))} | {t['invlab']:.3f} s | "
                  f"{t['loop']:.2f} s | {t['tv_loop']:.2f} s | {kt} | {t['floor']:.3f} s | "
                  f"{t['loop'] / t['invlab']:.1f}x | {t['tv_loop'] / t['invlab']:.1f}x | {kr} | "
                  f"{d['loop']:.0e} / {d['tv_loop']:.0e} / {kd} |")
    md += ["", "Targets (issue 8): batched ≥ 20x a per-image loop, and no slower than kornia "
           "(ratio ≥ 1x). Ratios are time(reference) / time(invlab).", ""]
    loop_ratios = [r["times"]["loop"] / r["times"]["invlab"] for _, _, r in rows]
    tv_ratios = [r["times"]["tv_loop"] / r["times"]["invlab"] for _, _, r in rows]
    k_ratios = [r["times"]["kornia"] / r["times"]["invlab"] for _, _, r in rows
                if "kornia" in r["times"]]
    fl = [r["times"]["invlab"] / r["times"]["floor"] for _, _, r in rows]
    per = []
    for fam, shape, r in rows:
        outs = 10 * args.n * shape[0] * shape[1] * shape[2]
        per.append(f"{fam} {'×'.join(map(str, shape))}: invlab "
                   f"{1e9 * r['times']['invlab'] / outs:.1f} ns per output value, lean loop "
                   f"{1e6 * r['times']['loop'] / (10 * args.n):.0f} µs per (image, magnitude)")
    md += [f"Met: ≥ 20x the lean loop in {sum(v >= 20 for v in loop_ratios)} of {len(rows)} "
           f"rows, ≥ 20x the torchvision-style loop in {sum(v >= 20 for v in tv_ratios)} of "
           f"{len(rows)}, ≥ 1x kornia in {sum(v >= 1 for v in k_ratios)} of {len(k_ratios)}. "
           "Where the 20x target is missed, the batched side is bound by `grid_sample`'s "
           "bilinear gathers (cost per output value below) while a per-image call on a "
           "1–3k-pixel image is mostly fixed overhead, so the ratio is at most the per-call "
           "overhead over the per-image compute: " + "; ".join(per) + ". The memory floor "
           "column is one elementwise multiply producing a tensor of the output's size "
           "`[10, N, C, H, W]` on the same machine at the same time: the batched transform "
           f"takes {min(fl):.1f}–{max(fl):.1f}x that floor (the cost of only writing its "
           "output), so its time goes into producing output values, not into overhead; the "
           "loops' time is mostly per-call overhead.", "",
           "Notes: every variant produces all 10 magnitudes (B21's grid; translate "
           "`linspace(0, W, 10)` px) for all N images, `[10, N, C, H, W]`, bilinear, zero fill, "
           "`align_corners=False`. invlab: `create_transform(family).apply_all(x)`, one "
           "`grid_sample` over `[10, N·C, H, W]` (channels-last, expanded without a copy). "
           "Lean loop: one `affine_grid` + `grid_sample` per (image, magnitude) with "
           "precomputed thetas — the cheapest possible per-image loop. torchvision-style loop: "
           "per (image, magnitude) the matrix in Python, a `linspace` base grid mapped by `bmm` "
           "and `grid_sample`, the steps torchvision's tensor `rotate`/`affine` take (what a "
           "B21-style per-image transform costs; torchvision itself is not installed). "
           "kornia: `kornia.geometry.transform.rotate` / `translate` on the `10·N` batch "
           "(`x.repeat` included) with per-sample parameters."]
    return "\n".join(md)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="images per canvas")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = p.parse_args()
    load0 = os.getloadavg()[0]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape in CANVASES:
        x = torch.rand(args.n, *shape, generator=gen)
        for fam in FAMILIES:
            r = bench_one(x, fam, args.repeats)
            rows.append((fam, shape, r))
            t = r["times"]
            print(fam, shape, {k: round(v, 4) for k, v in t.items()}, r["diff"], flush=True)
    md = report(rows, args, (load0, os.getloadavg()[0]))
    print(md)
    if not args.no_write:
        write_results(md, Path(__file__).with_name("RESULTS.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
