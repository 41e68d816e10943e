"""Report of the genuine-invariance study: Table 1 (+ paper numbers), Figures 2 and 3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from invlab.data.sources import source_label
from invlab.report.claims import Claim, ClaimSet, accuracy_gate, decide, read_claims, render_text, write_claims
from invlab.report.figures import pyplot
from invlab.report.figures import save as _save_figure
from invlab.report.metric_labels import axis_label, column_label
from invlab.report.tables import aggregate_seeds, fmt_pm, write_table
from invlab.sweep import ResultsStore
from invlab.sweep.io import atomic_write_json

# M23 Table 1 (Transforming-MNIST): acc %, LI, DI, SI as (mean, std or None).
PAPER_MNIST: dict[tuple[str, str], dict[str, tuple[float, float | None]]] = {
    ("r4", "wt"): {"accuracy": (94.6, 0.1), "logit_l2": (0.00, None), "kl": (0.0, None),
                   "saliency_similarity": (1.00, None)},
    ("r4", "da"): {"accuracy": (94.0, 0.5), "logit_l2": (98.6, 5.4), "kl": (0.3, 0.1),
                   "saliency_similarity": (0.17, 0.04)},
    ("r4", "ir"): {"accuracy": (87.9, 0.8), "logit_l2": (0.02, None), "kl": (0.0, None),
                   "saliency_similarity": (0.95, 0.03)},
    ("t3", "wt"): {"accuracy": (96.6, 0.1), "logit_l2": (0.0, None), "kl": (0.0, None),
                   "saliency_similarity": (1.00, None)},
    ("t3", "da"): {"accuracy": (96.2, 0.2), "logit_l2": (50.8, 6.8), "kl": (0.1, 0.0),
                   "saliency_similarity": (0.57, 0.08)},
    ("t3", "ir"): {"accuracy": (93.1, 0.1), "logit_l2": (0.01, None), "kl": (0.0, None),
                   "saliency_similarity": (0.95, 0.07)},
}
PAPER_METRICS = frozenset(m for row in PAPER_MNIST.values() for m in row)
"""The metrics M23's Table 1 reports (each gets a ``paper`` column on MNIST)."""
METRIC_COLS: list[tuple[str, str | None, int]] = [
    ("accuracy", "acc %", 1), ("logit_l2", None, 2), ("kl", None, 3),
    ("saliency_similarity", None, 2), ("effective_invariance", None, 2), ("nu", "ν", 3)]
"""Table 1's columns: (stored metric, header, decimals). A header of None is the metric's
short name and better direction from the metric registry (``LI ↓``, ``SI ↑``)."""
SUMMARY_METRICS = {"accuracy", "logit_l2", "kl", "effective_invariance", "saliency_similarity",
                   "nu", "epochs_run", "val_accuracy"}
METHOD_ORDER = {"wt": 0, "da": 1, "ir": 2}


def _paper(group: str, method: str, metric: str) -> str:
    v = PAPER_MNIST.get((group, method), {}).get(metric)
    if v is None:
        return ""
    return f"{v[0]:.2f}" + (f" ± {v[1]:.2f}" if v[1] is not None else "")


def summary_rows(store: ResultsStore) -> list[dict[str, Any]]:
    rows = []
    for r in store.rows("genuine"):
        c = r["config"]
        if "n_si" in c and r["metric"] in SUMMARY_METRICS:
            value = r["value"] * (100.0 if r["metric"] == "accuracy" else 1.0)
            rows.append({"dataset": c["data"]["dataset"], "group": c["train"]["group"],
                         "method": c["train"]["method"], "seed": c["train"]["seed"],
                         "metric": r["metric"], "value": value})
    return aggregate_seeds(rows, ["dataset", "group", "method"])


def table_frame(summary: list[dict[str, Any]], dataset: str) -> pd.DataFrame:
    by = {(s["group"], s["method"], s["metric"]): s for s in summary if s["dataset"] == dataset}
    keys = sorted({(g, m) for g, m, _ in by}, key=lambda k: (k[0], METHOD_ORDER.get(k[1], 9)))
    out = []
    for g, m in keys:
        row: dict[str, Any] = {"group": g.upper(), "method": m.upper()}
        for metric, header, digits in METRIC_COLS:
            col = column_label(metric) if header is None else header
            s = by.get((g, m, metric))
            row[col] = fmt_pm(s["mean"], s["std"], s["n_seeds"], digits) if s else "–"
            if dataset == "mnist" and metric in PAPER_METRICS:
                row[f"paper {col}"] = _paper(g, m, metric)
        s = by.get((g, m, "accuracy"))
        row["seeds"] = s["n_seeds"] if s else 0
        out.append(row)
    return pd.DataFrame(out)


def _fig_cells(store: ResultsStore) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for c in store.cells("genuine"):
        fig = (c.get("extra") or {}).get("figures") if "n_si" in c["config"] else None
        if fig:
            cfg = c["config"]
            out[(cfg["data"]["dataset"], cfg["train"]["group"], cfg["train"]["method"])] = fig
    return out


def _save(fig: Any, out: Path, stem: str, dpi: int = 130) -> list[str]:
    """Write ``fig`` as ``out/stem.png`` and ``.svg`` (atomically) and close it
    (:func:`invlab.report.figures.save`: text ≥ 9 pt)."""
    return _save_figure(fig, out, stem, dpi)


def figure_tsne(figs: dict[tuple[str, str, str], dict[str, Any]], dataset: str, group: str,
                out: Path) -> list[str]:
    from sklearn.manifold import TSNE  # lazy: ~1 s to import, only this figure needs it
    from threadpoolctl import threadpool_limits  # lazy: scikit-learn's, beside it

    methods = [m for m in ("da", "ir", "wt") if (dataset, group, m) in figs]
    if not methods:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4.2), squeeze=False)
    for ax, m in zip(axes[0], methods):
        d = figs[(dataset, group, m)]
        z = np.asarray(d["features"], dtype=np.float64)
        z = z + 1e-6 * np.random.default_rng(0).standard_normal(z.shape)  # WT orbits coincide
        # one thread: a few hundred points need no parallelism, and OpenMP barriers on a
        # busy machine (e.g. beside a running study) made this 50-100x slower
        with threadpool_limits(limits=1):
            emb = TSNE(n_components=2, perplexity=min(30, len(z) // 4), random_state=0,
                       init="pca").fit_transform(z)
        el, sm = np.asarray(d["feature_element"]), np.asarray(d["feature_sample"])
        for i in np.unique(sm)[:15]:
            pts = emb[sm == i]
            ax.plot(pts[:, 0], pts[:, 1], "-", color="0.35", lw=0.7, alpha=0.8, zorder=3)
        for e in np.unique(el):
            ax.scatter(emb[el == e, 0], emb[el == e, 1], s=14, label=f"g{e}", zorder=2)
        ax.set_title(f"{m.upper()} ({group.upper()}, {dataset})")
        ax.set_xticks([])
        ax.set_yticks([])
    # below the panels, so it covers no point
    fig.legend(*axes[0][0].get_legend_handles_labels(), title="group element", fontsize=9,
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=8, frameon=False)
    fig.suptitle("Fig. 2: t-SNE of penultimate features of each sample's orbit "
                 "(grey lines join one sample's transformed copies)", fontsize=10)
    return _save(fig, out, f"fig2_tsne_{source_label(dataset)}_{group}")


def figure_saliency(figs: dict[tuple[str, str, str], dict[str, Any]], dataset: str, group: str,
                    out: Path) -> list[str]:
    methods = [m for m in ("da", "ir") if (dataset, group, m) in figs]
    if not methods:
        return []
    plt = pyplot()
    sal = {m: np.asarray(figs[(dataset, group, m)]["saliency"]) for m in methods}  # [k,n,H,W]
    k, n = sal[methods[0]].shape[:2]
    fig, axes = plt.subplots(n, k * len(methods), figsize=(1.3 * k * len(methods), 1.45 * n),
                             squeeze=False)
    for j, m in enumerate(methods):
        d = figs[(dataset, group, m)]
        digits = d.get("saliency_images")
        row_si = d.get("saliency_si")
        for i in range(n):
            for e in range(k):
                ax = axes[i][j * k + e]
                if digits is not None:  # the (untransformed) digit beneath its realigned map
                    ax.imshow(np.asarray(digits[i]), cmap="gray", zorder=1)
                    smap = np.ma.masked_where(sal[m][e, i] <= 0, sal[m][e, i])
                    ax.imshow(smap, cmap="autumn", alpha=0.85, zorder=2)
                else:
                    ax.imshow(sal[m][e, i], cmap="inferno")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{m.upper()} g{e}", fontsize=9)
                if e == 0 and row_si is not None:
                    ax.set_ylabel(f"SI {row_si[i]:.2f}", fontsize=9)
    fig.suptitle(f"Fig. 3: saliency (orange) over the {group.upper()} orbit, realigned by g⁻¹, "
                 f"on the digit ({dataset}; rows = samples, SI per sample)", fontsize=10)
    return _save(fig, out, f"fig3_saliency_{source_label(dataset)}_{group}")


def figure_nu_search(store: ResultsStore, out: Path, study: str = "genuine",
                     stem: str = "nu_search") -> list[str]:
    """SI(ν) and accuracy(ν) of every ν search stored under ``study``."""
    cells = [c for c in store.cells(study) if (c.get("extra") or {}).get("trials")]
    if not cells:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for c in cells:
        tr = sorted(c["extra"]["trials"], key=lambda t: t["nu"])
        lab = f"{c['config']['data']['dataset']}/{c['config']['train']['group']}"
        if study != "genuine":
            lab += f"/{c['config']['train']['regularizer']}"
        nu = [t["nu"] for t in tr]
        line, = axes[0].plot(nu, [t["si"] for t in tr], "o-", label=lab)
        axes[1].plot(nu, [100 * t["accuracy"] for t in tr], "o-", label=lab)
        chosen = c["extra"].get("chosen_nu")
        if chosen is None:  # stores written before the chosen ν was recorded in extra
            chosen = next((t["nu"] for t in tr if t["si"] >= c["config"]["target"]), None)
        for ax, key, scale in ((axes[0], "si", 1), (axes[1], "accuracy", 100)):
            t = next((t for t in tr if t["nu"] == chosen), None)
            if t is not None:
                ax.plot([chosen], [scale * t[key]], marker="*", ms=15, color=line.get_color(),
                        markeredgecolor="k", zorder=5, ls="none")
    target = cells[0]["config"]["target"]
    axes[0].axhline(target, color="k", ls="--", lw=0.8)
    axes[0].set(xscale="log", xlabel="ν", ylabel=axis_label("validation SI", "si"),
                title="SI(ν)")
    axes[1].set(xscale="log", xlabel="ν", ylabel=axis_label("validation accuracy %", "accuracy"),
                title="accuracy(ν)")
    axes[0].plot([], [], marker="*", ms=10, color="0.5", markeredgecolor="k", ls="none",
                 label="chosen ν")
    # one legend below both panels, off the curves
    fig.tight_layout()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(cells) + 1), fontsize=9,
               frameon=False)
    return _save(fig, out, stem)


GENUINE_INTRO = (
    "Criteria on means over seeds. WT exactly invariant / top accuracy: weight tying makes "
    "the model invariant by construction (zero LI and DI, identical saliency) at no accuracy "
    "cost.",
    "DA: augmentation makes predictions agree (low DI) without making the logits or the "
    "explanations invariant (LI large, SI below IR's): not genuine invariance.",
    "IR: the invariance regularizer gives near-zero LI/DI and invariant saliency (test SI >= "
    "0.95, ν tuned on validation SI) but costs accuracy against DA.")


def claims(summary: list[dict[str, Any]], n_classes: int = 9) -> ClaimSet:
    """M23's Table-1 claims per dataset and group: six records each (WT exact, WT top
    accuracy, DA not genuine, IR LI/DI ≈ 0, IR test SI ≥ 0.95, IR accuracy cost). They cannot
    be evaluated without all three methods, with a NaN statistic, or when a model is at
    chance (``n_classes``: 9, class 9 is excluded); models below
    :data:`~invlab.report.claims.ACCURACY_FLOOR` are flagged."""
    by = {(s["dataset"], s["group"], s["method"], s["metric"]): s["mean"] for s in summary}
    out: list[Claim] = []
    for d, g in sorted({(s["dataset"], s["group"]) for s in summary}):
        v = lambda m, k: by.get((d, g, m, k), float("nan"))  # noqa: E731
        tag = f"{d}/{g.upper()}"
        have = [m for m in ("wt", "da", "ir") if (d, g, m, "accuracy") in by]
        reason = ("" if len(have) == 3 else "needs WT, DA and IR models of this dataset and "
                  f"group; found {', '.join(m.upper() for m in have) or 'none'}")
        acc = {m: v(m, "accuracy") for m in ("wt", "da", "ir")}
        gate, caveat = accuracy_gate({m.upper(): a / 100 for m, a in acc.items()}, n_classes)
        reason = reason or gate
        kw = {"scope": tag, "reason": reason, "caveat": caveat}
        wt = {"WT LI": v("wt", "logit_l2"), "WT DI": v("wt", "kl"),
              "WT SI": v("wt", "saliency_similarity")}
        out.append(decide("WT is exactly invariant", "LI < 1e-3, DI < 1e-4, SI > 0.999", wt,
                          wt["WT LI"] < 1e-3 and wt["WT DI"] < 1e-4 and wt["WT SI"] > 0.999,
                          **kw))
        accs = {f"{m.upper()} accuracy %": a for m, a in acc.items()}
        out.append(decide("WT has the top accuracy", "WT accuracy ≥ DA's and IR's", accs,
                          acc["wt"] >= max(acc["da"], acc["ir"]), **kw))
        da = {"DA DI": v("da", "kl"), "DA LI": v("da", "logit_l2"), "IR LI": v("ir", "logit_l2"),
              "DA SI": v("da", "saliency_similarity"), "IR SI": v("ir", "saliency_similarity")}
        out.append(decide("DA is not genuinely invariant: low DI yet large LI and lower SI",
                          "DA DI < 0.5, DA LI > 10x IR's, DA SI < IR's", da,
                          da["DA LI"] > 10 * max(da["IR LI"], 1e-9) and da["DA SI"] < da["IR SI"]
                          and da["DA DI"] < 0.5, **kw))
        ir = {"IR LI": v("ir", "logit_l2"), "IR DI": v("ir", "kl")}
        out.append(decide("IR makes LI and DI ≈ 0", "IR LI < 0.1, IR DI < 0.01", ir,
                          ir["IR LI"] < 0.1 and ir["IR DI"] < 0.01, **kw))
        si = {"IR test SI": v("ir", "saliency_similarity")}
        out.append(decide("IR has invariant saliency", "IR test SI ≥ 0.95", si,
                          si["IR test SI"] >= 0.95, **kw))
        cost = {"IR accuracy %": acc["ir"], "DA accuracy %": acc["da"]}
        out.append(decide("IR costs accuracy against DA", "IR accuracy < DA accuracy", cost,
                          acc["ir"] < acc["da"], **kw))
    return ClaimSet("Claims of M23 Table 1", tuple(out), GENUINE_INTRO)


def build_report(out_dir: str | Path) -> list[str]:
    """Rebuild summary.json, Table 1 (md/csv/json) and the figures from the store alone."""
    out = Path(out_dir)
    store = ResultsStore(out / "store.sqlite")
    summary = summary_rows(store)
    written = []
    atomic_write_json(out / "summary.json", summary)
    written.append(str(out / "summary.json"))
    datasets = sorted({s["dataset"] for s in summary})
    md_parts = []
    for d in datasets:
        df = table_frame(summary, d)
        title = f"Transforming-{'MNIST' if d == 'mnist' else d} (mean ± std over seeds)"
        written += write_table(df, out, f"table1_{source_label(d)}", title)
        md_parts.append((out / f"table1_{source_label(d)}.md").read_text())
    written += write_claims(out, claims(summary))
    figs = _fig_cells(store)
    for d, g in sorted({(k[0], k[1]) for k in figs}):
        written += figure_tsne(figs, d, g, out)
        written += figure_saliency(figs, d, g, out)
    written += figure_nu_search(store, out)
    return written


def print_table(out_dir: str | Path) -> str:
    out = Path(out_dir)
    parts = [p.read_text() for p in sorted(out.glob("table1_*.md"))]
    cs = read_claims(out)
    if cs is not None:
        parts.append(render_text(cs))
    elif (out / "claims.md").exists():
        parts.append((out / "claims.md").read_text())
    return "\n".join(parts)
