"""Shared figure plumbing of the reports: matplotlib loaded only when a figure is drawn, one
minimum font size, atomic PNG + SVG writes.

Every report figure is saved through :func:`save`, which first raises any text smaller than
:data:`MIN_FONT_PT` to it: the HTML page shows figures at 100 CSS px per figure inch, so a
9 pt label is 12.5 px at 100 % zoom, tick labels and heat-map numbers included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invlab.io import atomic_write

__all__ = ["MIN_FONT_PT", "enforce_min_font", "pyplot", "save"]

MIN_FONT_PT = 9.0


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use, so
    ``import invlab`` and the report modules do not load matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def enforce_min_font(fig: Any, minimum: float = MIN_FONT_PT) -> int:
    """Raise every visible text of ``fig`` (titles, labels, ticks, legends, annotations)
    smaller than ``minimum`` points to ``minimum``; returns how many were raised."""
    from matplotlib.text import Text

    fig.canvas.draw()  # tick labels get their text (and exist) only when drawn
    n = 0
    for ax in fig.axes:  # tick labels are re-made on each draw from the axis' tick parameters
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for which in ("major", "minor"):
                labels = [t for t in axis.get_ticklabels(which=which)
                          if t.get_visible() and t.get_text()]
                if any(t.get_fontsize() < minimum for t in labels):
                    ax.tick_params(axis=name, which=which, labelsize=minimum)
                    n += 1
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text() and t.get_fontsize() < minimum:
            t.set_fontsize(minimum)
            n += 1
    return n


def text_sizes(fig: Any) -> list[tuple[str, float]]:
    """``(text, size in pt)`` of every visible, non-empty text of ``fig`` (for checks)."""
    from matplotlib.text import Text

    return [(t.get_text(), float(t.get_fontsize())) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text()]


def save(fig: Any, out: Path, stem: str, dpi: int = 130,
         formats: tuple[str, ...] = ("png", "svg")) -> list[str]:
    """Write ``fig`` as ``out/stem.png`` and ``.svg`` (or ``formats``; atomically, text ≥
    ``MIN_FONT_PT``) and close it; returns the paths, in the order of ``formats``."""

    enforce_min_font(fig)
    paths = []
    for ext in formats:
        p = Path(out) / f"{stem}.{ext}"
        atomic_write(p, lambda tmp, ext=ext: fig.savefig(tmp, dpi=dpi, bbox_inches="tight",
                                                         format=ext))
        paths.append(str(p))
    pyplot().close(fig)
    return paths
