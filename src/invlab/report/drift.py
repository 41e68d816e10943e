"""Report of the drift study: Figure 4 (DI and accuracy ratio over β) and tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd  # noqa: E402

from invlab.report.claims import (  # noqa: E402
    ClaimSet,
    accuracy_gate,
    decide,
    read_claims,
    render_text,
    write_claims,
)
from invlab.report.figures import pyplot  # noqa: E402
from invlab.report.genuine import _save  # noqa: E402
from invlab.report.metric_labels import axis_label, comparison, meets, short_name  # noqa: E402
from invlab.report.tables import aggregate_seeds, fmt_pm, write_table  # noqa: E402
from invlab.sweep import ResultsStore  # noqa: E402
from invlab.sweep.io import atomic_write_json  # noqa: E402

METRICS = {"kl", "logit_l2", "saliency_similarity", "accuracy", "accuracy_ratio"}
COLORS = {"wt": "tab:green", "da": "tab:red", "ir": "tab:blue"}


def summary_rows(store: ResultsStore) -> list[dict[str, Any]]:
    rows = []
    for r in store.rows("drift"):
        c = r["config"]
        if r["metric"] in METRICS:
            rows.append({"group": c["train"]["group"], "method": c["train"]["method"],
                         "mode": c["mode"], "beta": float(c["beta"]),
                         "seed": c["train"]["seed"], "metric": r["metric"],
                         "value": r["value"]})
    return aggregate_seeds(rows, ["group", "method", "mode", "beta"])


MARKERS = {"da": ("^", 4, 2), "ir": ("o", 3, 3), "wt": ("s", 7, 4)}  # marker, size, zorder
FIG4_CURVES = (("kl", "-", "DI"), ("accuracy_ratio", "--", "acc ratio"))
"""Fig. 4's two curves per method: (stored metric, line style, legend name); the first on the
left axis, the second on the right."""
TABLES = (("kl", short_name("kl")), ("accuracy_ratio", "accuracy ratio"),
          ("logit_l2", short_name("logit_l2")),
          ("saliency_similarity", short_name("saliency_similarity")))
"""The tables per drift reading: (stored metric of ``drift_<mode>_<metric>``, its name)."""


def figure4(summary: list[dict[str, Any]], mode: str, out: Path) -> list[str]:
    df = pd.DataFrame([s for s in summary if s["mode"] == mode])
    if df.empty:
        return []
    groups = sorted(df["group"].unique())
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(5.4 * len(groups), 4.0), squeeze=False)
    fig.subplots_adjust(wspace=0.55)
    for ax, g in zip(axes[0], groups):
        ax2 = ax.twinx()
        for m in ("wt", "da", "ir"):
            for (metric, ls, name), axis in zip(FIG4_CURVES, (ax, ax2)):
                d = df[(df.group == g) & (df.method == m) & (df.metric == metric)].sort_values(
                    "beta")
                if d.empty:
                    continue
                # WT is drawn last, hollow and larger, so it stays visible where it lies on
                # IR's line (both DI = 0 at every β)
                mk, ms, z = MARKERS[m]
                axis.plot(d.beta, d["mean"], ls, marker=mk, ms=ms, color=COLORS[m], zorder=z,
                          mfc="none" if m == "wt" else COLORS[m], lw=2.2 if m == "wt" else 1.2,
                          alpha=0.9, label=f"{m.upper()} {name}")
                axis.fill_between(d.beta, d["mean"] - d["std"], d["mean"] + d["std"],
                                  color=COLORS[m], alpha=0.12)
        ax.set(title=f"{g.upper()} ({mode})", xlabel="drift β (MNIST → FMNIST)",
               ylabel=axis_label("DI = KL (solid)", FIG4_CURVES[0][0]))
        ax2.set_ylabel(axis_label("Acc(D(β)) / Acc(D1) (dashed)", FIG4_CURVES[1][0]))
        ax2.set_ylim(0, 1.05)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLORS[m], marker=MARKERS[m][0],
                      mfc="none" if m == "wt" else COLORS[m], label=m.upper())
               for m in ("wt", "da", "ir")]
    handles += [Line2D([], [], color="k", ls="-", label="DI (left axis)"),
                Line2D([], [], color="k", ls="--", label="accuracy ratio (right axis)")]
    fig.legend(handles=handles, loc="upper center", ncol=5, fontsize=9,
               bbox_to_anchor=(0.5, 1.08))
    fig.suptitle("Fig. 4: invariance error and accuracy ratio under drift", y=1.12, fontsize=10)
    return _save(fig, out, f"fig4_drift_{mode}")


def table(summary: list[dict[str, Any]], mode: str, metric: str) -> pd.DataFrame:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in summary:
        if s["mode"] != mode or s["metric"] != metric:
            continue
        row = rows.setdefault((s["group"], s["method"]), {"group": s["group"].upper(),
                                                          "method": s["method"].upper()})
        row[f"β={s['beta']:.1f}"] = fmt_pm(s["mean"], s["std"], s["n_seeds"], 3)
    return pd.DataFrame([rows[k] for k in sorted(rows)])


DI_LOW = 0.05
"""DI (nats) below which a model's predictions count as invariant (the audit's threshold)."""


def claims(summary: list[dict[str, Any]], n_classes: int = 9) -> ClaimSet:
    """M23 Fig. 4 (studies.md §2), per drift reading and group: DA's DI rises with β (at
    β = 1 at least twice its β = 0 value); WT's and IR's DI stay low (≤ :data:`DI_LOW` at
    every β). Cannot be evaluated without the models or β = 0 and 1, or when a model is at
    chance on D1 (β = 0; 9 classes)."""
    by = {(r["mode"], r["group"], r["method"], r["metric"], r["beta"]): r["mean"]
          for r in summary}
    out = []
    for mode, g in sorted({(r["mode"], r["group"]) for r in summary}):
        betas = sorted({r["beta"] for r in summary if r["mode"] == mode and r["group"] == g})
        v = lambda m, k, b: by.get((mode, g, m, k, b), float("nan"))  # noqa: E731
        have = [m for m in ("wt", "da", "ir") if (mode, g, m, "kl", 0.0) in by]
        reason = ("" if len(have) == 3 and betas[-1:] == [1.0] else
                  "needs WT, DA and IR at β = 0 and β = 1; found "
                  + (", ".join(m.upper() for m in have) or "none"))
        gate, caveat = accuracy_gate({m.upper(): v(m, "accuracy", 0.0) for m in have}, n_classes)
        kw = {"scope": f"{mode}/{g.upper()}", "reason": reason or gate, "caveat": caveat}
        d0, d1 = v("da", "kl", 0.0), v("da", "kl", 1.0)
        out.append(decide("DA's DI rises with the drift", "DA DI(β=1) ≥ 2 × DA DI(β=0)",
                          {"DA DI β=0": d0, "DA DI β=1": d1}, d1 >= 2 * d0, **kw))
        worst = {f"max DI {m.upper()}": max((v(m, "kl", b) for b in betas), default=float("nan"))
                 for m in ("wt", "ir")}
        out.append(decide("WT's and IR's DI stay low under drift",
                          f"max over β of WT's and IR's DI {comparison('kl')} {DI_LOW}", worst,
                          all(meets("kl", x, DI_LOW) for x in worst.values()), **kw))
    return ClaimSet("Claims of M23 Fig. 4 (reliability under drift)", tuple(out),
                    ("Criteria on means over seeds; DI = KL(p(x) ‖ p(T·x)) in nats.",))


def build_report(out_dir: str | Path) -> list[str]:
    out = Path(out_dir)
    summary = summary_rows(ResultsStore(out / "store.sqlite"))
    atomic_write_json(out / "summary.json", summary)
    written = [str(out / "summary.json")]
    for mode in sorted({s["mode"] for s in summary}):
        written += figure4(summary, mode, out)
        for metric, name in TABLES:
            written += write_table(table(summary, mode, metric), out, f"drift_{mode}_{metric}",
                                   f"{name} under drift ({mode}), mean ± std over seeds")
    written += write_claims(out, claims(summary))
    return written


def print_tables(out_dir: str | Path) -> str:
    out = Path(out_dir)
    cs = read_claims(out)
    return "\n".join([p.read_text() for p in sorted(out.glob("drift_*_kl.md")) +
                      sorted(out.glob("drift_*_accuracy_ratio.md"))]
                     + ([render_text(cs)] if cs is not None else []))
