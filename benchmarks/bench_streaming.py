"""Benchmark: measuring KL / EI under ``flip`` on 4,000 JPEGs streamed from disk (issue 22).

Run:  .venv/bin/python benchmarks/bench_streaming.py [--n 4000] [--workers 0] [--batch 64]

Writes ``--n`` JPEGs of 320×240 (smooth random colour images, quality 90; generated once
under ``runs/bench_streaming/``), opens them with ``invlab.data.open_images(folder,
preprocess="resize=224,crop=224")`` (lazy: only headers are read), and streams them through
a ``torch.utils.data.DataLoader`` in batches of ``--batch`` once for the decoding rate alone,
then measures them with one call
``invlab.measure(model, dataset, transform="flip", metrics=["kl", "effective_invariance"])``
on a small colour CNN (the engine streams the Dataset in its own chunks). Reports the process's peak RSS (``resource.getrusage``,
``ru_maxrss``, this process and, with ``--workers > 0``, the largest DataLoader worker), the
images/s of the whole pass and of decoding alone, and checks that the streamed per-image
values equal one ``measure`` on the same images held as a tensor (first 256 images).
Target: peak RSS < 1.5 GB. For scale: the 4,000 preprocessed images as one float32 tensor
would take 4,000 × 3 × 224 × 224 × 4 B = 2.41 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np
import torch
from torch import nn


def make_jpegs(folder: Path, n: int, w: int = 320, h: int = 240, seed: int = 0) -> None:
    """``n`` smooth random colour JPEGs (a 20×15 random image upsampled: realistic file sizes)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    if have == n:
        return
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        noise = rng.integers(-12, 13, (h, w, 3))
        arr = np.clip(np.asarray(img).astype(np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:05d}.jpg", quality=90)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def peak_rss_mb() -> tuple[float, float]:
    """(this process, largest waited-for child) peak RSS in MB (Linux: ru_maxrss is in KiB)."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", default=str(ROOT / "runs" / "bench_streaming" / "jpegs"))
    ap.add_argument("--preprocess", default="resize=224,crop=224")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import invlab
    from invlab.data import open_images

    folder = Path(args.dir)
    t0 = time.perf_counter()
    make_jpegs(folder, args.n)
    t_gen = time.perf_counter() - t0
    rss0 = peak_rss_mb()[0]

    t0 = time.perf_counter()
    ds = open_images(folder, preprocess=args.preprocess)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    fp = ds.fingerprint()
    t_fp = time.perf_counter() - t0
    print(f"{ds!r}: opened in {t_open:.2f} s (headers only), fingerprint {fp[:23]}… in "
          f"{t_fp:.2f} s; generation {t_gen:.1f} s; RSS after import {rss0:.0f} MB")

    model = tiny_cnn()
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=args.workers)

    t0 = time.perf_counter()
    n_dec = 0
    for x in loader:  # decoding + preprocessing alone
        n_dec += len(x)
    t_dec = time.perf_counter() - t0

    # one measure over the whole Dataset: the engine streams it in its own chunks
    t0 = time.perf_counter()
    with torch.no_grad():
        m = invlab.measure(model, ds, transform="flip", normalization=norm,
                           metrics=["kl", "effective_invariance"], progress=False,
                           options={"num_workers": args.workers})
    kl, ei = [m.per_sample["kl"][:, 0]], [m.per_sample["effective_invariance"][:, 0]]
    n = m.n
    t_all = time.perf_counter() - t0
    me, kids = peak_rss_mb()
    kl_t, ei_t = torch.cat(kl), torch.cat(ei)

    # the streamed values vs one measure on the same images as a tensor
    k = min(256, len(ds))
    xs = torch.stack([ds.image(i) for i in range(k)])
    ref = invlab.measure(model, xs, transform="flip", normalization=norm,
                         metrics=["kl", "effective_invariance"], progress=False)
    d_kl = float((ref.per_sample["kl"][:, 0] - kl_t[:k]).abs().max())
    d_ei = float((ref.per_sample["effective_invariance"][:, 0] - ei_t[:k]).abs().max())

    print(f"images: {n:,} ({args.preprocess}), batch {args.batch}, DataLoader workers "
          f"{args.workers}, torch threads {args.threads}")
    print(f"decode+preprocess only: {n_dec / t_dec:.1f} images/s ({t_dec:.1f} s)")
    print(f"stream + measure (KL, EI under flip): {n / t_all:.1f} images/s ({t_all:.1f} s)")
    print(f"mean KL {float(kl_t.mean()):.4g}, mean EI {float(ei_t.mean()):.4g}")
    print(f"streamed vs tensor (first {k}): max |ΔKL| {d_kl:.2e}, max |ΔEI| {d_ei:.2e}")
    print(f"peak RSS: this process {me:.0f} MB"
          + (f", largest DataLoader worker {kids:.0f} MB" if args.workers else "")
          + f"; target < 1536 MB: {'met' if max(me, kids) < 1536 else 'NOT met'}")
    print(f"(as one float32 tensor the {n:,} images would take "
          f"{n * 3 * 224 * 224 * 4 / 1e9:.2f} GB)")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
