"""Report of the spectral study: Figure 5 (σ_max per regularizer vs DA) and a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np  # noqa: E402
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
from invlab.report.genuine import _save, figure_nu_search  # noqa: E402
from invlab.report.metric_labels import axis_label, column_label  # noqa: E402
from invlab.report.tables import aggregate_seeds, fmt_pm, write_table  # noqa: E402
from invlab.sweep import ResultsStore  # noqa: E402
from invlab.sweep.io import atomic_write_json  # noqa: E402

ORDER = [("da", "none"), ("ir", "kl"), ("ir", "logit_l2"), ("ir", "logit_l2_normalized"),
         ("ir", "logit_l2_normalized_detached")]
LABEL = {("da", "none"): "DA", ("ir", "kl"): "IR: KL (DI)", ("ir", "logit_l2"): "IR: L2 (LI)",
         ("ir", "logit_l2_normalized"): "IR: normalized L2 (as defined)",
         ("ir", "logit_l2_normalized_detached"): "IR: normalized L2, detached ‖f(x)‖² (variant)"}


def summary_rows(store: ResultsStore) -> list[dict[str, Any]]:
    rows = []
    for r in store.rows("spectral"):
        t = r["config"]["train"]
        reg = t["regularizer"] if t["method"] == "ir" else "none"
        rows.append({"group": t["group"], "method": t["method"], "regularizer": reg,
                     "seed": t["seed"], "metric": r["metric"], "value": r["value"] * (100.0 if r["metric"] ==
                                                                   "accuracy" else 1.0)})
    return aggregate_seeds(rows, ["group", "method", "regularizer"])


def figure5(summary: list[dict[str, Any]], out: Path) -> list[str]:
    df = pd.DataFrame(summary)
    if df.empty:
        return []
    groups = sorted(df.group.unique())
    keys = [k for k in ORDER if ((df.method == k[0]) & (df.regularizer == k[1])).any()]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(groups) * len(keys) / 2, 3.8))
    w = 0.8 / len(keys)
    for i, k in enumerate(keys):
        d = df[(df.method == k[0]) & (df.regularizer == k[1]) & (df.metric == "sigma_max")]
        d = d.set_index("group").reindex(groups)
        several = bool((d["n_seeds"].fillna(1) > 1).any())  # no error bar for one seed
        ax.bar(np.arange(len(groups)) + (i - (len(keys) - 1) / 2) * w, d["mean"], w,
               yerr=d["std"] if several else None, capsize=3, label=LABEL[k])
    ax.set_xticks(np.arange(len(groups)), [g.upper() for g in groups])
    ax.set_ylabel(axis_label("σ_max(J) of the input–logit Jacobian", "sigma_max"))
    n = int(df[df.metric == "sigma_max"].n_seeds.max())
    ax.set_title("Fig. 5: invariance-induced spectral decay (Transforming-MNIST; "
                 + (f"mean ± std over {n} seeds)" if n > 1 else "one seed)"), fontsize=10)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, out, "fig5_spectral")


def table(summary: list[dict[str, Any]]) -> pd.DataFrame:
    by = {(s["group"], s["method"], s["regularizer"], s["metric"]): s for s in summary}
    rows = []
    for g in sorted({s["group"] for s in summary}):
        for k in ORDER:
            s = by.get((g, *k, "sigma_max"))
            if s is None:
                continue
            a, nu = by.get((g, *k, "accuracy")), by.get((g, *k, "nu"))
            rows.append({"group": g.upper(), "model": LABEL[k],
                         column_label("sigma_max", "σ_max"): fmt_pm(s["mean"], s["std"],
                                                                    s["n_seeds"], 2),
                         "acc %": fmt_pm(a["mean"], a["std"], a["n_seeds"], 1) if a else "–",
                         "ν": f"{nu['mean']:.3g}" if nu else "–", "seeds": s["n_seeds"]})
    return pd.DataFrame(rows)


CLEARLY_SMALLER = 0.8
"""σ_max of an IR model is "clearly smaller" than DA's when below 0.8 × DA's."""


def claims(summary: list[dict[str, Any]], n_classes: int = 9) -> ClaimSet:
    """M23 Fig. 5 (studies.md §3), per group and IR regularizer: σ_max clearly smaller than
    DA's, and lower accuracy. Cannot be evaluated without a DA model of the group, with a NaN
    mean, or when a model is at chance (9 classes: class 9 is excluded)."""
    by = {(r["group"], r["method"], r["regularizer"], r["metric"]): r["mean"] for r in summary}
    out = []
    for g in sorted({r["group"] for r in summary}):
        da_sig = by.get((g, "da", "none", "sigma_max"), float("nan"))
        da_acc = by.get((g, "da", "none", "accuracy"), float("nan"))
        regs = sorted({r["regularizer"] for r in summary if r["group"] == g
                       and r["method"] == "ir"})
        for reg in regs:
            sig = by.get((g, "ir", reg, "sigma_max"), float("nan"))
            acc = by.get((g, "ir", reg, "accuracy"), float("nan"))
            reason = "" if (g, "da", "none", "sigma_max") in by else "no DA model of this group"
            gate, caveat = accuracy_gate({"DA": da_acc / 100, f"IR {reg}": acc / 100}, n_classes)
            kw = {"scope": f"{g.upper()}/{reg}", "reason": reason or gate, "caveat": caveat}
            out.append(decide(f"IR ({reg}) has a clearly smaller σ_max than DA",
                              f"IR σ_max < {CLEARLY_SMALLER} × DA σ_max",
                              {"IR σ_max": sig, "DA σ_max": da_sig},
                              sig < CLEARLY_SMALLER * da_sig, **kw))
            out.append(decide(f"IR ({reg}) has lower accuracy than DA", "IR accuracy < DA's",
                              {"IR accuracy %": acc, "DA accuracy %": da_acc}, acc < da_acc, **kw))
    return ClaimSet("Claims of M23 Fig. 5 (invariance-induced spectral decay)", tuple(out),
                    ("Criteria on means over seeds; every IR variant tuned to SI ≥ 0.95.",))


def build_report(out_dir: str | Path) -> list[str]:
    out = Path(out_dir)
    summary = summary_rows(ResultsStore(out / "store.sqlite"))
    atomic_write_json(out / "summary.json", summary)
    written = [str(out / "summary.json")]
    written += figure5(summary, out)
    written += figure_nu_search(ResultsStore(out / "store.sqlite"), out, "spectral-tune",
                                "nu_search_spectral")
    written += write_table(table(summary), out, "table_spectral",
                           "σ_max of the input Jacobian, accuracy and tuned ν (mean ± std)")
    written += write_claims(out, claims(summary))
    return written


def print_table(out_dir: str | Path) -> str:
    cs = read_claims(out_dir)
    return (Path(out_dir) / "table_spectral.md").read_text() + (
        "\n" + render_text(cs) if cs is not None else "")
