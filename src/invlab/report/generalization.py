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
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from invlab.data.shifts import load_cached
from invlab.report.claims import (
    ACCURACY_FLOOR,
    CHANCE_MARGIN,
    Claim,
    ClaimSet,
    decide,
    read_claims,
    render_text,
    write_claims,
)
from invlab.report.figures import pyplot, save
from invlab.report.metric_labels import axis_label
from invlab.report.tables import write_table
from invlab.stats import correlate, leave_one_shift_out, selection_regret
from invlab.sweep import ResultsStore
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
    """The study's results as a long table (model × test set × measure): from the store, or,
    in a directory without one (e.g. committed results), from the ``models.csv`` that the
    report wrote from it."""

    out = Path(out)
    if not (out / "store.sqlite").exists() and (out / "models.csv").exists():
        return _long_from_csv(out)
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


def _long_from_csv(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "models.csv")
    need = {"model_id", "test_set", "measure", "value"}
    if not need <= set(df.columns):
        raise ValueError(f"{out / 'models.csv'}: missing columns "
                         f"{', '.join(sorted(need - set(df.columns)))}; rebuild it with "
                         f"`invlab report {out}` from the results store")
    df["test_set"] = df["test_set"].astype(str)
    sets = list(dict.fromkeys(df["test_set"]))  # the file's order: the study's (ID first)
    df["test_set"] = pd.Categorical(df["test_set"], categories=sets, ordered=True)
    for c in ("family", "arch", "augment"):
        df[c] = df[c].astype(object).where(df[c].notna(), "") if c in df else ""
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


MIN_MODELS = 5
"""Fewer models than this: a Spearman ρ across the zoo cannot decide a claim (with 2 models
it is ±1 or undefined)."""


def _too_few(n_models: int) -> str:
    """Why no claim can be decided on a zoo of ``n_models`` (empty when it can)."""
    return (f"too few models: {n_models} (a Spearman ρ across the zoo needs at least "
            f"{MIN_MODELS})") if n_models < MIN_MODELS else ""


def _zoo_caveat(id_accuracy: dict[str, float] | None, n_classes: int) -> str:
    """The flag on every claim when some models are below the ID accuracy floor (how many,
    and how many of them at chance); empty otherwise."""
    if not id_accuracy:
        return ""
    n_at = sum(v is not None and v <= 1 / n_classes + CHANCE_MARGIN for v in id_accuracy.values())
    n_low = sum(v is not None and v < ACCURACY_FLOOR for v in id_accuracy.values())
    if not n_low:
        return ""
    return (f"{n_low} of {len(id_accuracy)} models below the {100 * ACCURACY_FLOOR:.0f} % ID "
            "accuracy floor" + (f", {n_at} of them at chance" if n_at else ""))


def _rho(stats: dict[str, Any], t: str, m: str) -> float:
    """Spearman ρ of accuracy against measure ``m`` on test set ``t`` (NaN when undefined)."""
    v = stats[t][m]["spearman"]
    return float("nan") if v is None else float(v)


def _claim_ei_strong(stats: dict[str, Any], why: str, caveat: str) -> Claim:
    """Claim 1: ρ(EI, accuracy) ≥ :data:`STRONG_RHO` on ID (the first test set) and on more
    than half of the shifts."""
    sets = list(stats)
    shifts = sets[1:]
    rho = {t: _rho(stats, t, "ei") for t in sets if "ei" in stats[t]}
    strong = [t for t in shifts if rho.get(t, -1) >= STRONG_RHO]
    holds = rho.get(sets[0] if sets else "id", -1) >= STRONG_RHO and len(strong) > len(shifts) / 2
    return decide("EI correlates strongly with accuracy on ID and on most shifts",
                  f"Spearman ρ(EI, accuracy) ≥ {STRONG_RHO} on ID and on more than half of the "
                  "shifts", {**{f"ρ {t}": r for t, r in rho.items()},
                             "strong shifts": f"{len(strong)}/{len(shifts)}"},
                  bool(holds), reason=why or ("" if rho else "EI was not measured"),
                  caveat=caveat)


def _claim_ei_strongest(stats: dict[str, Any], why: str, caveat: str) -> Claim:
    """Claim 2: EI has the largest |ρ| of the invariance measures on more than half of the
    test sets (also reported: the signed comparison, the measures stronger than EI but
    negative, and EI against average confidence)."""
    sets = list(stats)
    others = [m for m in INVARIANCE_MEASURES if m != "ei"]
    with_ei = [t for t in sets if "ei" in stats[t]]

    def beats(t: str, m: str, key: Any) -> bool:
        return key(_rho(stats, t, "ei")) >= key(_rho(stats, t, m))

    wins = [t for t in with_ei if all(beats(t, m, abs) for m in others if m in stats[t])]
    wins_signed = [t for t in with_ei if all(beats(t, m, float) for m in others if m in stats[t])]
    beats_conf = [t for t in with_ei if "confidence" in stats[t] and beats(t, "confidence", abs)]
    neg = sorted({m for t in with_ei for m in others if m in stats[t]
                  and _rho(stats, t, m) < 0 and abs(_rho(stats, t, m)) > abs(_rho(stats, t, "ei"))})
    rho = {t: _rho(stats, t, "ei") for t in with_ei}
    return decide("EI correlates more strongly than the other invariance measures (agreement, −JS, "
                  "−KL, −LI) on most test sets",
                  "EI has the largest |Spearman ρ| on more than half of the test sets",
                  {"EI largest |ρ|": f"{len(wins)}/{len(sets)} ({', '.join(wins) or 'none'})",
                   "EI highest signed ρ": f"{len(wins_signed)}/{len(sets)}",
                   "stronger but negative": ", ".join(LABELS.get(m, m) for m in neg) or "none",
                   "EI |ρ| ≥ avg. confidence's": f"{len(beats_conf)}/{len(sets)}",
                   **{f"ρ(EI) {t}": r for t, r in rho.items()}},
                  len(wins) > len(sets) / 2, reason=why or ("" if rho else "EI was not measured"),
                  caveat=caveat)


def _effects_missing(fx: dict[str, Any]) -> str:
    """Why the matched data/augmentation effects cannot decide claim 3 (empty when they can):
    one n_train for every model, or no matched pairs (a user zoo without that metadata)."""
    mo = fx.get("mean_over_test_sets", {})
    augs = sorted({k.split("_")[1] for k in mo if k.startswith("aug_")})
    aug_acc = [mo[f"aug_{a}_accuracy"] for a in augs if f"aug_{a}_accuracy" in mo]
    spans = [v["data_accuracy"]["n_train"] for v in fx.get("per_test_set", {}).values()
             if "data_accuracy" in v]
    if spans and all(lo == hi for lo, hi in spans):
        return (f"every model trains on the same n_train ({spans[0][0]}): there is no data "
                "effect to compare")
    if "data_accuracy" not in mo or not math.isfinite(float(mo["data_accuracy"])):
        return ("missing metadata: no pairs of models that differ only in n_train (a user zoo "
                "records no n_train/augmentation)")
    if not augs or not any(math.isfinite(float(x)) for x in aug_acc):
        return ("missing metadata: no pairs of models that differ only in augmentation (a "
                "user zoo records no augmentation)")
    return ""


def _claim_data_beats_augmentation(fx: dict[str, Any], why: str, caveat: str) -> Claim:
    """Claim 3: more training data raises accuracy and EI more than augmentation does (mean
    over test sets and matched pairs, :func:`effects`)."""
    mo = fx.get("mean_over_test_sets", {})
    augs = sorted({k.split("_")[1] for k in mo if k.startswith("aug_")})
    aug_acc = [mo[f"aug_{a}_accuracy"] for a in augs if f"aug_{a}_accuracy" in mo]
    aug_ei = [mo[f"aug_{a}_ei"] for a in augs if f"aug_{a}_ei" in mo]
    d_acc, d_ei = mo.get("data_accuracy", math.nan), mo.get("data_ei", math.nan)
    holds = bool(aug_acc and aug_ei and d_acc > np.mean(aug_acc) and d_ei > np.mean(aug_ei))
    values: dict[str, Any] = {"data Δacc": d_acc, "data ΔEI": d_ei}
    for a in augs:
        values[f"{a} Δacc"] = mo.get(f"aug_{a}_accuracy", math.nan)
        values[f"{a} ΔEI"] = mo.get(f"aug_{a}_ei", math.nan)
    values["exceeds every single augmentation"] = bool(
        aug_acc and aug_ei and d_acc > max(aug_acc) and d_ei > max(aug_ei))
    return decide("More training data raises accuracy and invariance (EI) more than augmentation "
                  "does",
                  "mean over test sets and matched pairs: Δacc and ΔEI of the largest vs the "
                  "smallest n_train > the mean Δacc and ΔEI of the augmentations",
                  values, holds,
                  required=[k for k in values if k != "exceeds every single augmentation"],
                  reason=_effects_missing(fx) or why, caveat=caveat)


def claims(stats: dict[str, Any], fx: dict[str, Any],
           id_accuracy: dict[str, float] | None = None, n_classes: int = 10,
           n_models: int | None = None) -> ClaimSet:
    """The slides' three claims as records (:mod:`invlab.report.claims`).

    They cannot be evaluated with fewer than :data:`MIN_MODELS` models, with a NaN ρ, or (the
    third) without ``n_train``/augmentation metadata to match models on (a user zoo).
    ``id_accuracy`` (model → ID accuracy) flags models at chance or below the accuracy floor
    (a caveat: a zoo spans weak and strong models by design). ``n_models``: the zoo's size
    (default: the largest number of models behind any statistic; < 3 gives none)."""
    if n_models is None:
        n_models = max((int(st.get("n") or 0) for per in stats.values() for st in per.values()
                        if isinstance(st, dict)), default=0)
    why, caveat = _too_few(n_models), _zoo_caveat(id_accuracy, n_classes)
    return ClaimSet("Claims check (Deng et al. 2022, on this zoo)",
                    (_claim_ei_strong(stats, why, caveat), _claim_ei_strongest(stats, why, caveat),
                     _claim_data_beats_augmentation(fx, why, caveat)))


def _save(fig: Any, out: Path, stem: str) -> list[str]:
    return save(fig, out, stem, dpi=110)


def spearman_table(stats: dict[str, Any]) -> pd.DataFrame:
    """Rows: measures; columns: test sets; cells ``ρ [lo, hi]``: Spearman ρ of accuracy
    against the measure across the zoo's models, with its bootstrap 95 % CI (as printed by
    ``invlab study generalization``)."""
    sets = list(stats)
    present = set().union(*[set(v) for v in stats.values()]) if stats else set()
    ms = [m for m in (*INVARIANCE_MEASURES, "confidence") if m in present]
    ms += sorted(m for m in present if m.startswith("ei_"))
    rows = []
    for m in ms:
        row: dict[str, Any] = {"measure": LABELS.get(m, m)}
        for t in sets:
            st = stats[t].get(m)
            rho = None if not st else st.get("spearman")
            if rho is None or not math.isfinite(float(rho)):
                row[t] = "–"
                continue
            ci = st.get("spearman_ci")
            row[t] = (f"{rho:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and all(
                math.isfinite(float(c)) for c in ci) else f"{rho:.2f}")
        rows.append(row)
    return pd.DataFrame(rows, columns=["measure", *sets])


FAMILY_LABELS = {"external": "your models", "mlp": "MLP", "cnn": "CNN", "vit": "ViT"}
FAMILY_COLORS = {"mlp": "tab:blue", "cnn": "tab:orange", "vit": "tab:green",
                 "external": "tab:purple"}


def _scatter_panel(ax: Any, ts: str, w: pd.DataFrame, st: dict[str, Any] | None) -> None:
    """One test set's panel: accuracy vs EI per model (a cross: trained with rotations),
    coloured by family, with the fitted line of ``st`` (:func:`_stats` of EI)."""
    if "ei" not in w:  # rotation EI needs square images (your own models/test sets)
        ax.text(0.5, 0.5, f"{ts}: no rotation EI\n(non-square images)", ha="center",
                va="center", fontsize=9, transform=ax.transAxes)
        ax.axis("off")
        return
    for fam, g in w.groupby("family"):
        rot = g["augment"].isin(["rotate", "r4"])
        name = FAMILY_LABELS.get(str(fam), str(fam))
        color = FAMILY_COLORS.get(str(fam), "k")
        if (~rot).any():
            ax.scatter(g["ei"][~rot], g["accuracy"][~rot], s=14, c=color, alpha=0.8,
                       label=name + (", no rotation augmentation" if rot.any() or
                                     str(fam) != "external" else ""))
        if rot.any():
            ax.scatter(g["ei"][rot], g["accuracy"][rot], s=18, c=color, marker="x", alpha=0.8,
                       label=f"{name}, trained with rotations")
    if st:
        xs = np.linspace(w["ei"].min(), w["ei"].max(), 20)
        ax.plot(xs, st["slope"] * xs + st["intercept"], "k--", lw=1)
        ax.set_title(f"{ts}: ρ={st['spearman']:.2f}, R²={st['r2']:.2f}", fontsize=10)
    else:
        ax.set_title(ts, fontsize=10)
    ax.set_xlabel(axis_label("EI (rotations by 90°, 180°, 270°)", "ei"), fontsize=9)
    ax.set_ylabel(axis_label("accuracy", "accuracy"), fontsize=9)
    ax.tick_params(labelsize=9)


def figure_scatter_ei(wide: dict[str, pd.DataFrame], stats: dict[str, Any], out: Path
                      ) -> list[str]:
    """``scatter_ei``: accuracy vs EI per test set, one panel each, with the fitted lines;
    one legend below the panels."""
    plt = pyplot()
    sets = list(wide)
    cols = min(3, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, ts in zip(axes.flat, sets, strict=False):
        _scatter_panel(ax, ts, wide[ts], stats[ts].get("ei"))
    for ax in list(axes.flat)[len(sets):]:
        ax.axis("off")
    h, lab = next((a.get_legend_handles_labels() for a in axes.flat
                   if a.get_legend_handles_labels()[0]), ([], []))
    fig.tight_layout()
    if lab:  # below the panels: it covers no point
        fig.legend(h, lab, loc="upper center", ncol=min(3, len(lab)), fontsize=9,
                   bbox_to_anchor=(0.5, 0.0), frameon=False)
    return _save(fig, out, "scatter_ei")


def figure_grid_spearman(wide: dict[str, pd.DataFrame], stats: dict[str, Any], out: Path
                         ) -> list[str]:
    """``grid_spearman``: heat map of ρ(accuracy, measure) per measure (rows) and test set."""
    plt = pyplot()
    sets, ms = list(wide), _measures(wide)
    grid = np.array([[stats[t].get(m, {}).get("spearman", np.nan) for t in sets] for m in ms])
    fig, ax = plt.subplots(figsize=(0.75 * len(sets) + 3.2, 0.45 * len(ms) + 1.6))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(sets)), sets, rotation=45, ha="right", fontsize=10)
    ax.set_yticks(range(len(ms)), [LABELS.get(m, m) for m in ms], fontsize=10)
    ax.set_xlabel("test set", fontsize=10)
    for i in range(len(ms)):
        for j in range(len(sets)):
            v = grid[i, j]
            ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                    fontsize=9, color="white" if np.isfinite(v) and abs(v) > 0.6 else "black")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("Spearman ρ (accuracy vs measure,\nacross models)", fontsize=9)
    cb.ax.tick_params(labelsize=9)
    return _save(fig, out, "grid_spearman")


def figure_ranking(wide: dict[str, pd.DataFrame], stats: dict[str, Any], out: Path
                   ) -> list[str]:
    """``ranking``: bars of ρ(accuracy, measure) with bootstrap 95 % CIs, per test set."""
    plt = pyplot()
    sets, ms = list(wide), _measures(wide)
    fig, ax = plt.subplots(figsize=(min(8.5, max(6, 0.9 * len(sets) * len(ms) / 3)), 3.5))
    width = 0.8 / len(ms)
    for i, m in enumerate(ms):
        v = [stats[t].get(m, {}).get("spearman", np.nan) for t in sets]
        ci = [stats[t].get(m, {}).get("spearman_ci", [np.nan, np.nan]) for t in sets]
        err = np.abs(np.array(ci, float).T - np.array(v, float))
        ax.bar(np.arange(len(sets)) + i * width, v, width, yerr=err, capsize=2,
               label=LABELS.get(m, m))
    ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, rotation=30, ha="right",
                  fontsize=9)
    ax.set_xlabel("test set", fontsize=10)
    ax.set_ylabel("Spearman ρ with accuracy", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.axhline(STRONG_RHO, color="gray", ls=":", lw=1)
    # right of the axes: it covers no bar
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              title="measure", title_fontsize=9)
    return _save(fig, out, "ranking")


def figures(wide: dict[str, pd.DataFrame], stats: dict[str, Any], out: Path) -> list[str]:
    """Scatter accuracy vs EI per test set with fitted lines; ρ grid; measure ranking."""
    return (figure_scatter_ei(wide, stats, out) + figure_grid_spearman(wide, stats, out)
            + figure_ranking(wide, stats, out))


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
    out = Path(out_dir)
    doc = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    cfg = doc.get("config", doc)  # config.json: {"study", "config": the resolved preset, ...}
    n_boot = int(cfg.get("n_boot", 1000) if n_boot is None else n_boot)
    seed = int(cfg.get("boot_seed", 0) if seed is None else seed)
    long = load_long(out)
    if (out / "store.sqlite").exists():  # else it was read from models.csv: keep it as it is
        atomic_write_text(out / "models.csv", long.to_csv(index=False))
    wide = _wide(long)
    stats = model_centric(wide, n_boot, seed)
    rank = ranking(stats)
    fx = effects(wide)
    id_set = next(iter(wide))
    id_acc = (wide[id_set]["accuracy"].astype(float).to_dict()
              if "accuracy" in wide[id_set] else None)
    cl = claims(stats, fx, id_acc, n_models=int(long["model_id"].nunique()))
    summary = {"zoo_size": int(long["model_id"].nunique()), "test_sets": list(wide),
               "n_images": {t: int(long[long.test_set == t]["n_images"].max()) for t in wide},
               "id_test_set": next(iter(wide)),
               "n_boot": n_boot, "strong_rho": STRONG_RHO, "model_centric": stats,
               "subgroups": subgroups(wide, min(n_boot, 200), seed),
               "dataset_centric": dataset_centric(wide, n_boot, seed), **estimation(wide),
               "effects": fx,
               "claims": [c.to_dict() for c in cl.claims]}
    paths = [str(out / "models.csv")]
    paths.append(str(atomic_write_json(out / "summary.json", _jsonable(summary))))
    paths += write_table(spearman_table(stats), out, "spearman",
                         "Spearman ρ of accuracy against each measure across the zoo's models, "
                         "per test set [bootstrap 95 % CI]")
    paths += write_table(rank, out, "ranking",
                         "Measures ranked by correlation strength |Spearman ρ| with accuracy")
    paths += write_claims(out, cl)
    paths += figures(wide, stats, out)
    paths += figure_test_sets_from_store(out)
    return paths


def _f3(v: Any, nd: int = 3) -> str:
    """``0.123``, or ``n/a`` for a statistic that could not be computed (None/NaN)."""
    return f"{v:.{nd}f}" if isinstance(v, int | float) and math.isfinite(v) else "n/a"


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
                         f"{st['spearman']:.2f} [{_f3(st['spearman_ci'][0], 2)}, "
                         f"{_f3(st['spearman_ci'][1], 2)}]"
                         if st.get("spearman_ci") else f"{st['spearman']:.2f}")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    est = s.get("estimation", {})
    if est:
        lines += ["", "Leave-one-shift-out accuracy estimation, mean absolute error "
                  "(linear / probit fit):"]
        for m, e in est.items():
            if m == "confidence_raw":
                lines.append(f"  {'avg. confidence, no fit':16s} {_f3(e.get('mae'))}")
                continue
            lines.append(f"  {LABELS.get(m, m):16s} {_f3((e.get('linear') or {}).get('mae'))} / "
                         f"{_f3((e.get('probit') or {}).get('mae'))}")
    sel = s.get("selection", {})
    if sel:
        lines += ["", "Model selection by the highest score, mean regret over test sets:"]
        lines += [f"  {LABELS.get(m, m):16s} {_f3(v.get('mean_regret'))}" for m, v in sel.items()]
    cs = read_claims(out)
    tail = render_text(cs) if cs is not None else (out / "claims.md").read_text()
    return "\n".join(lines) + "\n\n" + tail


def figure_test_sets_from_store(out: Path) -> list[str]:
    """:func:`figure_test_sets` of the test sets the current cells (``current_cells.json``)
    measured, read from the cache files their stored configs name; nothing when the folder
    has no store or current cells, or a cache file is gone (e.g. a store from elsewhere)."""
    if not (out / "store.sqlite").exists() or not (out / "current_cells.json").exists():
        return []
    keep = set(json.loads((out / "current_cells.json").read_text())["cells"])
    cfg = next((c["config"] for c in ResultsStore(out / "store.sqlite").cells(STUDY)
                if c["cell_id"] in keep), None)
    if cfg is None:
        return []
    refs = [SimpleNamespace(name=r["name"], digest=r["digest"]) for r in cfg["test_sets"]]
    sets_dir = Path(cfg["sets_dir"])
    if not refs or not all((sets_dir / f"{r.name}-{r.digest}.npz").exists() for r in refs):
        return []
    return figure_test_sets(sets_dir, refs, out)


def figure_test_sets(sets_dir: str | Path, refs: list[Any], out: Path, n: int = 8) -> list[str]:
    """Picture grid: ``n`` examples (first images, with labels) of every test set."""
    plt = pyplot()
    fig, axes = plt.subplots(len(refs), n, figsize=(n * 0.9, len(refs) * 1.05), squeeze=False)
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
            ax.set_title(str(int(y[j])), fontsize=9, pad=1)
        row[0].set_ylabel(f"{ref.name}\n({len(y)})", fontsize=9, rotation=0, ha="right",
                          va="center")
    fig.tight_layout(pad=0.2)
    return _save(fig, out, "test_sets")
