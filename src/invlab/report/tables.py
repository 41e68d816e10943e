"""Seed aggregation and table writers shared by the study reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from invlab.sweep.io import atomic_write_json, atomic_write_text


def aggregate_seeds(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std (ddof=1; 0 for one seed) over seeds of ``value`` per ``keys + metric``.

    ``rows`` hold the ``keys``, ``metric``/``value`` and (normally) ``seed``. Rows of the same
    seed (e.g. a store holding two runs of one model) are averaged first, so ``n_seeds``
    counts distinct seeds, never cells. Returns rows
    ``{**keys, "metric", "mean", "std", "n_seeds"}`` sorted by keys.
    """
    if not rows:
        return []
    df = pd.DataFrame(rows)
    if "seed" in df.columns:
        df = df.assign(value=df["value"].astype(float)).groupby(
            [*keys, "metric", "seed"], sort=True, dropna=False, as_index=False)["value"].mean()
    out = []
    for k, g in df.groupby([*keys, "metric"], sort=True, dropna=False):
        v = g["value"].astype(float).dropna()
        std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append({**dict(zip([*keys, "metric"], k)), "mean": float(v.mean()) if len(v) else
                    math.nan, "std": std, "n_seeds": int(len(v))})
    return out


def fmt_pm(mean: float, std: float, n: int, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines)


def write_table(df: pd.DataFrame, out: Path, stem: str, title: str = "") -> list[str]:
    """Write ``stem.md``, ``stem.csv``, ``stem.json`` atomically; returns the paths."""
    md = (f"### {title}\n\n" if title else "") + to_markdown(df) + "\n"
    paths = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.json"]
    atomic_write_text(paths[0], md)
    atomic_write_text(paths[1], df.to_csv(index=False))
    atomic_write_json(paths[2], df.to_dict(orient="records"))
    return [str(p) for p in paths]
