"""Reports a reader can use: captions, units, legible text, the Spearman table, provenance,
--help wording, and matplotlib loaded only where a figure is drawn."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from invlab.report.figures import MIN_FONT_PT, enforce_min_font, text_sizes
from invlab.report.html import FIGURE_CAPTIONS, read_figures, render_html, write_html_report
from invlab.transforms import create_transform

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every matplotlib figure saved while the test runs, with the number of its texts that
    the shared save had to raise to the minimum size (0: the code drew them legible)."""
    import matplotlib.figure

    import invlab.report.figures as figures

    figs: list[Any] = []
    raised: dict[int, int] = {}
    orig_enforce = figures.enforce_min_font
    orig_savefig = matplotlib.figure.Figure.savefig

    def enforce(fig: Any, minimum: float = MIN_FONT_PT) -> int:
        raised[id(fig)] = n = orig_enforce(fig, minimum)
        return n

    def savefig(self: Any, *a: Any, **k: Any) -> Any:
        if self not in figs:
            figs.append(self)
            self._raised = raised.get(id(self), 0)  # type: ignore[attr-defined]
        return orig_savefig(self, *a, **k)

    monkeypatch.setattr(figures, "enforce_min_font", enforce)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return figs


def _registered(stem: str) -> bool:
    return any(re.fullmatch(p, stem) for p, _ in FIGURE_CAPTIONS)


def _all_text_legible(fig: Any) -> None:
    small = [(t, s) for t, s in text_sizes(fig) if s < MIN_FONT_PT]
    assert not small, f"text below {MIN_FONT_PT} pt: {small[:5]}"


# ------------------------------------------------------------------------- member labels


def test_translate_members_are_labelled_in_pixels() -> None:
    fam = create_transform("translate_x")
    m = fam.magnitudes[1]  # 1/9 of the canvas width
    assert fam.member_label(m, 28, 28) == f"translate_x:{28 * m:.3g} px" == "translate_x:3.11 px"
    assert fam.member_label(m, 28, 56) == "translate_x:6.22 px"  # x: the width
    assert create_transform("translate_y").member_label(m, 56, 28) == "translate_y:6.22 px"
    assert fam.display_unit(28, 28) == "pixels" and fam.display_unit() == "fraction of W"
    assert fam.member_label(m) == "translate_x:0.111W"  # no canvas: the fraction, said so
    assert "W" not in fam.member_label(m, 28, 28)
    assert create_transform("translate_x:4").member_label(4.0, 28, 28) == "translate_x:4 px"
    rot = create_transform("rotate")
    assert rot.member_label(-27.0, 28, 28) == "rotate:-27" and rot.display_unit() == "degrees"
    assert create_transform("zoom_in").display_unit(28, 28) == "factor"


# ------------------------------------------------------------------------- audit figures


def _audit_entry(name: str, members: list[float], ri: list[float]) -> dict[str, Any]:
    k = len(members)
    met = {"kl": list(np.linspace(0.1, 1.0, k)), "agreement": [0.9] * k,
           "effective_invariance": [0.8] * k, "accuracy": [0.7] * k,
           "saliency_similarity": [0.5] * k, "representation_invariance": ri}
    return {"name": name, "kind": "family", "members": members, "metrics": met}


def test_audit_profile_axis_in_pixels_keeps_negative_ri_and_a_legend_off_the_data(
        tmp_path: Path, drawn: list[Any]) -> None:
    from invlab.audit import profile_plot

    t = create_transform("translate_x")
    members = t.non_identity
    ri = list(np.linspace(0.9, -0.6, len(members)))
    assert profile_plot(_audit_entry("translate_x", members, ri), tmp_path, t, (28, 28))
    (fig,) = drawn
    ax = fig.axes[0]
    assert ax.get_xlabel() == "translate_x magnitude (pixels)"
    ticks = [x.get_text() for x in ax.get_xticklabels()]
    assert ticks == [f"{28 * m:.3g}" for m in sorted(members)] and ticks[0] == "3.11"
    lo, hi = ax.get_ylim()
    assert lo < min(ri) and hi >= 1.0  # the whole RI curve is on the plot
    # the legend sits outside both axes: it covers no curve
    fig.canvas.draw()
    leg = ax.get_legend().get_window_extent()
    for a in fig.axes:
        box = a.get_window_extent()
        assert leg.x0 >= box.x1 or leg.y1 <= box.y0 or leg.y0 >= box.y1
    _all_text_legible(fig)
    assert fig._raised == 0


def test_audit_profile_of_rotate_is_in_degrees(tmp_path: Path, drawn: list[Any]) -> None:
    from invlab.audit import profile_plot

    t = create_transform("rotate")
    members = t.non_identity
    profile_plot(_audit_entry("rotate", members, [0.5] * len(members)), tmp_path, t, (28, 28))
    ax = drawn[0].axes[0]
    assert ax.get_xlabel() == "rotate magnitude (degrees)"
    values = [float(x.get_text()) for x in ax.get_xticklabels()]
    assert values == sorted(values) and values[0] == min(members)


def test_audit_member_names_are_in_pixels(tmp_path: Path) -> None:
    from torch import nn

    from invlab.audit import AuditSettings, run_audit

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(6, 1, 12, 12)
    s = AuditSettings(transforms=("translate_x",), limit=6, n_si=2, n_sensitivity=2,
                      ig_steps=2, n_show=1)
    doc = run_audit(model, x, None, {"mean": [0.5], "std": [0.25]}, s, progress=False)
    names = doc["transforms"][0]["member_names"]
    fam = create_transform("translate_x")
    assert names == [f"translate_x:{12 * m:.3g} px" for m in fam.non_identity]
    assert not any("W" in n for n in names)


# ------------------------------------------------------------------------- origins figures


def _origins_profile() -> pd.DataFrame:
    from invlab.factors import B21_FAMILIES

    rows = []
    for arch in ("mlp5",):
        for regime in ("untrained", "none"):
            for t in B21_FAMILIES:
                for mag in range(10):
                    for stat, v in (("median", 0.5), ("q1", 0.3), ("q3", 0.7),
                                    ("p05", -0.2), ("p95", 0.9), ("mean", 0.5)):
                        rows.append((arch, regime, 0, "penultimate", t, mag, stat, v))
    return pd.DataFrame(rows, columns=["arch", "regime", "seed", "layer", "transform", "mag",
                                       "stat", "value"])


def test_origins_profiles_are_in_degrees_pixels_and_factors(tmp_path: Path,
                                                            drawn: list[Any]) -> None:
    from invlab.report.origins import figure_boxes

    prof = _origins_profile()
    figure_boxes(prof, tmp_path, geometric=True, canvas=(28, 28))
    figure_boxes(prof, tmp_path, geometric=False, canvas=(28, 28))
    by_title = {ax.get_title(): ax for f in drawn for ax in f.axes if ax.get_title()}
    assert by_title["rotate"].get_xlabel() == "magnitude (degrees)"
    assert by_title["shear_x"].get_xlabel() == "magnitude (degrees)"
    assert by_title["translate_x"].get_xlabel() == "magnitude (pixels)"
    assert by_title["zoom_in"].get_xlabel() == "magnitude (factor)"
    assert by_title["brightness_up"].get_xlabel() == "magnitude (factor)"
    assert by_title["posterize"].get_xlabel() == "magnitude (bits)"
    px = [t.get_text() for t in by_title["translate_x"].get_xticklabels()]
    grid = create_transform("translate_x").magnitudes
    assert px == [f"{28 * m:.3g}" for m in grid[1:10]] and px[-1] == "28"
    rot = [float(t.get_text()) for t in by_title["rotate"].get_xticklabels()]
    assert rot == [float(f"{m:.3g}") for m in create_transform("rotate").magnitudes[1:10]]
    assert all("index" not in ax.get_xlabel() for ax in by_title.values())
    for f in drawn:
        _all_text_legible(f)
        assert f._raised == 0  # sized legible by the code, not only by the safety net


def test_origins_median_profiles_from_a_summary_are_in_family_units(
        tmp_path: Path, drawn: list[Any]) -> None:
    from invlab.factors import B21_FAMILIES
    from invlab.report.origins import figure_median_profiles

    prof = {"mlp5": {"untrained": {t: [1.0] + [0.5 - 0.1 * i for i in range(9)]
                                   for t in B21_FAMILIES},
                     "none": {t: [1.0] + [0.9] * 9 for t in B21_FAMILIES}}}
    assert figure_median_profiles(prof, tmp_path, geometric=True, canvas=(28, 28))
    (fig,) = drawn
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert by_title["translate_y"].get_xlabel() == "magnitude (pixels)"
    assert by_title["rotate"].get_xlabel() == "magnitude (degrees)"
    lo, _ = by_title["rotate"].get_ylim()
    assert lo < 0.5 - 0.1 * 8  # the negative medians are on the plot
    assert fig._raised == 0


def test_committed_figures_all_have_a_caption_that_is_not_the_file_name() -> None:
    pngs = sorted(ROOT.glob("results/*/*.png"))
    if not pngs:
        pytest.skip("no committed results")
    for p in pngs:
        assert _registered(p.stem), f"{p} has no caption"
    for stem in ("profile_translate_x", "saliency_r4", "scatter_ei", "grid_spearman",
                 "ranking", "test_sets", "fig_profile_geometric_inner", "fig_alignment"):
        assert _registered(stem), stem


def test_every_figure_on_a_page_has_a_sentence_caption(tmp_path: Path) -> None:
    from invlab.report.figures import pyplot, save

    plt = pyplot()
    for stem in ("scatter_ei", "grid_spearman", "fig_heatmap_median", "unknown_plot"):
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [0, 1])
        save(fig, tmp_path, stem, dpi=110)
    (tmp_path / "config.json").write_text(json.dumps({"study": "generalization"}))
    page = render_html(tmp_path)
    caps = re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)
    assert len(caps) == 4
    for stem, cap in zip(sorted(["scatter_ei", "grid_spearman", "fig_heatmap_median"]),
                         [c for c in caps if "unknown" not in c]):
        text = re.sub(r"<[^>]+>", "", cap)
        sentence, file = text.strip().rsplit(" (", 1)
        assert file == f"{stem}.png)" and sentence.endswith(".") and len(sentence) > 60, text
    # a figure saved at 110 dpi is shown at 100 CSS px per figure inch (9 pt = 12.5 px)
    f = next(f for f in read_figures(tmp_path) if f.stem == "scatter_ei")
    assert f.dpi == pytest.approx(110, abs=0.5)
    assert f.display_size[0] == round(f.width * 100 / f.dpi)


def test_enforce_min_font_raises_small_text_only() -> None:
    from invlab.report.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.text(0, 0, "tiny", fontsize=6)
    ax.set_title("big", fontsize=14)
    ax.tick_params(labelsize=5)
    assert enforce_min_font(fig) >= 2
    fig.canvas.draw()  # tick labels are re-made at each draw: they stay raised
    sizes = dict(text_sizes(fig))
    assert sizes["tiny"] == MIN_FONT_PT and sizes["big"] == 14
    assert min(s for _, s in text_sizes(fig)) >= MIN_FONT_PT
    plt.close(fig)


# ------------------------------------------------------------------------- generalization page


def _tiny_generalization(d: Path) -> pd.DataFrame:
    """7 models × 3 test sets: accuracy and the measures (a user zoo: family "external")."""
    d.mkdir()
    r = np.random.default_rng(0)
    recs = []
    for i in range(7):
        for ts in ("id", "blur", "mine"):
            acc = 0.5 + 0.05 * i + r.normal(0, 0.05)
            for measure, v in (("accuracy", acc), ("ei", 0.3 + 0.04 * i + r.normal(0, 0.05)),
                               ("agreement", r.random()), ("neg_js", -r.random()),
                               ("neg_kl", -r.random()), ("neg_li", -r.random()),
                               ("confidence", acc + r.normal(0, 0.02))):
                recs.append({"model_id": f"m{i}", "family": "external", "arch": "Net",
                             "augment": "", "n_train": None, "epochs": None, "seed": None,
                             "test_set": ts, "measure": measure, "value": v,
                             "n_images": 100})
    long = pd.DataFrame(recs)
    long.to_csv(d / "models.csv", index=False)
    (d / "config.json").write_text(json.dumps({"study": "generalization", "config": {
        "test_sets": ["id", "blur"], "n_boot": 50}, "n_boot": 50}))
    (d / "provenance.json").write_text(json.dumps({"recorded_at": "2026-01-01T00:00:00+00:00",
                                                   "wall_seconds": 12.0, "data_sources": []}))
    return long


def test_generalization_page_has_the_spearman_table_first_and_the_long_table_last(
        tmp_path: Path, drawn: list[Any]) -> None:
    from scipy.stats import spearmanr

    from invlab.report.generalization import build_report

    d = tmp_path / "gen"
    long = _tiny_generalization(d)
    build_report(d, n_boot=50, seed=0)
    page = write_html_report(d).read_text()
    # the terminal's measure × test-set table, with the values scipy gives
    sp = pd.read_csv(d / "spearman.csv")
    assert list(sp.columns) == ["measure", "id", "blur", "mine"]
    for ts in ("id", "blur", "mine"):
        w = long[long.test_set == ts].pivot(index="model_id", columns="measure", values="value")
        rho = spearmanr(w["ei"], w["accuracy"]).statistic
        cell = sp.loc[sp.measure == "EI", ts].item()
        assert cell.startswith(f"{rho:.2f} [")
    assert 'id="table-spearman"' in page
    pos = {k: page.index(k) for k in ('id="table-spearman"', 'id="figures"',
                                      'id="per-model-tables"', 'id="table-models"')}
    assert pos['id="table-spearman"'] < pos['id="figures"'] < pos['id="per-model-tables"'] \
        < pos['id="table-models"']
    assert '<a href="models.csv">' in page
    # display rounding: no 17-digit floats on the page, all digits kept in the file
    assert not re.search(r"\d\.\d{7,}", page.split('id="provenance"')[0])
    assert re.search(r"\d\.\d{7,}", (d / "models.csv").read_text())
    # provenance read from its file, not "no provenance.json"
    assert "no provenance.json" not in page and "lists no data source" in page
    assert "mnist" in page.split('id="provenance"')[1]
    # the scatter legend says what the points are
    scatter = drawn[0]
    labels = [t.get_text() for lg in scatter.legends for t in lg.get_texts()]
    assert labels and "external" not in " ".join(labels) and "your models" in labels[0]
    for f in drawn:
        _all_text_legible(f)
        assert f._raised == 0


# ------------------------------------------------------------------------- --help and imports


def _helps(parser: argparse.ArgumentParser, path: str = "invlab") -> dict[str, str]:
    out = {path: parser.format_help()}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                out.update(_helps(sub, f"{path} {name}"))
    return out


def test_help_texts_are_printed_as_written() -> None:
    from invlab.cli import build_parser

    helps = _helps(build_parser())
    assert {"invlab measure", "invlab data fetch", "invlab study generalization",
            "invlab audit"} <= set(helps)
    for path, text in helps.items():
        assert "%%" not in text, path
    assert "95 % confidence interval" in helps["invlab measure"]
    fetch = helps["invlab data fetch"]
    assert "mnist" in fetch and "fashion-mnist" in fetch
    gz = " ".join(helps["invlab study generalization"].split())
    assert "3000" not in gz and "largest n_train" in gz


def test_matplotlib_is_imported_only_where_a_figure_is_drawn() -> None:
    code = ("import sys, invlab, invlab.cli, invlab.audit, invlab.report, "
            "invlab.report.html, invlab.report.genuine, invlab.report.drift, "
            "invlab.report.spectral, invlab.report.origins, invlab.report.generalization, "
            "invlab.cli.study, invlab.studies.genuine, invlab.studies.origins, "
            "invlab.studies.generalization, invlab.cli.measure; "
            "print('matplotlib' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
