"""Report of the generalization study (D22): tables, statistics, claims and figures.

Everything is rebuilt from ``DIR/store.sqlite`` (``invlab report DIR``):

- ``models.csv``: one row per model × test set × measure (``value``; accuracy is a measure);
- ``summary.json``: zoo size; per test set and measure the statistics of accuracy against
  the measure (Spearman, Pearson, Kendall, slope, intercept, R², bootstrap 95 % CIs, and the
  same on the probit scale); measure ranking per test set; per-subgroup statistics;
  dataset-centric statistics; leave-one-shift-out estimation MAE; selection regret;
  data-vs-augmentation effects; the claims check;
- ``ranking.csv``/``.md``, ``claims.md``; figures ``scatter_ei``, ``grid_spearman``,
  ``ranking`` (PNG + SVG).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from invlab.sweep.io import atomic_write_json, atomic_write_text

STUDY = "generalization"
STRONG_RHO = 0.8
INVARIANCE_MEASURES = ("ei", "agreement", "neg_js", "neg_kl", "neg_li")
LABELS = {"ei": "EI", "agreement": "agreement", "neg_js": "−JS", "neg_kl": "−KL",
          "neg_li": "−LI", "confidence": "avg. confidence"}
SUBGROUPS = {
    "all": lambda d: np.ones(len(d), bool),
    "no_rotation_aug": lambda d: ~d["augment"].isin(["rotate", "r4"]).to_numpy(),
    "rotation_aug": lambda d: d["augment"].isin(["rotate", "r4"]).to_numpy(),
    "mlp": lambda d: (d["family"] == "mlp").to_numpy(),
    "cnn": lambda d: (d["family"] == "cnn").to_numpy(),
    "vit": lambda d: (d["family"] == "vit").to_numpy(),
}


def load_long(out: str | Path) -> pd.DataFrame:
    """The study's results as a long table (model × test set × measure)."""
    from invlab.sweep import ResultsStore

    out = Path(out)
    store = ResultsStore(out / "store.sqlite")
    keep, order = None, []
    if (out / "current_cells.json").exists():
        cur = json.loads((out / "current_cells.json").read_text())
        keep, order = set(cur["cells"]), list(cur["test_sets"])
    info = {c["cell_id"]: c["extra"] or {} for c in store.cells(STUDY)
            if keep is None or c["cell_id"] in keep}
    recs = []
    for r in store.rows(STUDY):
        if r["cell_id"] not in info:
            continue
        test_set, _, measure = r["metric"].partition("|")
        e = info[r["cell_id"]]
        recs.append({"model_id": e.get("model_id", r["cell_id"]), "family": e.get("family", ""),
                     "arch": e.get("arch", ""), "augment": e.get("augment", ""),
                     "n_train": e.get("n_train"), "epochs": e.get("epochs"),
                     "seed": e.get("seed"), "test_set": test_set, "measure": measure,
                     "value": r["value"], "n_images": r.get("n")})
    if not recs:
        raise ValueError(f"{out}: no generalization results in the store yet")
    df = pd.DataFrame.from_records(recs)
    sets = order + sorted(set(df.test_set) - set(order))
    df["test_set"] = pd.Categorical(df["test_set"], categories=sets, ordered=True)
    return df.sort_values(["test_set", "model_id", "measure"], kind="stable").reset_index(drop=True)


def _wide(long: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{test_set: DataFrame[model_id × measure]}`` with model attributes as columns."""
    attrs = long.drop_duplicates("model_id").set_index("model_id")[
        ["family", "arch", "augment", "n_train", "epochs", "seed"]]
    out = {}
    for ts, g in long.groupby("test_set", sort=True, observed=True):
        w = g.pivot_table(index="model_id", columns="measure", values="value", aggfunc="first")
        out[str(ts)] = attrs.join(w, how="inner")
    return out


def _measures(wide: dict[str, pd.DataFrame]) -> list[str]:
    cols = set().union(*[set(w.columns) for w in wide.values()])
    extra = sorted(c for c in cols if c.startswith("ei_"))
    return [m for m in (*INVARIANCE_MEASURES, *extra, "confidence") if m in cols]


def _stats(x: Any, y: Any, n_boot: int, seed: int) -> dict[str, Any]:
    """:func:`invlab.stats.correlate` of accuracy ``y`` against a measure ``x``, plus the
    same on the probit scale of accuracy (``"probit"``)."""
    from invlab.stats import correlate

    st = correlate(x, y, n_boot=n_boot, seed=seed)
    pr = correlate(x, y, n_boot=n_boot, seed=seed, probit_y=True)
    st["probit"] = {k: pr[k] for k in ("pearson", "r2", "slope", "intercept",
                                       "pearson_ci", "r2_ci") if k in pr}
    return st


def model_centric(wide: dict[str, pd.DataFrame], n_boot: int, seed: int) -> dict[str, Any]:
    """Per test set and measure: statistics of accuracy against the measure, across models."""
    out: dict[str, Any] = {}
    for ts, w in wide.items():
        out[ts] = {m: _stats(w[m], w["accuracy"], n_boot, seed) for m in _measures(wide)
                   if m in w and w[m].notna().sum() >= 3}
    return out


def ranking(stats: dict[str, Any]) -> pd.DataFrame:
    """Measures ranked by correlation strength |Spearman ρ| per test set (1 = strongest);
    the signed ρ is kept, since a measure can track accuracy the wrong way round."""
    rows = []
    for ts, per in stats.items():
        order = sorted(per, key=lambda m: -abs(np.nan_to_num(per[m]["spearman"], nan=0.0)))
        for rank, m in enumerate(order, 1):
            s = per[m]
            ci = s.get("spearman_ci", [math.nan, math.nan])
            rows.append({"test_set": ts, "rank": rank, "measure": m,
                         "abs_spearman": round(abs(s["spearman"]), 3),
                         "spearman": round(s["spearman"], 3),
                         "spearman_ci": f"[{ci[0]:.2f}, {ci[1]:.2f}]",
                         "pearson": round(s["pearson"], 3), "kendall": round(s["kendall"], 3),
                         "r2": round(s["r2"], 3), "n_models": s["n"]})
    return pd.DataFrame(rows)


def subgroups(wide: dict[str, pd.DataFrame], n_boot: int, seed: int) -> dict[str, Any]:
    """The model-centric statistics of every measure per zoo subgroup (≥ 5 models) and
    test set."""
    out: dict[str, Any] = {}
    ms = _measures(wide)
    for name, sel in SUBGROUPS.items():
        per: dict[str, Any] = {}
        for ts, w in wide.items():
            ws = w[sel(w)]
            if len(ws) < 5:
                continue
            per[ts] = {m: _stats(ws[m], ws["accuracy"], n_boot, seed)
                       for m in ms if m in ws and ws[m].notna().sum() >= 3}
        if per:
            out[name] = {"n_models": int(sel(next(iter(wide.values()))).sum()), "per_test_set": per}
    return out


def dataset_centric(wide: dict[str, pd.DataFrame], n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Per model, across test sets: statistics of accuracy against each measure (ρ, r, τ,
    line, R²); per measure their median and quartiles over models, the share with ρ ≥
    ``STRONG_RHO``, and a bootstrap 95 % CI (over models) of the median ρ. The top-level
    ``spearman_*``/``share_strong``/``per_model`` keys are EI's."""
    from invlab.stats import correlate

    sets = list(wide)
    if len(sets) < 3:
        return {"note": f"needs >= 3 test sets, found {len(sets)}"}
    per_measure: dict[str, Any] = {}
    for m in _measures(wide):
        if not all(m in wide[t] for t in sets):
            continue
        per = {}
        for mid in wide[sets[0]].index:
            x = [wide[t].at[mid, m] if mid in wide[t].index else np.nan for t in sets]
            y = [wide[t].at[mid, "accuracy"] if mid in wide[t].index else np.nan for t in sets]
            try:
                c = correlate(x, y, n_boot=0)
            except ValueError:
                continue
            per[mid] = {k: c[k] for k in ("spearman", "pearson", "kendall", "slope",
                                          "intercept", "r2")}
        rho = np.array([v["spearman"] for v in per.values()], float)
        rho = rho[np.isfinite(rho)]
        summ: dict[str, Any] = {"n_models": len(per)}
        for k in ("spearman", "pearson", "kendall", "r2"):
            v = np.array([d[k] for d in per.values()], float)
            v = v[np.isfinite(v)]
            summ[f"{k}_median"] = float(np.median(v)) if len(v) else math.nan
            summ[f"{k}_quartiles"] = [float(q) for q in np.quantile(v, [0.25, 0.75])] \
                if len(v) else []
        summ["share_strong"] = float((rho >= STRONG_RHO).mean()) if len(rho) else math.nan
        if len(rho) >= 3 and n_boot > 0:
            idx = np.random.default_rng(seed).integers(0, len(rho), size=(n_boot, len(rho)))
            meds = np.median(rho[idx], axis=1)
            summ["spearman_median_ci"] = [float(q) for q in np.quantile(meds, [0.025, 0.975])]
        summ["per_model"] = per
        per_measure[m] = summ
    ei = per_measure.get("ei", {})
    return {"test_sets": sets, "n_models": ei.get("n_models", 0),
            "spearman_median": ei.get("spearman_median", math.nan),
            "spearman_quartiles": ei.get("spearman_quartiles", []),
            "share_strong": ei.get("share_strong", math.nan),
            "per_model": {k: {"spearman": v["spearman"], "pearson": v["pearson"]}
                          for k, v in ei.get("per_model", {}).items()},
            "per_measure": per_measure}


def estimation(wide: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Leave-one-shift-out MAE per measure (linear and probit fits) and selection regret."""
    from invlab.stats import leave_one_shift_out, selection_regret

    sets = list(wide)
    common = sorted(set.intersection(*[set(w.index) for w in wide.values()]))
    est: dict[str, Any] = {}
    sel: dict[str, Any] = {}
    for m in _measures(wide):
        if not all(m in wide[t] for t in sets):
            continue
        scores = {t: wide[t].loc[common, m].to_numpy(float) for t in sets}
        acc = {t: wide[t].loc[common, "accuracy"].to_numpy(float) for t in sets}
        if len(sets) >= 2:
            est[m] = {"linear": leave_one_shift_out(scores, acc),
                      "probit": leave_one_shift_out(scores, acc, probit=True)}
        sel[m] = {t: {**selection_regret(scores[t], acc[t]),
                      "chosen_model": common[selection_regret(scores[t], acc[t])["chosen"]]}
                  for t in sets}
        sel[m]["mean_regret"] = float(np.mean([sel[m][t]["regret"] for t in sets]))
    if "confidence" in _measures(wide) and all("confidence" in wide[t] for t in sets):
        # the classic label-free baseline (average confidence = estimated accuracy, no fit)
        err = {t: float(np.mean(np.abs(wide[t].loc[common, "confidence"].to_numpy(float)
                                       - wide[t].loc[common, "accuracy"].to_numpy(float))))
               for t in sets[1:]}
        est["confidence_raw"] = {"mae": float(np.mean(list(err.values()))) if err else math.nan,
                                 "per_set": err,
                                 "note": "estimated accuracy = average confidence (no fit), "
                                         "on the same held-out shifts"}
    return {"estimation": est, "selection": sel}


def effects(wide: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Matched effects of more training data (largest vs smallest ``n_train``, all else
    equal) and of each augmentation (vs ``none``, all else equal) on accuracy and EI,
    averaged over matched pairs, per test set and over all test sets."""
    out: dict[str, Any] = {"per_test_set": {}}
    tot: dict[str, list[float]] = {}
    for ts, w in wide.items():
        w = w.reset_index()
        w["key"] = w["model_id"].str.replace(r"-n\d+-", "-n*-", regex=True)
        res: dict[str, Any] = {}
        for metric in ("accuracy", "ei"):
            if metric not in w or w["n_train"].isna().all():
                continue
            lo, hi = w["n_train"].min(), w["n_train"].max()
            a, b = w[w.n_train == lo].set_index("key"), w[w.n_train == hi].set_index("key")
            both = a.index.intersection(b.index)
            d = (b.loc[both, metric] - a.loc[both, metric]).to_numpy(float)
            res[f"data_{metric}"] = {"delta": float(d.mean()) if len(d) else math.nan,
                                     "pairs": int(len(d)), "n_train": [int(lo), int(hi)]}
            w["akey"] = w["model_id"].str.replace(
                r"-(none|translate|rotate|r4|noise)-", "-*-", regex=True)
            base = w[w.augment == "none"].set_index("akey")
            for aug in sorted(set(w.augment) - {"none"}):
                g = w[w.augment == aug].set_index("akey")
                both = g.index.intersection(base.index)
                d = (g.loc[both, metric] - base.loc[both, metric]).to_numpy(float)
                res[f"aug_{aug}_{metric}"] = {"delta": float(d.mean()) if len(d) else math.nan,
                                              "pairs": int(len(d))}
        out["per_test_set"][ts] = res
        for k, v in res.items():
            tot.setdefault(k, []).append(v["delta"])
    out["mean_over_test_sets"] = {k: float(np.nanmean(v)) for k, v in tot.items()}
    return out


def claims(stats: dict[str, Any], fx: dict[str, Any]) -> list[dict[str, Any]]:
    """The slides' three claims, true or false as measured, with the numbers."""
    sets = list(stats)
    id_set = sets[0] if sets else "id"
    shifts = sets[1:]
    rho = {t: stats[t]["ei"]["spearman"] for t in sets if "ei" in stats[t]}
    strong = [t for t in shifts if rho.get(t, -1) >= STRONG_RHO]
    c1 = rho.get(id_set, -1) >= STRONG_RHO and len(strong) > len(shifts) / 2
    others = [m for m in INVARIANCE_MEASURES if m != "ei"]

    def beats(t: str, m: str, key: Any) -> bool:
        return key(stats[t]["ei"]["spearman"]) >= key(stats[t][m]["spearman"])

    with_ei = [t for t in sets if "ei" in stats[t]]
    wins = [t for t in with_ei if all(beats(t, m, abs) for m in others if m in stats[t])]
    wins_signed = [t for t in with_ei if all(beats(t, m, float) for m in others if m in stats[t])]
    c2 = len(wins) > len(sets) / 2
    beats_conf = [t for t in with_ei if "confidence" in stats[t] and beats(t, "confidence", abs)]
    neg = sorted({m for t in sets for m in others
                  if m in stats[t] and stats[t][m]["spearman"] < 0
                  and abs(stats[t][m]["spearman"]) > abs(stats[t].get("ei", {}).get("spearman", 0))})
    mo = fx.get("mean_over_test_sets", {})
    augs = sorted({k.split("_")[1] for k in mo if k.startswith("aug_")})
    aug_acc = [mo[f"aug_{a}_accuracy"] for a in augs if f"aug_{a}_accuracy" in mo]
    aug_ei = [mo[f"aug_{a}_ei"] for a in augs if f"aug_{a}_ei" in mo]
    d_acc, d_ei = mo.get("data_accuracy", math.nan), mo.get("data_ei", math.nan)
    c3 = bool(aug_acc and aug_ei and d_acc > np.mean(aug_acc) and d_ei > np.mean(aug_ei))
    c3_each = bool(aug_acc and aug_ei and d_acc > max(aug_acc) and d_ei > max(aug_ei))
    fmt = ", ".join(f"{t} {rho[t]:.2f}" for t in sets if t in rho)
    return [
        {"claim": "EI correlates strongly with accuracy on ID and on most shifts "
                  f"(Spearman ρ ≥ {STRONG_RHO} on ID and on more than half of the shifts)",
         "holds": bool(c1), "evidence": f"ρ(EI, acc): {fmt}; strong on {len(strong)}/"
                                        f"{len(shifts)} shifts"},
        {"claim": "EI correlates more strongly than the other invariance measures "
                  "(agreement, −JS, −KL, −LI) on most test sets (|Spearman ρ|)",
         "holds": bool(c2), "evidence": f"EI has the largest |ρ| on {len(wins)}/{len(sets)} "
                                        f"test sets ({', '.join(wins) or 'none'}) and the "
                                        f"highest signed ρ on {len(wins_signed)}/{len(sets)}"
                                        + (f"; stronger but negative (more invariant, less "
                                           f"accurate) somewhere: "
                                           f"{', '.join(LABELS.get(m, m) for m in neg)}"
                                           if neg else "")
                                        + f"; EI's |ρ| ≥ average confidence's on "
                                          f"{len(beats_conf)}/{len(sets)}"},
        {"claim": "More training data raises accuracy and invariance (EI) more than "
                  "augmentation does (mean over test sets, matched pairs)",
         "holds": c3, "evidence": f"data: Δacc {d_acc:+.3f}, ΔEI {d_ei:+.3f}; augmentation "
                                  + "; ".join(f"{a}: Δacc {mo.get(f'aug_{a}_accuracy', math.nan):+.3f}"
                                              f", ΔEI {mo.get(f'aug_{a}_ei', math.nan):+.3f}"
                                              for a in augs)
                                  + f"; exceeds every single augmentation: {c3_each}"},
    ]


def _save(fig: Any, out: Path, stem: str) -> list[str]:
    from invlab.report.genuine import _save as save

    return save(fig, out, stem, dpi=110)


def figures(wide: dict[str, pd.DataFrame], stats: dict[str, Any], out: Path) -> list[str]:
    """Scatter accuracy vs EI per test set with fitted lines; ρ grid; measure ranking."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(wide)
    cols = min(3, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    colors = {"mlp": "tab:blue", "cnn": "tab:orange", "vit": "tab:green", "external": "tab:purple"}
    for ax, ts in zip(axes.flat, sets, strict=False):
        w = wide[ts]
        if "ei" not in w:  # rotation EI needs square images (your own models/test sets)
            ax.text(0.5, 0.5, f"{ts}: no rotation EI\n(non-square images)", ha="center",
                    va="center", fontsize=9, transform=ax.transAxes)
            ax.axis("off")
            continue
        for fam, g in w.groupby("family"):
            rot = g["augment"].isin(["rotate", "r4"])
            ax.scatter(g["ei"][~rot], g["accuracy"][~rot], s=14, c=colors.get(str(fam), "k"),
                       label=str(fam), alpha=0.8)
            ax.scatter(g["ei"][rot], g["accuracy"][rot], s=18, c=colors.get(str(fam), "k"),
                       marker="x", alpha=0.8, label=f"{fam} (rot. aug)")
        st = stats[ts].get("ei")
        if st:
            xs = np.linspace(w["ei"].min(), w["ei"].max(), 20)
            ax.plot(xs, st["slope"] * xs + st["intercept"], "k--", lw=1)
            ax.set_title(f"{ts}: ρ={st['spearman']:.2f}, R²={st['r2']:.2f}", fontsize=9)
        ax.set_xlabel("EI (rotation 90/180/270)", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
    for ax in list(axes.flat)[len(sets):]:
        ax.axis("off")
    h, lab = next((a.get_legend_handles_labels() for a in axes.flat
                   if a.get_legend_handles_labels()[0]), ([], []))
    if lab:
        fig.legend(h, lab, loc="lower center", ncol=min(6, len(lab)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths = _save(fig, out, "scatter_ei")

    ms = _measures(wide)
    grid = np.array([[stats[t].get(m, {}).get("spearman", np.nan) for t in sets] for m in ms])
    fig, ax = plt.subplots(figsize=(1.0 * len(sets) + 2, 0.5 * len(ms) + 1.5))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(sets)), sets, rotation=45, ha="right")
    ax.set_yticks(range(len(ms)), [LABELS.get(m, m) for m in ms])
    for i in range(len(ms)):
        for j in range(len(sets)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="Spearman ρ (accuracy vs measure, across models)")
    paths += _save(fig, out, "grid_spearman")

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(sets) * len(ms) / 3), 3.5))
    width = 0.8 / len(ms)
    for i, m in enumerate(ms):
        v = [stats[t].get(m, {}).get("spearman", np.nan) for t in sets]
        ci = [stats[t].get(m, {}).get("spearman_ci", [np.nan, np.nan]) for t in sets]
        err = np.abs(np.array(ci, float).T - np.array(v, float))
        ax.bar(np.arange(len(sets)) + i * width, v, width, yerr=err, capsize=2,
               label=LABELS.get(m, m))
    ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, rotation=30, ha="right")
    ax.set_ylabel("Spearman ρ with accuracy")
    ax.axhline(STRONG_RHO, color="gray", ls=":", lw=1)
    ax.legend(fontsize=7, ncol=3)
    paths += _save(fig, out, "ranking")
    return paths


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, float | np.floating):
        return None if not math.isfinite(float(o)) else round(float(o), 5)
    if isinstance(o, np.integer):
        return int(o)
    return o


def build_report(out_dir: str | Path, n_boot: int | None = None, seed: int | None = None
                 ) -> list[str]:
    """Rebuild every output of the study in ``out_dir`` from its store."""
    from invlab.report.tables import write_table

    out = Path(out_dir)
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    n_boot = int(cfg.get("n_boot", 1000) if n_boot is None else n_boot)
    seed = int(cfg.get("boot_seed", 0) if seed is None else seed)
    long = load_long(out)
    atomic_write_text(out / "models.csv", long.to_csv(index=False))
    wide = _wide(long)
    stats = model_centric(wide, n_boot, seed)
    rank = ranking(stats)
    fx = effects(wide)
    cl = claims(stats, fx)
    summary = {"zoo_size": int(long["model_id"].nunique()), "test_sets": list(wide),
               "n_images": {t: int(long[long.test_set == t]["n_images"].max()) for t in wide},
               "id_test_set": next(iter(wide)),
               "n_boot": n_boot, "strong_rho": STRONG_RHO, "model_centric": stats,
               "subgroups": subgroups(wide, min(n_boot, 200), seed),
               "dataset_centric": dataset_centric(wide, n_boot, seed), **estimation(wide),
               "effects": fx,
               "claims": cl}
    paths = [str(out / "models.csv")]
    paths.append(str(atomic_write_json(out / "summary.json", _jsonable(summary))))
    paths += write_table(rank, out, "ranking",
                         "Measures ranked by correlation strength |Spearman ρ| with accuracy")
    atomic_write_text(out / "claims.md", claims_markdown(cl))
    paths.append(str(out / "claims.md"))
    paths += figures(wide, stats, out)
    return paths


def claims_markdown(cl: list[dict[str, Any]]) -> str:
    lines = ["### Claims check (Deng et al. 2022, on this zoo)", ""]
    for c in cl:
        lines.append(f"- **{'TRUE' if c['holds'] else 'FALSE'}**: {c['claim']}. {c['evidence']}.")
    return "\n".join(lines) + "\n"


def print_table(out_dir: str | Path) -> str:
    """Spearman ρ [95 % CI] of accuracy vs each measure per test set, estimation MAE,
    selection regret, then the claims check."""
    out = Path(out_dir)
    s = json.loads((out / "summary.json").read_text())
    mc = s["model_centric"]
    sets = s["test_sets"]
    ms = [m for m in (*INVARIANCE_MEASURES, "confidence") if m in mc[sets[0]]]
    ms += sorted(k for k in mc[sets[0]] if k.startswith("ei_"))
    lines = [f"Zoo: {s['zoo_size']} models; Spearman ρ (accuracy vs measure) [95% CI]", ""]
    lines.append("| measure | " + " | ".join(sets) + " |")
    lines.append("|---|" + "---|" * len(sets))
    for m in ms:
        cells = []
        for t in sets:
            st = mc[t].get(m)
            cells.append("–" if not st or st["spearman"] is None else
                         f"{st['spearman']:.2f} [{st['spearman_ci'][0]:.2f}, {st['spearman_ci'][1]:.2f}]"
                         if st.get("spearman_ci") else f"{st['spearman']:.2f}")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    est = s.get("estimation", {})
    if est:
        lines += ["", "Leave-one-shift-out accuracy estimation, mean absolute error "
                  "(linear / probit fit):"]
        for m, e in est.items():
            f3 = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731 - one test set: None
            if m == "confidence_raw":
                lines.append(f"  {'avg. confidence, no fit':16s} {f3(e['mae'])}")
                continue
            lines.append(f"  {LABELS.get(m, m):16s} {f3(e['linear']['mae'])} / "
                         f"{f3(e['probit']['mae'])}")
    sel = s.get("selection", {})
    if sel:
        lines += ["", "Model selection by the highest score, mean regret over test sets:"]
        lines += [f"  {LABELS.get(m, m):16s} {v['mean_regret']:.3f}" for m, v in sel.items()]
    return "\n".join(lines) + "\n\n" + (out / "claims.md").read_text()


def figure_test_sets(sets_dir: str | Path, refs: list[Any], out: Path, n: int = 8) -> list[str]:
    """Picture grid: ``n`` examples (first images, with labels) of every test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invlab.data.shifts import load_cached

    fig, axes = plt.subplots(len(refs), n, figsize=(n * 0.9, len(refs) * 1.0), squeeze=False)
    for row, ref in zip(axes, refs, strict=True):
        x, y = load_cached(Path(sets_dir) / f"{ref.name}-{ref.digest}.npz")
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(y):
                ax.axis("off")
                continue
            img = x[j].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(str(int(y[j])), fontsize=7, pad=1)
        row[0].set_ylabel(f"{ref.name}\n({len(y)})", fontsize=7, rotation=0, ha="right",
                          va="center")
    fig.tight_layout(pad=0.2)
    return _save(fig, out, "test_sets")
