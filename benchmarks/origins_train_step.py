"""Origins training step: what the one-resample augmentation and channels-last layout save.

Run:  .venv/bin/python benchmarks/origins_train_step.py [--batch 256] [--repeats 30]

Same process, one thread, synthetic 1×28×28 batches (the study's shapes):

- augmentation ``translate_zoom``: the study's one composed affine (one ``grid_sample``)
  against the library transforms applied in turn as before (``zoom_in``, ``zoom_out``,
  ``translate_x``, ``translate_y``: four ``Family.sample`` calls, the same draws);
- one Adam step (forward, cross-entropy, backward, step) of each architecture with
  contiguous against channels-last weights and input.

Prints milliseconds (median of ``--repeats``) and the ratios (baseline / invlab).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from invlab.models import create_model  # noqa: E402
from invlab.studies.origins_augment import AugConfig, augment_pixels  # noqa: E402
from invlab.transforms import create_transform  # noqa: E402


def sequential_translate_zoom(x: torch.Tensor, cfg: AugConfig, gen: torch.Generator
                              ) -> torch.Tensor:
    """The previous implementation: zoom, then translate x, then translate y (4 resamples)."""
    n = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)

    s = torch.exp(u(math.log(cfg.zoom_min), math.log(cfg.zoom_max)))
    x = create_transform("zoom_in").sample(x, magnitudes=s.clamp(min=1.0))
    x = create_transform("zoom_out").sample(x, magnitudes=s.clamp(max=1.0))
    x = create_transform("translate_x").sample(x, magnitudes=u(-cfg.translate, cfg.translate))
    return create_transform("translate_y").sample(x, magnitudes=u(-cfg.translate, cfg.translate))


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return 1e3 * statistics.median(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(1)
    x = torch.rand(a.batch, 1, 28, 28)
    y = torch.randint(0, 10, (a.batch,))
    cfg, gen = AugConfig(), torch.Generator().manual_seed(0)
    old = timed(lambda: sequential_translate_zoom(x, cfg, gen), a.repeats)
    new = timed(lambda: augment_pixels(x, "translate_zoom", cfg, gen), a.repeats)
    print(f"augment translate_zoom, batch {a.batch}: 4 resamples {old:.1f} ms, one affine "
          f"{new:.1f} ms: {old / new:.2f}x")
    for arch in ("cnn_medium", "vit_tiny", "mlp5"):
        ms = {}
        for fmt in (torch.contiguous_format, torch.channels_last):
            torch.manual_seed(0)
            m = create_model(arch, in_shape=(1, 28, 28), num_classes=10).to(memory_format=fmt)
            opt = torch.optim.Adam(m.parameters(), 1e-3)
            xf = x.contiguous(memory_format=fmt)

            def step() -> None:
                loss = F.cross_entropy(m(xf), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

            ms[fmt] = timed(step, a.repeats)
        c, cl = ms[torch.contiguous_format], ms[torch.channels_last]
        print(f"train step {arch}, batch {a.batch}: contiguous {c:.1f} ms, channels-last "
              f"{cl:.1f} ms: {c / cl:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
