"""One self-contained HTML page per study directory: ``DIR/report.html``.

The page is rendered from the files a study's report step wrote — ``config.json`` (resolved
config, invlab version, git revision), every table (``STEM.csv`` with its title from
``STEM.md``), ``claims.md``, every figure (``STEM.png``, embedded as a base64 data URI) —
plus, when present, ``provenance.json`` (recorded at the end of a study run: wall time, data
sources) and the results store ``store.sqlite`` (per-cell wall times, the invlab version and
git revision of every stored row). Nothing is recomputed, so any study directory renders,
including ones without a store (e.g. committed results) and future studies.

The page needs no server, no network and no JavaScript, prints with figures and tables kept
whole (``@media print``), and HTML-escapes every value taken from the files.

    >>> write_html_report("runs/genuine")                     # doctest: +SKIP
    PosixPath('runs/genuine/report.html')
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Any

from invlab.data import DataError, load_source
from invlab.report.claims import read_claims
from invlab.report.claims import render_html as render_claims_html
from invlab.sweep import ResultsStore
from invlab.sweep.io import atomic_write_json, atomic_write_text
from invlab.sweep.provenance import git_revision, invlab_version

__all__ = ["REPORT_NAME", "PROVENANCE_NAME", "FigureFile", "escape", "html_figures",
           "html_table", "read_figures", "record_provenance", "render_html", "render_page",
           "write_html_report"]

REPORT_NAME = "report.html"
PROVENANCE_NAME = "provenance.json"
TEMPLATE = Path(__file__).with_name("templates") / "report.html"

STUDY_TITLES = {
    "genuine": "Genuine invariance: WT vs DA vs IR (Moskalev et al. 2023, Table 1, Figs. 2–3)",
    "drift": "Invariance under data drift MNIST → Fashion-MNIST (Moskalev et al. 2023, Fig. 4)",
    "spectral": "Invariance-induced spectral decay of the input Jacobian "
                "(Moskalev et al. 2023, Fig. 5)",
    "generalization": "Does invariance predict accuracy across a zoo of models and "
                      "distribution shifts? (Deng et al. 2022)",
    "origins": "Where does invariance come from: data, augmentation or architecture? "
               "(Bouchacourt et al. 2021)",
}
# titles of tables written without a STEM.md
TABLE_TITLES = {"models": "Every measurement: model × test set × measure (long format)",
                "zoo": "The zoo: one row per model (architecture, training, ID accuracy)"}
# (pattern on the file stem, caption from the match); unknown stems get the stem as caption.
FIGURE_CAPTIONS: list[tuple[str, Any]] = [
    (r"fig2_tsne_(.+)_(\w+)", lambda m: "Fig. 2 — t-SNE of the penultimate features of each "
     f"sample's {m[2].upper()} orbit ({m[1]}); grey lines join one sample's transformed copies. "
     "A genuinely invariant model collapses each orbit to one point."),
    (r"fig3_saliency_(.+)_(\w+)", lambda m: "Fig. 3 — integrated-gradient saliency over the "
     f"{m[2].upper()} orbit ({m[1]}; rows are samples), realigned by g⁻¹: identical maps "
     "across a row mean saliency invariance (SI = 1)."),
    (r"fig4_drift_(\w+)", lambda m: "Fig. 4 — DI (KL, solid, left axis) and accuracy ratio "
     "Acc(D(β))/Acc(D1) (dashed, right axis) as the test data drifts from MNIST (β = 0) to "
     f"Fashion-MNIST (β = 1), {m[1]} reading; bands are ± std over seeds."),
    (r"fig5_spectral", lambda m: "Fig. 5 — σ_max of the input–logit Jacobian for DA and for IR "
     "with each regularizer (mean ± std over seeds)."),
    (r"nu_search_?(.*)", lambda m: "ν search" + (f" ({m[1]} study)" if m[1] else "") +
     ": validation SI(ν) and accuracy(ν) of every trial of the search for IR's regularization "
     "weight; the dashed line is the SI target."),
    # generalization (Deng et al. 2022)
    (r"scatter_ei", lambda m: "Accuracy against effective invariance (EI, rotations by 90°, "
     "180°, 270°) of every model of the zoo, one panel per test set, with the least-squares "
     "line; ρ is Spearman's rank correlation across models."),
    (r"grid_spearman", lambda m: "Spearman ρ between accuracy and each measure across the "
     "zoo's models, per test set (the numbers in the cells); red: a higher score goes with "
     "higher accuracy, blue: with lower."),
    (r"ranking", lambda m: "Spearman ρ with accuracy of each measure per test set, with "
     "bootstrap 95 % intervals; the dotted line is the ρ = 0.8 that the claims call strong."),
    (r"test_sets", lambda m: "The first images of every test set (label above each image; "
     "number of images beside the set's name): the in-distribution split and each shift."),
    # origins (Bouchacourt et al. 2021)
    (r"fig_profile_(geometric|appearance)(_inner)?", lambda m: "Representation invariance "
     f"against magnitude for each {m[1]} transformation "
     f"({'an inner' if m[2] else 'the penultimate'} layer): boxes are quartiles, whiskers "
     "5–95 %, one colour per model and training regime."),
    (r"fig_profile_median_(geometric|appearance)", lambda m: "Median representation "
     f"invariance against magnitude for each {m[1]} transformation (penultimate layer, mean "
     "over seeds), magnitudes in the transformation's own unit: one line per model and "
     "training regime."),
    (r"fig_heatmap_median(_inner)?", lambda m: "Median representation invariance over the "
     f"middle magnitudes (indices 3–7) per transformation (rows) and model (columns), "
     f"{'an inner' if m[1] else 'the penultimate'} layer; the white line separates geometric "
     "from appearance transformations."),
    (r"fig_factors", lambda m: "Factors of variation per class: the share of same-class "
     "pairs that a transformation brings closer in the embedding (colour) and its rank within "
     "the class (number; bold: the class's top 5)."),
    (r"fig_specificity", lambda m: "How specific the factors of variation are to each class: "
     "Spearman correlation of two classes' factor rankings (left) and overlap (IoU) of their "
     "top-5 factors (right)."),
    (r"fig_alignment", lambda m: "Alignment of the invariance that training adds (no "
     "augmentation − untrained) with each class's factors of variation (left: share of the "
     "top-5 factors with a positive gap, against chance) and the gap of each transformation "
     "against its factor strength (right)."),
    # audit
    (r"profile_(.+)", lambda m: f"Invariance profile of {m[1]}: agreement, EI, accuracy of "
     "the transformed images, SI and representation invariance (left axis, 1 = invariant) and "
     "DI (right axis) at each magnitude, in the family's own unit."),
    (r"saliency_(.+)", lambda m: f"Saliency over {m[1]}: for each image (rows), its "
     "integrated-gradient map m(x) and the maps of transformed copies mapped back by T⁻¹; "
     "identical maps across a row mean saliency invariance (SI = 1)."),
]
TABLE_ORDER = ("table1_", "table_", "drift_", "spearman")
LONG_TABLE_ROWS = 200  #: longer tables go last, shown by their first rows
PER_MODEL_TABLES = ("models", "zoo")  #: raw per-model long tables: last, shown by first rows
SHOWN_ROWS = 20
# Figures are shown at CSS_PX_PER_INCH css px per figure inch (still capped at the page width):
# a 9 pt label is then 12.5 css px at 100 % zoom, whatever dpi the PNG was saved at (read from
# its pHYs chunk), and a high-density screen or a printer gets the extra pixels.
CSS_PX_PER_INCH = 100
DISPLAY_SCALE = 0.77  #: for a PNG without pHYs chunk (assumed saved at 130 dpi)
# a table cell that is a number: "15,000", "-0.000 ± 0.000", "112.5 s" (not "0.1.0", "3c022bb")
NUMBER = re.compile(r"^[-−+]?[\d,]*\.?\d+(e[-+]?\d+)?( ± \S+)?( (s|min|h|%))?$")


@dataclass(frozen=True)
class TableFile:
    """One table: ``rows`` of cells (strings), ``columns`` in file order."""

    stem: str
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class FigureFile:
    """One PNG figure, its caption and pixel size (read from the PNG header)."""

    stem: str
    caption: str
    data: bytes
    width: int
    height: int
    dpi: float | None = None  #: from the PNG's pHYs chunk, None when absent

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) in CSS px: ``CSS_PX_PER_INCH`` per inch of the saved figure."""
        scale = CSS_PX_PER_INCH / self.dpi if self.dpi else DISPLAY_SCALE
        return round(self.width * scale), round(self.height * scale)


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "section"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _png_size(data: bytes, path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk: bytes 16..24 of a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        raise ValueError(f"{path} is not a PNG file (bad signature); rebuild the figures with "
                         "`invlab report DIR`")
    return struct.unpack(">II", data[16:24])


def _png_dpi(data: bytes) -> float | None:
    """Dots per inch from the PNG's ``pHYs`` chunk (pixels per metre), None without one."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"pHYs" and length >= 9:
            ppm_x, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            return ppm_x * 0.0254 if unit == 1 and ppm_x > 0 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _caption(stem: str) -> str:
    for pattern, text in FIGURE_CAPTIONS:
        m = re.fullmatch(pattern, stem)
        if m:
            return str(text(m))
    return stem.replace("_", " ")


def _table_title(md: Path, stem: str) -> str:
    if md.exists():
        for line in md.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return TABLE_TITLES.get(stem, stem.replace("_", " "))


def read_tables(out: Path) -> list[TableFile]:
    """Every ``STEM.csv`` in ``out`` (title from ``STEM.md``): tables holding the paper's
    numbers first, then by kind (``table1_``, ``table_``, ``drift_``, others), tables of more
    than ``LONG_TABLE_ROWS`` rows last, then by name."""
    tables = []
    for p in sorted(out.glob("*.csv")):
        rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8"))))
        if rows:
            tables.append(TableFile(p.stem, _table_title(out / f"{p.stem}.md", p.stem), rows[0],
                                    rows[1:]))

    def order(t: TableFile) -> tuple[bool, bool, int, str]:
        rank = next((i for i, pre in enumerate(TABLE_ORDER) if t.stem.startswith(pre)), 9)
        return (_is_long(t), not any(c.lower().startswith("paper ") for c in t.columns), rank,
                t.stem)

    return sorted(tables, key=order)


def _is_long(t: TableFile) -> bool:
    """A raw per-model table (``models.csv``, ``zoo.csv``) or one of more than
    ``LONG_TABLE_ROWS`` rows: shown last, by its first ``SHOWN_ROWS`` rows and a link."""
    return t.stem in PER_MODEL_TABLES or len(t.rows) > LONG_TABLE_ROWS


def read_figures(out: Path) -> list[FigureFile]:
    """Every ``STEM.png`` in ``out``, sorted by name, with its caption."""
    figs = []
    for p in sorted(out.glob("*.png")):
        data = p.read_bytes()
        w, h = _png_size(data, p)
        figs.append(FigureFile(p.stem, _caption(p.stem), data, w, h, _png_dpi(data)))
    return figs


# --------------------------------------------------------------------------- provenance


def _find_values(obj: Any, keys: set[str]) -> Iterable[str]:
    """Every string value (or list item) stored under one of ``keys``, at any depth."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in keys:
                yield from ([v] if isinstance(v, str) else
                            [x for x in v if isinstance(x, str)] if isinstance(v, list) else [])
            else:
                yield from _find_values(v, keys)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find_values(v, keys)


def store_summary(out: Path) -> dict[str, Any] | None:
    """Wall times per stage and the code versions of the stored rows, or None without a store.

    Returns ``{"stages": [{"study", "cells", "wall_seconds", "first_start", "last_finish"}],
    "writers": [{"invlab_version", "git_rev", "rows"}], "datasets": [...]}``.
    """
    path = out / "store.sqlite"
    if not path.exists():
        return None

    store = ResultsStore(path)
    cells, rows = store.cells(), store.rows()
    stages: dict[str, dict[str, Any]] = {}
    for c in cells:
        s = stages.setdefault(c["study"], {"study": c["study"], "cells": 0, "wall_seconds": 0.0,
                                           "first_start": None, "last_finish": None})
        s["cells"] += 1
        s["wall_seconds"] += float(c["wall_seconds"] or 0.0)
        if c["started_at"] and (s["first_start"] is None or c["started_at"] < s["first_start"]):
            s["first_start"] = c["started_at"]
        if c["finished_at"] and (s["last_finish"] is None or c["finished_at"] > s["last_finish"]):
            s["last_finish"] = c["finished_at"]
    writers: dict[tuple[Any, Any], int] = {}
    for r in rows:
        key = (r["invlab_version"], r["git_rev"])
        writers[key] = writers.get(key, 0) + 1
    store.close()
    return {"stages": sorted(stages.values(), key=lambda s: s["first_start"] or ""),
            "writers": [{"invlab_version": v, "git_rev": g, "rows": n}
                        for (v, g), n in sorted(writers.items(), key=str)],
            "datasets": sorted(set(_find_values([c["config"] for c in cells], {"dataset"})))}


# data sources a study reads without naming them in its config
STUDY_SOURCES = {"generalization": ("mnist",)}


def _datasets(out: Path) -> list[str]:
    cfg = _read_json(out / "config.json") or {}
    names = set(_find_values(cfg, {"dataset", "datasets"}))
    names |= set(STUDY_SOURCES.get(str(cfg.get("study", "")), ()))
    summary = store_summary(out)
    return sorted(names | set(summary["datasets"] if summary else []))


def record_provenance(out_dir: str | Path, wall_seconds: float | None = None) -> Path:
    """Write ``provenance.json``: what the store and config do not record.

    Call at the end of a study run, on the machine that ran it: the study's wall time (this
    invocation, ``wall_seconds``), and each data source the study names, resolved now
    (number of images and where they were found), with the time of recording.
    """

    out = Path(out_dir)
    sources = []
    for name in _datasets(out):
        try:
            ds = load_source(name)
            sources.append({"name": name, "images": len(ds), "where": list(ds.provenance)})
        except DataError as e:
            sources.append({"name": name, "images": None, "where": [f"not found: {e}"]})
    doc = {"recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "wall_seconds": None if wall_seconds is None else round(float(wall_seconds), 1),
           "invlab_version": invlab_version(), "git_rev": git_revision(),
           "data_sources": sources}
    return atomic_write_json(out / PROVENANCE_NAME, doc)


# --------------------------------------------------------------------------- rendering


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _size(n: int) -> str:
    return f"{n:,} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else \
        f"{n / 2**20:.2f} MiB"


def _kv(rows: list[tuple[str, str]]) -> str:
    """A two-column key/value table; values are already HTML."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _is_text(values: list[str]) -> bool:
    vals = [v for v in values if v not in ("", "–", "-")]
    return bool(vals) and not all(NUMBER.match(v) for v in vals)


def _grid(columns: list[str], rows: list[list[str]]) -> str:
    """An HTML table of escaped cells, text columns left-aligned. A column ``paper X`` is
    shown inside column ``X``, under this run's value (the paper's number beside ours)."""
    index = {c: j for j, c in enumerate(columns)}
    paper = {index[c[6:]]: j for j, c in enumerate(columns)
             if c.lower().startswith("paper ") and c[6:] in index}
    shown = [j for j in range(len(columns)) if j not in paper.values()]
    text = {j: _is_text([r[j] for r in rows if j < len(r)]) for j in shown}
    stack = len(shown) > 9  # wide tables: "± std" on a second line, so the table fits a page
    wrap_ci = len(shown) > 6  # and "ρ [lo, hi]": the interval on a second line

    def cell(r: list[str], j: int) -> str:
        v = _e(r[j]) if j < len(r) else ""
        if stack and " ± " in v:
            mean, std = v.split(" ± ", 1)
            v = f'{mean}<span class="sd">± {std}</span>'
        elif wrap_ci and _CI.match(v):
            est, ci = v.split(" ", 1)
            v = f'{est}<span class="sd">{ci}</span>'
        if j in paper:
            p = r[paper[j]] if paper[j] < len(r) else ""
            v += f'<span class="paper">{_e(p) if p else "–"}</span>'
        return f'<td class="label">{v}</td>' if text[j] else f"<td>{v}</td>"

    lab = ' class="label"'
    head = "".join(f'<th scope="col"{lab if text[j] else ""}>{_e(columns[j])}'
                   + ('<span class="paper">paper</span>' if j in paper else "") + "</th>"
                   for j in shown)
    body = "".join("<tr>" + "".join(cell(r, j) for j in shown) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>' \
           "</table></div>"


_CI = re.compile(r"^[-−+]?[\d.]+ \[[-−+]?[\d.]+, [-−+]?[\d.]+\]$")  # "0.46 [0.30, 0.61]"


def _claims_section(out: Path) -> tuple[str, str]:
    """The claims check as the page's first section, rendered from ``claims.json``
    (:mod:`invlab.report.claims`). A directory written before claims were records (only
    ``claims.md``) shows that file as text, without a badge."""
    cs = read_claims(out)
    if cs is not None:
        return "Claims check", render_claims_html(cs)
    path = out / "claims.md"
    if not path.exists():
        return "Claims check", ('<p class="note">This study directory has no claims check '
                                "(<code>claims.json</code>); its claims are read from the "
                                "figures and tables below.</p>")
    return "Claims check", ('<p class="note">Claims as written by an older invlab '
                            "(<code>claims.md</code> only; <code>invlab report DIR</code> "
                            "rebuilds them as records):</p><pre>"
                            + _e(path.read_text(encoding="utf-8")) + "</pre>")


def _tables_section(tables: list[TableFile]) -> str:
    if not tables:
        return '<p class="note">No tables (<code>*.csv</code>) in this directory.</p>'
    parts = []
    if any(c.lower().startswith("paper") for t in tables for c in t.columns):
        parts.append('<p class="note">Where the paper reports a number, it is shown under '
                     'this run\'s value, <span class="paper inline">shaded and in italics</span>'
                     ".</p>")
    for t in tables:
        long = _is_long(t) and len(t.rows) > SHOWN_ROWS
        link = f'<a href="{_e(t.stem)}.csv"><code>{_e(t.stem)}.csv</code></a>'
        note = (f"Shown: the first {SHOWN_ROWS} of {len(t.rows):,} rows (numbers rounded to 4 "
                f"significant digits); all of them, at full precision, in {link}"
                if long else "Source: " + link)
        parts.append(f'<h3 id="table-{_slug(t.stem)}">{_e(t.title)}</h3>'
                     f'<p class="note">{note}</p>'
                     + _grid(t.columns, [[_short(c) for c in r] for r in t.rows[:SHOWN_ROWS]]
                             if long else [[_short(c) for c in r] for r in t.rows]))
    return "".join(parts)


_LONG_FLOAT = re.compile(r"^[-+]?\d*\.\d{6,}(e[-+]?\d+)?$")


def _short(v: str) -> str:
    """A raw float with 6 or more decimals (``0.8849999904632568``) to 4 significant digits
    for display; every other cell unchanged."""
    return f"{float(v):.4g}" if _LONG_FLOAT.match(v) else v


def _figures_section(figs: list[FigureFile]) -> str:
    if not figs:
        return '<p class="note">No figures (<code>*.png</code>) in this directory.</p>'
    parts = []
    for f in figs:
        uri = "data:image/png;base64," + base64.b64encode(f.data).decode("ascii")
        w, h = f.display_size
        parts.append(f'<figure id="fig-{_slug(f.stem)}"><img src="{uri}" alt="{_e(f.caption)}" '
                     f'width="{w}" height="{h}"><figcaption>{_e(f.caption)} '
                     f'<span class="file">({_e(f.stem)}.png)</span></figcaption></figure>')
    return "".join(parts)


def _provenance_section(out: Path, cfg: dict[str, Any], rendered_at: str) -> str:
    has_prov = (out / PROVENANCE_NAME).exists()
    prov = _read_json(out / PROVENANCE_NAME) or {}
    gap = '<span class="gap">not recorded</span>'
    rows = [("study", _e(cfg.get("study", "–"))),
            ("run with", f"invlab {_e(cfg.get('invlab_version') or '?')}, git "
                         f"<code>{_e(cfg.get('git_rev') or '?')}</code> (config.json)"),
            ("study wall time", _e(_duration(prov["wall_seconds"])) + " (last invocation, "
             f"recorded {_e(prov.get('recorded_at'))})" if prov.get("wall_seconds") is not None
             else gap + (" (provenance.json holds no wall time)" if has_prov else
                         " (no provenance.json: written at the end of a study run)")),
            ("page rendered", f"{_e(rendered_at)} by invlab {_e(invlab_version())}, git "
                              f"<code>{_e(git_revision() or '?')}</code>")]
    parts = [_kv(rows), "<h3>Data sources</h3>"]
    if prov.get("data_sources"):
        parts.append(f'<p class="note">Resolved on the machine that ran the study, '
                     f"{_e(prov.get('recorded_at'))}.</p>")
        parts.append(_grid(["source", "images", "where"],
                           [[s["name"], "–" if s["images"] is None else f"{s['images']:,}",
                             "; ".join(s["where"])] for s in prov["data_sources"]]))
    else:
        names = ", ".join(_datasets(out)) or "none named"
        why = (f"provenance.json, recorded {_e(prov.get('recorded_at') or '?')}, lists no data "
               "source" if has_prov else "no provenance.json")
        test_sets = (cfg.get("config") or {}).get("test_sets")
        sets = (f" Test sets in the config: {_e(', '.join(map(str, test_sets)))}."
                if isinstance(test_sets, list) and test_sets else "")
        parts.append(f'<p class="note"><span class="gap">Sizes and locations not recorded</span> '
                     f"({why}). Data sources the study reads: {_e(names)}.{sets}</p>")
    parts.append(_store_provenance(out))
    parts.append("<h3>Files in this directory</h3>" + _grid(["file", "formats and sizes"],
                                                            _file_rows(out)))
    return "".join(parts)


def _file_rows(out: Path) -> list[list[str]]:
    """One row per file stem: ``[stem, "png 64.5 KiB · svg 97.6 KiB"]`` (this page excluded)."""
    stems: dict[str, list[str]] = {}
    for p in sorted(out.iterdir()):
        if p.is_file() and p.name != REPORT_NAME and not p.name.startswith("."):
            stem, _, ext = p.name.partition(".")
            stems.setdefault(stem, []).append(f"{ext or 'file'} {_size(p.stat().st_size)}")
    return [[stem, " · ".join(v)] for stem, v in stems.items()]


def _store_provenance(out: Path) -> str:
    summary = store_summary(out)
    if summary is None:
        return ('<h3>Cells</h3><p class="note"><span class="gap">No results store</span> '
                "(<code>store.sqlite</code>) in this directory: per-cell wall times and the "
                "code version of each stored row are not available.</p>")
    stages = [[s["study"], str(s["cells"]), _duration(s["wall_seconds"]),
               (s["first_start"] or "–")[:19], (s["last_finish"] or "–")[:19]]
              for s in summary["stages"]]
    total = sum(s["wall_seconds"] for s in summary["stages"])
    stages.append(["all", str(sum(s["cells"] for s in summary["stages"])), _duration(total),
                   "", ""])
    writers = [[w["invlab_version"] or "?", w["git_rev"] or "?", str(w["rows"])]
               for w in summary["writers"]]
    return ("<h3>Cells (from store.sqlite)</h3>"
            + _grid(["stage", "cells", "sum of cell wall times", "first start (UTC)",
                     "last finish (UTC)"], stages)
            + "<h4>Code that wrote the stored rows</h4>"
            + _grid(["invlab version", "git revision", "rows"], writers))


def _config_section(out: Path, cfg: dict[str, Any]) -> str:
    y = out / "config.yaml"
    if y.exists():
        return f'<p class="note">Source: <code>config.yaml</code></p><pre><code>' \
               f"{_e(y.read_text(encoding='utf-8'))}</code></pre>"
    if cfg:
        return f'<p class="note">Source: <code>config.json</code></p><pre><code>' \
               f"{_e(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False))}</code></pre>"
    return '<p class="note gap">No resolved config (config.yaml / config.json) in this ' \
           "directory.</p>"


def render_html(out_dir: str | Path, rendered_at: str | None = None) -> str:
    """The report page of the study in ``out_dir`` as one HTML string (see module doc)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"no study directory at {out}; run a study with --out {out}")
    cfg = _read_json(out / "config.json") or {}
    tables, figs = read_tables(out), read_figures(out)
    if not (cfg or tables or figs):
        raise FileNotFoundError(f"{out} holds no study outputs (config.json, *.csv tables, "
                                f"*.png figures); run `invlab report {out}` or a study first")
    rendered_at = rendered_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    study = str(cfg.get("study") or out.name)
    preset = (cfg.get("config") or {}).get("preset")
    claims_title, claims = _claims_section(out)
    long = [t for t in tables if _is_long(t)]
    sections = [(claims_title, claims),
                ("Tables", _tables_section([t for t in tables if not _is_long(t)])
                 if len(long) < len(tables) else '<p class="note">Only per-model tables: see '
                 '<a href="#per-model-tables">Per-model tables</a>.</p>'),
                ("Figures", _figures_section(figs))]
    if long:  # raw per-model tables: after the summaries and figures, linked as CSV
        sections.append(("Per-model tables", _tables_section(long)))
    sections += [("Provenance", _provenance_section(out, cfg, rendered_at)),
                ("Resolved configuration", _config_section(out, cfg))]
    subtitle = (f"<p>{_e(STUDY_TITLES.get(study, f'Study {study}'))}</p>"
                f"<p>study <code>{_e(study)}</code>" + (f", preset <code>{_e(preset)}</code>"
                                                       if preset else "")
                + f" · {_plural(len(tables), 'table')} · {_plural(len(figs), 'figure')} · directory "
                  f"<code>{_e(out.name)}</code></p>")
    return render_page(f"invlab report — {study}", subtitle, sections,
                       f"Rendered {_e(rendered_at)} from the files in this directory; rebuild "
                       "with <code>invlab report DIR --html</code>. Self-contained: figures are "
                       "embedded, no network or scripts needed.")


def render_page(title: str, subtitle_html: str, sections: list[tuple[str, str]],
                footer_html: str) -> str:
    """A page from the report template: ``title`` (plain text), a subtitle, ``(heading,
    body HTML)`` sections with a table of contents, and a footer. Bodies are inserted as
    they are: build them with :func:`html_table`, :func:`html_figures`, :func:`escape`."""

    toc = "".join(f'<li><a href="#{_slug(t)}">{_e(t)}</a></li>' for t, _ in sections)
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=_e(title), version=_e(invlab_version()), subtitle=subtitle_html,
        toc=f'<nav class="toc"><strong>Contents</strong><ol>{toc}</ol></nav>',
        sections="".join(f'<section id="{_slug(t)}"><h2>{_e(t)}</h2>{body}</section>'
                         for t, body in sections),
        footer=footer_html)


def html_table(columns: list[str], rows: list[list[str]]) -> str:
    """A table (numbers right-aligned, text left), every cell HTML-escaped."""
    return _grid(columns, rows)


def html_figures(figs: list[FigureFile]) -> str:
    """Figures embedded as PNG data URIs with their captions."""
    return _figures_section(figs)


def escape(x: Any) -> str:
    """HTML-escape ``str(x)`` (None → empty)."""
    return _e(x)


def write_html_report(out_dir: str | Path, wall_seconds: float | None = None) -> Path:
    """Write ``out_dir/report.html``; with ``wall_seconds`` (end of a study run) first record
    ``provenance.json`` (wall time, data sources). Returns the page's path."""

    out = Path(out_dir)
    if wall_seconds is not None:
        record_provenance(out, wall_seconds)
    return Path(atomic_write_text(out / REPORT_NAME, render_html(out)))
