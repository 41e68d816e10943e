"""``invlab models list``, ``groups list``, ``transforms list`` and ``metrics list``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from invlab import groups as invlab_groups  # their functions are looked up per call (tests
from invlab import models as invlab_models  # patch them)
from invlab.cli._table import _table
from invlab.metrics.registry import metric_rows
from invlab.transforms import transform_rows


def _cmd_models_list(args: argparse.Namespace) -> int:
    rows = []
    for name, desc in invlab_models.list_models().items():
        n = sum(p.numel() for p in invlab_models.create_model(name).parameters())
        rows.append({"name": name, "params (36x36, 9 classes)": f"{n:,}", "description": desc})
    print(_table(rows, ["name", "params (36x36, 9 classes)", "description"]))
    return 0


def _cmd_groups_list(args: argparse.Namespace) -> int:
    rows = []
    for name, desc in invlab_groups.list_groups().items():
        g = invlab_groups.create_group("t3" if name == "t<n>" else name)
        rows.append({"name": name, "order": "n" if name == "t<n>" else str(g.order),
                     "exact": str(g.is_exact), "description": desc})
    print(_table(rows, ["name", "order", "exact", "description"]))
    return 0


def _cmd_transforms_list(args: argparse.Namespace) -> int:
    h, _, w = args.size.lower().partition("x")
    try:
        height, width = int(h), int(w or h)
    except ValueError:
        raise ValueError(f"--size must be H or HxW (e.g. 36 or 28x28), found {args.size!r}") \
            from None
    rows = transform_rows(height, width)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    yes = {True: "yes", False: "-"}
    for r in rows:
        r.update({k: yes[r[k]] for k in ("exact", "invertible", "group")})
    print(_table(rows, ["name", "kind", "unit", "exact", "invertible", "group", "magnitudes"]))
    print(f"\nmagnitudes: the family grid in ascending order (B21's 10 per family); translate in "
          f"pixels on a {height}x{width} canvas.\nspecs: a name alone is the whole family "
          "('rotate'), name:m one transform ('rotate:30', 'translate_x:4', 'translate_x:0.5W',"
          " 'noise:0.1@seed=3').\ninvertible: has an inverse (geometric ones with a validity "
          "mask); fixed brightness_down:f / contrast_down:f with f > 0 are invertible too.")
    return 0


def add_catalog_parsers(sub: Any) -> None:
    """``invlab models list``, ``invlab groups list`` and ``invlab transforms list``."""
    models = sub.add_parser("models", help="registered models")
    models.add_subparsers(dest="models_command", metavar="ACTION").add_parser(
        "list", help="list models").set_defaults(func=_cmd_models_list)
    groups = sub.add_parser("groups", help="transformation groups")
    groups.add_subparsers(dest="groups_command", metavar="ACTION").add_parser(
        "list", help="list groups").set_defaults(func=_cmd_groups_list)
    transforms = sub.add_parser("transforms", help="transformations: groups, families, fixed")
    tl = transforms.add_subparsers(dest="transforms_command", metavar="ACTION").add_parser(
        "list", help="each transform, its magnitudes and exact / invertible / group flags")
    tl.add_argument("--size", default="36", help="canvas H or HxW for pixel magnitudes "
                    "(default 36)")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=_cmd_transforms_list)


def add_metrics_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``invlab metrics list``: every registered metric with its declarations."""
    p = subparsers.add_parser("metrics", help="invariance metrics: list")
    lp = p.add_subparsers(dest="metrics_command", metavar="ACTION").add_parser(
        "list", help="each metric: aliases, which direction is better, range, summary "
                     "statistic, what it needs")
    lp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lp.set_defaults(func=run_metrics_list)
    return p


def run_metrics_list(args: argparse.Namespace) -> int:
    """Handler of ``invlab metrics list`` (from :func:`invlab.metrics.registry.metric_rows`)."""
    rows = metric_rows()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["name", "aliases", "better", "range", "summary", "needs"]
    table = [cols] + [[r[c] for c in cols] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    lines = []
    for j, t in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"{r['name']}: {r['description']}" for r in rows]
    lines += ["", "options (measure(options={name: {...}}) or a configured metric, e.g. "
                  "SaliencySimilarity(n_steps=8)):"]
    lines += [f"  {r['name']}: {r['options']}" for r in rows if r["options"] != "-"]
    lines.append("\nbetter: which direction means more invariant (- : a descriptive measure); "
                 "summary: the statistic Measurement.summary reports (median for "
                 "Bouchacourt et al.'s measures, with quartiles; mean otherwise).")
    print("\n".join(lines))
    return 0
