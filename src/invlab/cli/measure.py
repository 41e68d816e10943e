"""``invlab measure``: measure a checkpoint's invariance on a data source.

Wired into :mod:`invlab.cli` through :func:`add_measure_parser`; :func:`run_measure` is the
handler (:func:`run_measure_checked` with the data-fingerprint check). Checkpoint and data
loading are imported lazily so this module imports without them.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from contextlib import redirect_stdout
from typing import Any

import torch

from invlab import data as invlab_data  # its functions are looked up per call (tests patch them)
from invlab.checkpoint import load_checkpoint
from invlab.checkpoint_index import training_label
from invlab.devices import add_device_argument, resolve_device
from invlab.metrics.engine import ALIASES, DEFAULT_N_SI, METRICS, measure, resolve_metrics
from invlab.metrics.errors import MeasureError
from invlab.metrics.orbit import normalizer
from invlab.metrics.registry import REGISTRY
from invlab.metrics.transform import resolve_members, resolve_transform

__all__ = ["add_measure_parser", "format_table", "run_measure", "run_measure_checked"]

DEFAULT_CLI_METRICS = "kl,logit_l2,effective_invariance,saliency_similarity"
_PROGRESS_MIN_WORK = 20_000  # images × members (× IG steps) above which a bar is shown


def add_measure_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``measure`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "measure",
        help="measure a checkpoint's invariance (LI, DI, EI, SI, ...) on a data source",
        description=(
            "Evaluate a trained checkpoint on SOURCE[:split] over a transformation group and "
            "print each metric's mean, std and 95 % confidence interval.\n\nmetrics: "
            + ", ".join(METRICS) + "\naliases: "
            + ", ".join(f"{a.upper()}={c}" for a, c in ALIASES.items())
        ),
        epilog="examples:\n  invlab measure --checkpoint runs/x/best.safetensors "
               "--data mnist:test --group r4 --metrics kl,logit_l2,EI,SI --limit 1000\n"
               "  invlab measure --checkpoint runs/x/best.safetensors --data my_digits.npz "
               "--transform rotate:30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a .safetensors checkpoint written by invlab")
    p.add_argument("--data", required=True, metavar="SOURCE[:split]|PATH",
                   help="data source and split, e.g. mnist:test, or your own images: a .npz "
                        "(images [N,H,W] or [N,C,H,W], uint8 or float in [0,1]; labels [N]) "
                        "or a folder ROOT/<class>/<image>; preprocessed like the "
                        "checkpoint's training data")
    p.add_argument("--preprocess", default=None, metavar="SPEC",
                   help="for your own image files: e.g. resize=256,crop=224 (shorter side to "
                        "256, bilinear + antialias, centre crop 224), resize=32, crop=28")
    p.add_argument("--transform", default=None, metavar="SPEC",
                   help="any transform spec: a group (r4, t3, flip, d4), a fixed transform "
                        "(rotate:30, translate_x:4, brightness_up:1.4) or a whole family over "
                        "its magnitudes (rotate); non-exact transforms act on pixel-space "
                        "images, normalized afterwards with the checkpoint's statistics")
    p.add_argument("--group", default=None,
                   help="alias of --transform for groups: r4, t<n> (e.g. t3), flip, d4 "
                        "(default: the checkpoint's training group, else r4)")
    p.add_argument("--layers", default=None, metavar="NAMES",
                   help="comma-separated submodule names for representation invariance "
                        "(default: the penultimate features)")
    p.add_argument("--metrics", default=DEFAULT_CLI_METRICS,
                   help=f"comma-separated metric names or aliases (default {DEFAULT_CLI_METRICS})")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N images")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="images per chunk (default: automatic)")
    p.add_argument("--include-identity", action="store_true",
                   help="also average over the identity member")
    p.add_argument("--n-steps", type=int, default=50, help="integrated-gradient steps for SI")
    p.add_argument("--n-si", default=str(DEFAULT_N_SI), metavar="N|all",
                   help=f"images SI and sensitivity are computed on (evenly spaced; default "
                        f"{DEFAULT_N_SI}, as invlab audit; 'all' for every image); the other "
                        "metrics use all images")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for randomized metrics (representation invariance)")
    add_device_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run_measure)
    return p


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"


def _member_table(result: dict[str, Any]) -> list[str]:
    """Per-member means (one column per metric, one row per magnitude) for a family."""
    by = result.get("by_member") or {}
    if not by:
        return []
    names = list(by)
    rows = [("magnitude", *names)]
    for j, e in enumerate(result["elements"]):
        rows.append((f"{e:g}" if isinstance(e, float) else str(e),
                     *[_fmt(by[m][j]) for m in names]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["", "mean per magnitude (the median for the metrics marked * above):"]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table of a ``measure`` JSON result (plus per-magnitude means for a
    family)."""
    head = (f"model: {result['model']}   data: {result['data']}   "
            f"transform: {result['group']}   n: {result['n']}")
    rows = [("metric", "n", "mean", "std", "95% CI", "median [q1, q3]")]
    notes = []
    for name, v in result["metrics"].items():
        lo, hi = v["ci95"]
        med = (f"{_fmt(v['median'])} [{_fmt(v['q1'])}, {_fmt(v['q3'])}]" if "median" in v
               else "")
        if v.get("statistic") == "median":
            med += " *"
        rows.append((name, str(v.get("n", result["n"])), _fmt(v["mean"]), _fmt(v["std"]),
                     f"[{_fmt(lo)}, {_fmt(hi)}]", med))
        if v.get("n", result["n"]) < result["n"] and not notes:
            notes.append(f"SI / sensitivity on {v['n']} of {result['n']} images, evenly "
                         f"spaced (--n-si; 'all' for every image)")
    if any(r[-1].endswith("*") for r in rows[1:]):
        notes.append("* summarized by the median (Bouchacourt et al.); the others by the mean")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    if result.get("class_to_idx"):  # names mapped in sorted order: say how
        lines[1:1] = ["classes by sorted folder name: " + ", ".join(
            f"{n}→{i}" for n, i in sorted(result["class_to_idx"].items(), key=lambda t: t[1]))]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"note: {t}" for t in notes] + _member_table(result))


def _pixel_space(t: Any, images: Any, meta: dict[str, Any]) -> tuple[Any, Any]:
    """Images as given for exact groups (they commute with the normalization); otherwise
    back to pixel space with the checkpoint's statistics, which ``measure`` re-applies after
    the transform."""
    norm = meta.get("normalization")
    if getattr(t, "is_exact", True) or not norm:
        return images, None
    mean, std = normalizer(norm, images.shape[1], images.dtype, images.device)  # type: ignore[misc]
    return (images * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1),
            {"mean": norm["mean"], "std": norm["std"]})


def _measure_checkpoint(args: argparse.Namespace, names: list[str]) -> tuple[Any, dict]:
    if args.limit is not None and args.limit < 1:
        raise MeasureError(f"--limit must be >= 1, found {args.limit}")
    n_si = _n_si(args.n_si)
    if args.transform is not None and args.group is not None:
        raise MeasureError("pass --transform or --group (its alias), not both")
    for flag, v in (("--transform", args.transform), ("--group", args.group)):
        if v is not None and not v.strip():
            raise MeasureError(f"{flag} {v!r} selects nothing; give a spec, e.g. r4 or rotate:30 "
                               "(`invlab transforms list`), or leave it out")

    device = resolve_device(getattr(args, "device", "cpu"))  # before any work
    model, meta = load_checkpoint(args.checkpoint)
    pre = getattr(args, "preprocess", None)
    images, labels = invlab_data.load_for_checkpoint(args.data, meta, args.limit,
                                         **({"preprocess": pre} if pre else {}))
    t = resolve_transform(args.transform or args.group or meta.get("group") or "r4")
    k = len(resolve_members(t, None, args.include_identity))
    n_grad = images.shape[0] if n_si is None else min(n_si, images.shape[0])
    work = (n_grad * max(k, 1) * args.n_steps
            if any("gradients" in REGISTRY[m].needs for m in names)
            else images.shape[0] * max(k, 1))
    progress = not args.no_progress and work >= _PROGRESS_MIN_WORK
    images, norm = _pixel_space(t, images, meta)
    gen = torch.Generator().manual_seed(int(args.seed))
    m = measure(model, images, labels=labels, transform=t, normalization=norm,
                metrics=names, layers=args.layers, batch_size=args.batch_size, generator=gen,
                progress=progress, device=device,
                options={"include_identity": args.include_identity, "n_si": n_si,
                         "n_steps": args.n_steps})
    return m, meta


def _n_si(text: str) -> int | None:
    """``--n-si``: a positive int, or ``all`` (None)."""
    if str(text).strip().lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise MeasureError(f"--n-si must be a positive number of images or 'all', found "
                           f"{text!r}")
    return v


def run_measure(args: argparse.Namespace) -> int:
    """Handler of ``invlab measure``: load, measure, print. Returns the exit code."""
    try:
        m, meta = _measure_checkpoint(args, resolve_metrics(args.metrics))
    except (MeasureError, ValueError, FileNotFoundError) as e:
        print(f"invlab: error: {e}", file=sys.stderr)
        return 2
    ext = (invlab_data.last_data_check() or {}).get("external") or {}
    d = m.to_dict()
    result = {
        "model": meta.get("model", "?") + (training_label(meta) + f" ({args.checkpoint})"
                                           if not args.json else ""),
        "checkpoint": str(args.checkpoint),
        "data": args.data,
        "group": d["group"],
        "kind": d["kind"],
        "elements": d["elements"],
        "n": d["n"],
        "device": m.settings.get("device", "cpu"),
        "metrics": d["metrics"],
    }
    if ext.get("class_to_idx"):
        result["class_to_idx"] = ext["class_to_idx"]
    if ext.get("preprocess"):
        result["preprocess"] = ext["preprocess"]
    if "by_member" in d:
        result["by_member"] = d["by_member"]
    if args.json:
        result["model"] = meta.get("model", "?")
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0


def run_measure_checked(args: argparse.Namespace) -> int:
    """``invlab measure`` with the data-fingerprint check: refuse a checkpoint measured on
    other data than it was trained on unless ``--allow-data-mismatch``; then say so in the
    header (table) or a ``data_check`` field (JSON)."""
    buf = io.StringIO()
    with invlab_data.data_mismatch_allowed(bool(args.allow_data_mismatch)), redirect_stdout(buf):
        code = run_measure(args)
        check = invlab_data.last_data_check()
    text = buf.getvalue()
    if code == 0 and check is not None:
        if args.json:
            doc = json.loads(text)
            doc["data_check"] = check
            text = json.dumps(doc, indent=2) + "\n"
        elif check["mismatch"]:
            t, f = check["trained_on"], check["measured_on"]
            text = (f"WARNING: DATA MISMATCH (--allow-data-mismatch): trained on {t['images']:,} "
                    f"{t['source']} images ({t['hash']}), measured on {f['images']:,} "
                    f"({f['hash']}); splits differ from training\n") + text
        elif check.get("external"):
            e = check["external"]
            text = (f"note: your own images ({e['path']}, {e['images']:,} images"
                    + (f", {e['dropped']:,} of the class the checkpoint was trained without "
                       "dropped" if e["dropped"] else "")
                    + "); not checked against the checkpoint's training data\n") + text
        elif not check["verified"]:
            text = "note: the checkpoint records no data fingerprint; data not verified\n" + text
    sys.stdout.write(text)
    return code

