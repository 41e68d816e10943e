"""Benchmarks of the measurement engine (issue "Measurement engine").

Run:  .venv/bin/python benchmarks/bench_metrics.py [--n 10000] [--no-write]

All ratios are measured in this process (memory: in two child processes), on random
36×36 images and a randomly initialized ``mlp5`` (9 classes), group R4 (3 non-identity
elements):

(a) orbit engine ``measure(metrics=[kl, logit_l2, effective_invariance])`` on N images vs a
    straightforward per-sample research loop: for each image, forward x once, then for each
    non-identity element forward g·x and compute the three metrics of that pair with the
    functional core (one image per forward, ``.item()`` per value, under ``no_grad``). The
    loop is timed on a subset and extrapolated per sample.
(b) achieved FLOP rate of the engine (whole ``measure`` call: orbit construction, forwards,
    metrics) vs a plain chain of matmuls (+ bias, no activations) of the same shapes and the
    same chunking (rows per forward = (k+1)·batch_size of the engine) on a pre-stacked input.
    FLOPs are counted explicitly for both: 2·in·out per row per Linear layer.
(c) saliency similarity (SI, IG gausslegendre, 50 steps) vs a Captum-based computation with
    the same settings (Captum ``IntegratedGradients.attribute(..., n_steps=50,
    method="gausslegendre", internal_batch_size=None)`` on x and on each g·x, same saliency
    map and cosine), with the max abs difference of the values.
(d) peak memory (RSS high-water mark minus RSS before the call, child process) of
    ``measure`` on 10k vs 50k images (images themselves excluded).

Timings are the median of ``--repeats`` wall-clock repeats, the compared variants interleaved
within each repeat; the machine may be shared, so the load average is printed with the
results. ``--threads`` sets ``torch.set_num_threads`` (default: torch's default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from invlab.attribution import boundary_for_group, saliency_map
from invlab.groups import create_group
from invlab.metrics import functional as F
from invlab.metrics import measure
from invlab.metrics.functional.saliency import saliency_cosine
from invlab.models import create_model

METRICS = ["kl", "logit_l2", "effective_invariance"]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(fns: dict, repeats: int) -> dict:
    """Median wall clock of each function; every repeat runs all of them in turn."""
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def reference_loop(model, x, group):
    """The straightforward baseline: one image per forward, Python loops everywhere."""
    g = create_group(group)
    res = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            xi = x[i:i + 1]
            lx = model(xi)
            for e in g.non_identity:
                lt = model(g.act(xi, e))
                res.append((F.kl(lx, lt).item(), F.logit_l2(lx, lt).item(),
                            F.effective_invariance(lx, lt).item()))
    return res


def mlp_flops_per_row(model) -> int:
    return sum(2 * m.in_features * m.out_features for m in model.modules()
               if isinstance(m, torch.nn.Linear))


def bench_speed(n: int, loop_n: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = create_model("mlp5").eval()
    x = torch.randn(n, 1, 36, 36)
    measure(model, x[:512], metrics=METRICS)  # warm-up
    reference_loop(model, x[:20], "r4")  # warm-up
    # (b) the same forward shapes as a plain matmul chain on a pre-stacked input
    k = 3
    rows = n * (k + 1)
    chunk = (k + 1) * measure(model, x[:4], metrics=METRICS).settings["batch_size"]
    if chunk < 4 * (k + 1):
        raise RuntimeError("unexpected engine batch size")
    lin = [mm for mm in model.modules() if isinstance(mm, torch.nn.Linear)]
    ws = [mm.weight.detach().T.contiguous() for mm in lin]
    bs = [mm.bias.detach() for mm in lin]
    xs = torch.randn(rows, lin[0].in_features)
    flops = mlp_flops_per_row(model) * rows

    def chain():
        for a in range(0, rows, chunk):
            h = xs[a:a + chunk]
            for w, b in zip(ws, bs):
                h = torch.addmm(b, h, w)

    chain()
    # interleaved repeats, so that engine, loop and chain see the same machine load
    t = interleaved({"engine": lambda: measure(model, x, metrics=METRICS),
                     "loop": lambda: reference_loop(model, x[:loop_n], "r4"),
                     "chain": chain}, repeats)
    t_engine, t_loop_sub, t_chain = t["engine"], t["loop"], t["chain"]
    t_loop = t_loop_sub / loop_n * n
    # equal values
    m = measure(model, x[:loop_n], metrics=METRICS)
    ref = torch.tensor(reference_loop(model, x[:loop_n], "r4")).view(loop_n, 3, 3)
    diff = max(float((m.per_sample[k] - ref[:, :, j]).abs().max())
               for j, k in enumerate(METRICS))
    return {"chain_rows_per_forward": chunk, "repeats": repeats, "n": n, "t_engine": t_engine, "t_loop_extrapolated": t_loop, "loop_n": loop_n,
            "t_loop_subset": t_loop_sub, "speedup": t_loop / t_engine, "max_abs_diff": diff,
            "gflops_engine": flops / t_engine / 1e9, "gflops_chain": flops / t_chain / 1e9,
            "flop_fraction": t_chain / t_engine}


def captum_si(model, x, group, n_steps, internal_batch_size=None):
    from captum.attr import IntegratedGradients

    g = create_group(group)
    ig = IntegratedGradients(model)
    with torch.no_grad():
        target = model(x).argmax(-1)
    b = boundary_for_group(g)
    kw = {"target": target, "n_steps": n_steps, "method": "gausslegendre",
          "internal_batch_size": internal_batch_size}
    m0 = saliency_map(ig.attribute(x, **kw), boundary=b)
    mts = [saliency_map(ig.attribute(g.act(x, e), **kw), boundary=b) for e in g.non_identity]
    return saliency_cosine(m0, torch.stack(mts), g, g.non_identity)


def bench_si(n: int, repeats: int, n_steps: int = 50) -> dict:
    torch.manual_seed(0)
    model = create_model("mlp5").eval()
    x = torch.randn(n, 1, 36, 36)
    ours = F.saliency_similarity(model, x[:8], "r4", n_steps=n_steps)  # warm-up
    captum_si(model, x[:8], "r4", n_steps)
    t = interleaved({"ours": lambda: F.saliency_similarity(model, x, "r4", n_steps=n_steps),
                     "captum": lambda: captum_si(model, x, "r4", n_steps)}, repeats)
    t_ours, t_captum = t["ours"], t["captum"]
    ours = F.saliency_similarity(model, x, "r4", n_steps=n_steps)
    ref = captum_si(model, x, "r4", n_steps)
    return {"n": n, "n_steps": n_steps, "t_ours": t_ours, "t_captum": t_captum,
            "speedup": t_captum / t_ours, "max_abs_diff": float((ours - ref).abs().max()),
            "mean_si": float(ours.mean())}


def bench_family(n: int, repeats: int) -> dict:
    """(e) ``measure`` over the rotate family (10 magnitudes, identity included) vs the matmul
    chain of the same shapes and chunking (as (b))."""
    torch.manual_seed(0)
    model = create_model("mlp5").eval()
    x = torch.rand(n, 1, 36, 36)
    kw = {"transform": "rotate", "options": {"include_identity": True}, "metrics": METRICS,
          "progress": False}
    m = measure(model, x[:64], **kw)  # warm-up
    k = len(m.members)
    chunk = (k + 1) * m.settings["batch_size"]
    rows = n * (k + 1)
    lin = [mm for mm in model.modules() if isinstance(mm, torch.nn.Linear)]
    ws = [mm.weight.detach().T.contiguous() for mm in lin]
    bs = [mm.bias.detach() for mm in lin]
    xs = torch.randn(rows, lin[0].in_features)

    def chain():
        for a in range(0, rows, chunk):
            h = xs[a:a + chunk]
            for w, b in zip(ws, bs):
                h = torch.addmm(b, h, w)

    chain()
    t = interleaved({"engine": lambda: measure(model, x, **kw), "chain": chain}, repeats)
    flops = mlp_flops_per_row(model) * rows
    return {"n": n, "k": k, "rows_per_forward": chunk, "t_engine": t["engine"],
            "t_chain": t["chain"], "gflops_engine": flops / t["engine"] / 1e9,
            "gflops_chain": flops / t["chain"] / 1e9, "flop_fraction": t["chain"] / t["engine"]}


def bench_si_cnn(n: int, repeats: int, n_steps: int = 50) -> dict:
    """(f) SI on ``cnn_small`` vs Captum: Captum's default full batch and Captum with
    ``internal_batch_size`` = our rows per chunk; the ratio is against the faster one."""
    from invlab.attribution.integrated_gradients import (
        CHUNK_BYTES,
        DEFAULT_MEMORY_BUDGET,
        MAX_CHUNK_ROWS,
        _bytes_per_row,
    )

    torch.manual_seed(0)
    model = create_model("cnn_small").eval()
    x = torch.randn(n, 1, 36, 36)
    budget = min(DEFAULT_MEMORY_BUDGET, CHUNK_BYTES)  # the engine's rows per chunk
    rows = max(1, min(MAX_CHUNK_ROWS, budget // _bytes_per_row(model, x)))
    ours = F.saliency_similarity(model, x[:4], "r4", n_steps=n_steps)  # warm-up
    captum_si(model, x[:4], "r4", n_steps)
    t = interleaved({
        "ours": lambda: F.saliency_similarity(model, x, "r4", n_steps=n_steps),
        "captum": lambda: captum_si(model, x, "r4", n_steps),
        "captum_chunked": lambda: captum_si(model, x, "r4", n_steps, internal_batch_size=rows),
    }, repeats)
    ours = F.saliency_similarity(model, x, "r4", n_steps=n_steps)
    ref = captum_si(model, x, "r4", n_steps)
    best = min(t["captum"], t["captum_chunked"])
    return {"n": n, "rows": rows, "t_ours": t["ours"], "t_captum": t["captum"],
            "t_captum_chunked": t["captum_chunked"], "speedup": best / t["ours"],
            "max_abs_diff": float((ours - ref).abs().max())}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(n: int) -> None:
    """Peak RSS of one ``measure`` call: VmHWM after resetting it (``clear_refs`` = 5) minus
    VmRSS before. (``ru_maxrss`` is not used: Linux carries the parent's high-water mark
    into a forked child.)"""
    torch.manual_seed(0)
    model = create_model("mlp5").eval()
    measure(model, torch.randn(64, 1, 36, 36), metrics=METRICS)  # warm-up, small
    x = torch.randn(n, 1, 36, 36)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter VmHWM
    before = _status_kb("VmRSS")
    measure(model, x, metrics=METRICS)
    peak = _status_kb("VmHWM")
    print(json.dumps({"n": n, "delta": peak - before, "before": before, "peak": peak}))


def bench_memory(sizes=(10_000, 50_000)) -> dict:
    out = {}
    for n in sizes:
        # A fixed mmap threshold makes glibc return freed large blocks to the OS at once,
        # so the RSS high-water mark reflects live memory rather than allocator caching.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        r = subprocess.run([sys.executable, __file__, "--memory-child", str(n)],
                           capture_output=True, text=True, check=True, env=env)
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])
    a, b = (out[s]["delta"] for s in sizes)
    return {"sizes": list(sizes), "delta_mb": [a / 2**20, b / 2**20],
            "ratio": b / max(a, 1)}


def write_results(text: str, path: Path) -> None:
    """Replace (or add) the ``## Metrics engine`` section, keeping every other section."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines()
    out, skip = [], False
    for ln in lines:
        if ln.startswith("## "):
            skip = ln.strip() == "## Metrics engine"
        if not skip:
            out.append(ln)
    body = "\n".join(out).rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(body)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="images for (a)/(b)")
    p.add_argument("--loop-n", type=int, default=300, help="loop subset for (a)")
    p.add_argument("--si-n", type=int, nargs="+", default=[200, 1000],
                   help="image counts for (c)")
    p.add_argument("--family-n", type=int, default=2000, help="images for (e)")
    p.add_argument("--cnn-si-n", type=int, default=100, help="images for (f)")
    p.add_argument("--only", default=None, help="comma list of parts to run (a-f); others "
                   "are skipped and RESULTS.md is not written")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    parts = set(args.only.split(",")) if args.only else set("abcdef")
    load0 = os.getloadavg()[0]
    sp = bench_speed(args.n, args.loop_n, args.repeats) if parts & {"a", "b"} else None
    sis = [bench_si(n, args.repeats) for n in args.si_n] if "c" in parts else []
    mem = bench_memory() if "d" in parts else None
    fam = bench_family(args.family_n, args.repeats) if "e" in parts else None
    cnn = bench_si_cnn(args.cnn_si_n, args.repeats) if "f" in parts else None
    load1 = os.getloadavg()[0]
    rows = []
    if sp is not None:
        rows += [
            ("(a) engine vs per-sample loop (mlp5, R4, kl+LI+EI)",
             (f"{sp['t_engine']:.2f} s vs {sp['t_loop_extrapolated']:.1f} s "
              f"(loop timed on {sp['loop_n']} imgs: {sp['t_loop_subset']:.2f} s, "
              f"extrapolated)"),
             f"{sp['speedup']:.1f}x", ">= 20x", f"max |diff| {sp['max_abs_diff']:.1e}"),
            ("(b) FLOP rate engine vs plain matmul chain",
             f"{sp['gflops_engine']:.1f} vs {sp['gflops_chain']:.1f} GFLOP/s",
             f"{100 * sp['flop_fraction']:.0f}%", ">= 50%", "")]
    rows += [(f"(c) SI vs Captum-based ({si['n']} imgs, 50 GL steps)",
              f"{si['t_ours']:.2f} s vs {si['t_captum']:.2f} s",
              f"{si['speedup']:.2f}x", ">= 2x", f"max |diff| {si['max_abs_diff']:.1e}")
             for si in sis]
    if mem is not None:
        rows.append(("(d) peak memory 50k vs 10k images",
                     f"{mem['delta_mb'][1]:.1f} MB vs {mem['delta_mb'][0]:.1f} MB",
                     f"{100 * (mem['ratio'] - 1):+.1f}%", "within 10%", ""))
    if fam is not None:
        rows.append((f"(e) FLOP rate, measure over rotate ({fam['k']} magnitudes, "
                     f"{fam['n']} imgs) vs matmul chain",
                     f"{fam['gflops_engine']:.1f} vs {fam['gflops_chain']:.1f} GFLOP/s "
                     f"({fam['t_engine']:.2f} s vs {fam['t_chain']:.2f} s)",
                     f"{100 * fam['flop_fraction']:.0f}%", ">= 50%", ""))
    if cnn is not None:
        rows.append((f"(f) SI on cnn_small vs Captum ({cnn['n']} imgs, R4, 50 GL steps)",
                     f"{cnn['t_ours']:.2f} s vs {cnn['t_captum']:.2f} s (full batch) / "
                     f"{cnn['t_captum_chunked']:.2f} s (internal_batch_size={cnn['rows']})",
                     f"{cnn['speedup']:.2f}x", ">= 2x", f"max |diff| {cnn['max_abs_diff']:.1e}"))
    head = ("benchmark", "measured", "ratio", "target", "check")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    table = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                      for r in [head, tuple("-" * w for w in widths), *rows])
    print(table)
    md = ["## Metrics engine", "",
          (f"Command: `.venv/bin/python benchmarks/bench_metrics.py --n {args.n} "
          f"--loop-n {args.loop_n} --si-n {' '.join(map(str, args.si_n))} "
          f"--family-n {args.family_n} --cnn-si-n {args.cnn_si_n} --repeats {args.repeats}"
          + (f" --threads {args.threads}" if args.threads is not None else "") + "`  "),
          (f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {load0:.1f} → {load1:.1f} "
          f"(shared machine; median of {args.repeats} interleaved repeats, wall clock)."), "",
          "| benchmark | measured | ratio | target | check |", "|---|---|---|---|---|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    chunk = sp["chain_rows_per_forward"] if sp else "?"
    md += ["", ("Notes: (a) the per-sample loop (for each image: forward x; for each g: forward "
           "g·x and the three metrics of the pair, `.item()` per value) is timed on a subset "
           "and extrapolated linearly per sample. (b) compares the whole `measure` call "
           "(orbit construction, forwards, metrics) with the bias+matmul chain alone on a "
           f"pre-stacked input in chunks of {chunk} rows (the "
           "engine's rows per forward); FLOPs = 2·in·out per row per Linear for both. "
           "(c) the Captum reference runs `IntegratedGradients.attribute(n_steps=50, "
           "method='gausslegendre', internal_batch_size=None)` on x and on each "
           "g·x (full batch, Captum's default), with the same saliency map and cosine. "
           "(d) RSS high-water mark (VmHWM, reset before the call) minus RSS before the call, in a fresh child process per "
           "size (glibc `MALLOC_MMAP_THRESHOLD_=65536`); the input images are allocated before "
           "and are not counted. (e) the same comparison as (b) for `measure(transform="
           "'rotate', include_identity=True)` on pixel-space images: the engine's time includes "
           "the batched bilinear rotations (one grid_sample for all magnitudes) of every chunk. "
           "(f) `cnn_small` (conv-pool-conv-pool-conv-GAP-linear, 36×36): Captum is run with its "
           "default full batch and with `internal_batch_size` equal to our rows per chunk; the "
           "ratio is against the faster of the two.")]
    print(json.dumps({"speed": sp, "si": sis, "memory": mem, "family": fam, "cnn_si": cnn},
                     indent=1))
    if not args.no_write and not args.only:
        write_results("\n".join(md), Path(__file__).with_name("RESULTS.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
