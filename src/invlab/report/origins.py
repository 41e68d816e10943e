"""Report of the origins study (B21): profiles, ablation, factors of variation, claims.

Everything is rebuilt from the store: ``summary.json`` (profile medians per (layer,
architecture, regime, transform, magnitude), accuracies, the ablation table, the factor
rankings, specificity and alignment, and the claims check), Markdown/CSV tables and the
figures (PNG + SVG). "Mid-magnitude invariance" is the median invariance averaged over
magnitude indices 3–7 (the spec's window for the invariance gap).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from invlab.factors import B21_FAMILIES, GEOMETRIC  # noqa: E402
from invlab.metrics.functional.factors import (  # noqa: E402
    alignment,
    chance_alignment,
    class_specificity,
)
from invlab.metrics.registry import summary_statistic  # noqa: E402
from invlab.report.claims import ClaimSet, accuracy_gate, decide, read_claims, render_text, write_claims  # noqa: E402
from invlab.report.figures import pyplot, save  # noqa: E402
from invlab.report.metric_labels import axis_label, upper_bound  # noqa: E402
from invlab.report.tables import write_table  # noqa: E402
from invlab.sweep import ResultsStore  # noqa: E402
from invlab.sweep.io import atomic_write_json  # noqa: E402
from invlab.transforms import create_transform

STUDY = "origins"
MID = (3, 4, 5, 6, 7)
STANDARD = "translate_zoom"
REGIME_ORDER = ["untrained", "none", "translate", "zoom", "translate_zoom", "rrc", "mix13",
                "user"]
REGIME_LABEL = {"untrained": "untrained", "none": "no aug", "translate": "translate",
                "zoom": "zoom", "translate_zoom": "std aug (transl+zoom)", "rrc": "rrc-like",
                "mix13": "13-transform mix", "user": "as given"}
FMNIST_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Boot"]
TOP_K = 5
RI = "representation_invariance"
"""The metric of every profile (B21's representation invariance; stored as ``ri:...``)."""
RI_TOP = upper_bound([RI], 1.0)
"""RI's largest value (the metric registry's range: 1 = invariant), where the axes stop."""
RI_STAT = summary_statistic(RI)
"""The statistic the profiles show: RI's summary in the metric registry (B21's median)."""


# ------------------------------------------------------------------------------ load

def _model_key(cfg: dict[str, Any]) -> tuple[str, str, int]:
    m = cfg["model"]
    if "arch" in m:
        return m["arch"], m["regime"], int(m["seed"])
    return m["name"], "untrained" if m["untrained"] else "user", 0


def load(store: ResultsStore) -> dict[str, Any]:
    """Profile rows as a DataFrame, accuracies, the factor tables."""
    recs, acc = [], []
    train = [(*_model_key(r["config"]), r["metric"], r["value"])
             for r in store.rows(STUDY + "-train") if "arch" in r["config"].get("model", {})]
    for r in store.rows(STUDY):
        cfg = r["config"]
        if "n_profile" not in cfg:
            continue
        arch, regime, seed = _model_key(cfg)
        met = r["metric"]
        if met == "accuracy":
            acc.append({"arch": arch, "regime": regime, "seed": seed, "accuracy": r["value"]})
        elif met.startswith("ri:"):
            _, stat, layer, tr, mag = met.split(":")
            recs.append((arch, regime, seed, layer, tr, int(mag), stat, r["value"]))
    prof = pd.DataFrame(recs, columns=["arch", "regime", "seed", "layer", "transform", "mag",
                                       "stat", "value"])
    factors = []
    for c in store.cells(STUDY):
        if "n_pairs" in c["config"] and c["extra"]:
            factors.append({"model": _model_key(c["config"]), **c["extra"]["factors"]})
    return {"profile": prof, "accuracy": pd.DataFrame(acc, columns=["arch", "regime", "seed",
                                                                    "accuracy"]),
            "factors": factors, "training": training_table(train)}


TRAIN_COLUMNS = {"epochs_run": "epochs run", "best_epoch": "best epoch",
                 "val_accuracy": "best val acc (%)", "val_gain_late": "best-val gain, last 20 "
                 "epochs (points)", "val_slope_late": "val slope, last 20 epochs (points / "
                 "10 epochs)", "val_slope_late_se": "slope s.e.", "stopped": "stopped by",
                 "train_seconds": "train s"}


def training_table(rows: list[tuple[str, str, int, str, float]]) -> pd.DataFrame:
    """One row per trained model: epochs run, best epoch, what stopped it (patience or the
    epoch cap), best validation accuracy, its gain and slope (± s.e.) over the last 20
    epochs, seconds."""
    if not rows:
        return pd.DataFrame()
    d = pd.DataFrame(rows, columns=["arch", "regime", "seed", "metric", "value"])
    t = d.pivot_table(index=["arch", "regime", "seed"], columns="metric", values="value",
                      aggfunc="first").reset_index()
    if "capped" in t:
        t["stopped"] = np.where(t.capped > 0, "epoch cap", "patience")
    for c in ("val_accuracy", "val_gain_late"):
        if c in t:
            t[c] = (100 * t[c]).round(2)
    for c in ("epochs_run", "best_epoch"):
        if c in t:
            t[c] = t[c].astype(int)
    for c in ("train_seconds", "val_slope_late", "val_slope_late_se"):
        if c in t:
            t[c] = t[c].round(2)
    keep = ["arch", "regime", "seed", *[c for c in TRAIN_COLUMNS if c in t]]
    return t[keep].rename(columns=TRAIN_COLUMNS)


def medians(prof: pd.DataFrame, layer: str = "penultimate") -> pd.DataFrame:
    """Seed-mean of the per-cell medians: index (arch, regime, transform), columns mag."""
    d = prof[(prof.stat == RI_STAT) & (prof.layer == layer)]
    return d.groupby(["arch", "regime", "transform", "mag"])["value"].mean().unstack("mag")


def mid(med: pd.DataFrame) -> pd.Series:
    """Mid-magnitude invariance per (arch, regime, transform)."""
    return med[[m for m in MID if m in med.columns]].mean(axis=1)


ARCH_ORDER = ["mlp", "mlp5", "cnn_small", "cnn_medium", "vit_tiny"]


def _sorted_models(keys: Any) -> list[tuple[str, str]]:
    keys = list(dict.fromkeys(keys))
    seen = list(dict.fromkeys(a for a, _ in keys))
    archs = [a for a in ARCH_ORDER if a in seen] + [a for a in seen if a not in ARCH_ORDER]
    return sorted(keys, key=lambda k: (archs.index(k[0]), REGIME_ORDER.index(k[1])
                                       if k[1] in REGIME_ORDER else 99))


# ----------------------------------------------------------------------------- claims

def _gap_table(m: pd.Series, arch: str, trained: str) -> np.ndarray | None:
    try:
        return np.array([m[(arch, trained, t)] - m[(arch, "untrained", t)] for t in B21_FAMILIES])
    except KeyError:
        return None


def claim_data_vs_aug(m: pd.Series) -> dict[str, Any]:
    """Training on the data (none − untrained) vs what standard augmentation adds
    (translate_zoom − none), mid-magnitude invariance averaged over the 13 transforms."""
    per = {}
    for arch in dict.fromkeys(a for a, _, _ in m.index):
        g = _gap_table(m, arch, "none")
        if g is None or (arch, STANDARD, B21_FAMILIES[0]) not in m.index:
            continue
        aug = np.array([m[(arch, STANDARD, t)] - m[(arch, "none", t)] for t in B21_FAMILIES])
        per[arch] = {"data_gain": float(g.mean()), "aug_gain": float(aug.mean()),
                     "aug_gain_geometric": float(aug[:len(GEOMETRIC)].mean()),
                     "aug_gain_appearance": float(aug[len(GEOMETRIC):].mean()),
                     "transforms_data_gain_positive": int((g > 0).sum())}
    q = "does training on the data raise invariance far more than augmentation adds?"
    if not per:
        return {"question": q, "answer": None,
                "reason": "needs untrained, none and translate_zoom models"}
    dg = float(np.mean([v["data_gain"] for v in per.values()]))
    ag = float(np.mean([v["aug_gain"] for v in per.values()]))
    ok = dg > 0 and dg >= 2 * max(ag, 0.0)
    return {"question": q, "answer": bool(ok), "data_gain": dg, "aug_gain": ag,
            "criterion": "data gain > 0 and >= 2x the augmentation gain (mid-magnitude median "
                         "invariance, mean over 13 transforms and architectures)",
            "per_arch": per}


def claim_arch_vs_regime(m: pd.Series) -> dict[str, Any]:
    """Mean range across architectures (per regime, transform) vs across regimes (per arch)."""
    df = m.rename("v").reset_index()
    regimes = [r for r in ("untrained", "none", STANDARD, "user") if r in set(df.regime)]
    df = df[df.regime.isin(regimes)]
    archs = sorted(set(df.arch))
    if len(archs) < 2 or len(regimes) < 2:
        return {"question": "do architectures differ less than regimes?", "answer": None,
                "reason": "needs >= 2 architectures and >= 2 regimes"}
    a = df.groupby(["regime", "transform"])["v"].agg(lambda s: s.max() - s.min()).mean()
    r = df.groupby(["arch", "transform"])["v"].agg(lambda s: s.max() - s.min()).mean()
    trained = df[df.regime != "untrained"]
    a_tr = trained.groupby(["regime", "transform"])["v"].agg(lambda s: s.max() - s.min()).mean()
    r_tr = trained.groupby(["arch", "transform"])["v"].agg(lambda s: s.max() - s.min()).mean()
    return {"question": "do architectures differ less than regimes?", "answer": bool(a < r),
            "arch_range": float(a), "regime_range": float(r),
            "arch_range_trained_only": float(a_tr), "regime_range_trained_only": float(r_tr),
            "criterion": "mean over (regime, transform) of the range across architectures < mean "
                         "over (architecture, transform) of the range across regimes "
                         f"({', '.join(regimes)}), mid-magnitude median invariance"}


def factor_summary(f: dict[str, Any]) -> dict[str, Any]:
    scores = torch.tensor(f["proportion_boosted_at_best"])
    spec = class_specificity(scores, TOP_K)
    k = scores.shape[0]
    off = ~torch.eye(k, dtype=torch.bool)
    top = [[f["transforms"][j] for j in np.argsort(r)[:TOP_K]] for r in f["rank"]]
    return {"classes": f["classes"], "transforms": f["transforms"], "top5": top,
            "spearman": spec["spearman"].tolist(), "iou": spec["iou"].tolist(),
            "mean_spearman": float(spec["spearman"][off].mean()) if k > 1 else float("nan"),
            "mean_iou": float(spec["iou"][off].mean()) if k > 1 else float("nan"),
            "distinct_top1": len({t[0] for t in top}), "scores": scores.tolist()}


def claim_specific(fs: dict[str, Any]) -> dict[str, Any]:
    ok = fs["mean_spearman"] < 0.5
    return {"question": "do classes have specific factors?", "answer": bool(ok),
            "mean_spearman": fs["mean_spearman"], "mean_top5_iou": fs["mean_iou"],
            "distinct_top1": fs["distinct_top1"],
            "criterion": "mean Spearman correlation of two classes' factor rankings < 0.5 "
                         "(random top-5 sets of 13 would give IoU ~0.24)"}


def alignment_table(m: pd.Series, fs: dict[str, Any]) -> dict[str, Any]:
    """Per architecture and trained regime: gap per transform, per-class alignment."""
    scores = torch.tensor(fs["scores"], dtype=torch.float64)
    order = [fs["transforms"].index(t) for t in B21_FAMILIES]
    scores = scores[:, order]
    out: dict[str, Any] = {}
    for arch in dict.fromkeys(a for a, _, _ in m.index):
        for trained in ("none", STANDARD, "user"):
            g = _gap_table(m, arch, trained)
            if g is None:
                continue
            gap = torch.tensor(g)
            al = alignment(scores, gap, TOP_K)
            top = torch.argsort(-scores, dim=1, stable=True)[:, :TOP_K]
            in_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
            g_top = float(torch.stack([gap[r].mean() for r in in_top]).mean())
            g_rest = float(torch.stack([gap[~r].mean() for r in in_top]).mean())
            out[f"{arch}/{trained}"] = {"gap": dict(zip(B21_FAMILIES, g.tolist())),
                                        "alignment": al.tolist(),
                                        "mean_alignment": float(al.mean()),
                                        "chance": chance_alignment(gap),
                                        "gap_top5": g_top, "gap_rest": g_rest}
    return out


def claim_alignment(al: dict[str, Any]) -> dict[str, Any]:
    if not al:
        return {"question": "does invariance align with the factors?", "answer": None,
                "reason": "needs trained and untrained profiles"}
    keys = [k for k in al if k.endswith("/none") or k.endswith("/user")] or list(al)
    ma = float(np.mean([al[k]["mean_alignment"] for k in keys]))
    ch = float(np.mean([al[k]["chance"] for k in keys]))
    diff = float(np.mean([al[k]["gap_top5"] - al[k]["gap_rest"] for k in keys]))
    return {"question": "does invariance align with the factors?",
            "answer": bool(ma >= ch and diff > 0), "mean_alignment": ma, "chance": ch,
            "gap_top5_minus_rest": diff, "models": keys,
            "criterion": "share of each class's top-5 factors with a positive invariance gap "
                         "(trained without augmentation − untrained) >= the share of all 13 "
                         "transforms (chance), and the mean gap over the top-5 > over the rest"}


# ----------------------------------------------------------------------------- tables

def ablation_table(m: pd.Series, acc: pd.DataFrame, arch: str) -> pd.DataFrame:
    rows = []
    regs = [r for r in REGIME_ORDER if (arch, r, B21_FAMILIES[0]) in m.index]
    for r in regs:
        a = acc[(acc.arch == arch) & (acc.regime == r)].accuracy
        v = np.array([m[(arch, r, t)] for t in B21_FAMILIES])
        row = {"regime": r, "accuracy": round(100 * float(a.mean()), 2) if len(a) else None,
               "seeds": int(len(a)), "mean_inv": round(float(v.mean()), 3),
               "geometric": round(float(v[:len(GEOMETRIC)].mean()), 3),
               "appearance": round(float(v[len(GEOMETRIC):].mean()), 3)}
        row.update({t: round(float(x), 3) for t, x in zip(B21_FAMILIES, v)})
        rows.append(row)
    return pd.DataFrame(rows)


def claims_markdown(claims: list[dict[str, Any]]) -> str:
    lines = ["| question | measured answer | numbers |", "|---|---|---|"]
    for c in claims:
        nums = {k: v for k, v in c.items() if isinstance(v, float)}
        ans = "n/a" if c.get("answer") is None else ("yes" if c["answer"] else "no")
        lines.append(f"| {c.get('question', '')} | {ans} | "
                     + ", ".join(f"{k}={v:.3f}" for k, v in nums.items()) + " |")
    return "\n".join(lines)


def claim_records(claims: list[dict[str, Any]], acc: pd.DataFrame | None,
                  n_classes: int = 10) -> ClaimSet:
    """The four answers as records (:mod:`invlab.report.claims`): an answer of None cannot
    be evaluated (its ``reason``); trained models at chance make every claim unevaluable,
    trained models below :data:`~invlab.report.claims.ACCURACY_FLOOR` are flagged. Untrained
    models are at chance by design and are not gated."""
    gate, caveat = "", ""
    if acc is not None and not acc.empty:
        tr = acc[acc.regime != "untrained"].groupby(["arch", "regime"]).accuracy.mean()
        gate, caveat = accuracy_gate({f"{a}/{r}": v for (a, r), v in tr.items()}, n_classes)
    out = []
    for c in claims:
        values = {k: v for k, v in c.items() if isinstance(v, float | int)
                  and not isinstance(v, bool)}
        test = c.get("answer")
        out.append(decide(str(c.get("question", "")), str(c.get("criterion", "")) or "n/a",
                          values, test, reason=str(c.get("reason", "")) if test is None else gate,
                          caveat=caveat))
    return ClaimSet("Claims check (Bouchacourt et al. 2021, measured here)", tuple(out))


# ---------------------------------------------------------------------------- figures

def _save(fig: Any, out: Path, stem: str) -> list[str]:
    return save(fig, out, stem)


def magnitude_axis(family: str, canvas: tuple[int, int] | None = None
                   ) -> tuple[list[str], str]:
    """Tick labels of magnitude indices 0–9 of a B21 family in its own unit, and the unit:
    degrees (rotate, shear), pixels (translate, on a known ``canvas`` = (H, W); else a
    fraction of the width / height), factors (zoom, brightness, contrast), bits (posterize),
    threshold (solarize). The profile's index ``j`` is the family's ``j``-th grid magnitude
    (identity first, strength increasing)."""

    t = create_transform(family)
    h, w = canvas if canvas is not None else (None, None)
    vals = [t.display_magnitude(m, h, w) for m in t.magnitudes]
    return [f"{v:.3g}" for v in vals], t.display_unit(h, w)


def _colors(models: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    plt = pyplot()
    archs = list(dict.fromkeys(a for a, _ in models))
    cmaps = ["Blues", "Oranges", "Greens", "Purples", "Reds", "Greys"]
    out = {}
    for i, a in enumerate(archs):
        regs = [r for aa, r in models if aa == a]
        cm = plt.get_cmap(cmaps[i % len(cmaps)])
        for j, r in enumerate(regs):
            out[(a, r)] = cm(0.35 + 0.55 * j / max(1, len(regs) - 1))
    return out


def figure_boxes(prof: pd.DataFrame, out: Path, geometric: bool, layer: str = "penultimate",
                 canvas: tuple[int, int] | None = None) -> list[str]:
    """Box plots (quartiles, 5–95 % whiskers) of invariance vs magnitude (in the family's
    unit, see :func:`magnitude_axis`), per transform, one box per model × regime (seed 0;
    main regimes only)."""
    d = prof[(prof.layer == layer) & (prof.seed == prof.seed.min())
             & prof.regime.isin(["untrained", "none", STANDARD, "user"])]
    fams = [t for t in B21_FAMILIES if (t in GEOMETRIC) == geometric]
    models = _sorted_models(zip(d.arch, d.regime))
    if d.empty or not models:
        return []
    plt = pyplot()
    col = _colors(models)
    stats = d.pivot_table(index=["arch", "regime", "transform", "mag"], columns="stat",
                          values="value")
    ncol = 2
    nrow = int(np.ceil(len(fams) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 3.2 * nrow), squeeze=False)
    nm = len(models)
    w = 0.8 / nm
    for ax, t in zip(axes.flat, fams):
        for i, k in enumerate(models):
            bx = []
            for mg in range(1, 10):
                s = stats.loc[(k[0], k[1], t, mg)]
                bx.append({"med": s["median"], "q1": s["q1"], "q3": s["q3"],
                           "whislo": s["p05"], "whishi": s["p95"], "fliers": []})
            pos = np.arange(1, 10) + (i - (nm - 1) / 2) * w
            art = ax.bxp(bx, positions=pos, widths=w * 0.9, patch_artist=True,
                         showfliers=False, manage_ticks=False)
            for b in art["boxes"]:
                b.set_facecolor(col[k])
                b.set_linewidth(0.4)
            for part in ("medians", "whiskers", "caps"):
                for ln in art[part]:
                    ln.set_linewidth(0.6)
                    ln.set_color("black" if part == "medians" else "0.4")
        ax.axhline(0, color="0.6", lw=0.6, ls=":")
        ax.set_ylim(-1.05, RI_TOP + 0.05)  # the score is unbounded below; whiskers clipped at -1
        ticks, unit = magnitude_axis(t, canvas)
        ax.set_xticks(range(1, 10), ticks[1:10])
        ax.set_xlim(0.4, 9.6)
        ax.set_title(t, fontsize=10)
        ax.set_ylabel(axis_label("invariance", RI), fontsize=9)
        ax.set_xlabel(f"magnitude ({unit})", fontsize=9)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(fams):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=col[k]) for k in models]
    kind = "geometric" if geometric else "appearance"
    fig.suptitle(f"Representation invariance vs magnitude ({kind} transforms, {layer} layer;\n"
                 "boxes: quartiles, whiskers: 5–95 %, axis clipped at −1)", fontsize=11)
    fig.tight_layout()
    fig.legend(handles, [f"{a} · {REGIME_LABEL.get(r, r)}" for a, r in models],
               loc="upper center", ncol=min(len(models), 3), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return _save(fig, out, f"fig_profile_{kind}" + ("" if layer == "penultimate" else "_inner"))


def figure_median_profiles(profiles: dict[str, Any], out: Path, geometric: bool,
                           canvas: tuple[int, int] | None = None) -> list[str]:
    """Median invariance vs magnitude (in the family's unit), one line per model × regime
    (``summary.json``'s ``profiles_median[layer][arch][regime][transform]``, seed means; main
    regimes only): the profile figure for a directory without a store, whose quartiles are
    not in the summary."""
    fams = [t for t in B21_FAMILIES if (t in GEOMETRIC) == geometric]
    models = _sorted_models((a, r) for a, regs in profiles.items() for r in regs
                            if r in ("untrained", "none", STANDARD, "user"))
    if not models:
        return []
    plt = pyplot()
    col = _colors(models)
    ncol = 2
    nrow = int(np.ceil(len(fams) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 2.9 * nrow), squeeze=False)
    for ax, t in zip(axes.flat, fams):
        lo = 0.0
        for a, r in models:
            v = profiles[a][r].get(t)
            if v is None:
                continue
            ys = [np.nan if x is None else x for x in v[1:10]]
            ax.plot(range(1, len(ys) + 1), ys, "o-", ms=3, lw=1.2, color=col[(a, r)],
                    label=f"{a} · {REGIME_LABEL.get(r, r)}")
            lo = min(lo, float(np.nanmin(ys)))
        ticks, unit = magnitude_axis(t, canvas)
        ax.set_xticks(range(1, 10), ticks[1:10])
        ax.set_xlim(0.6, 9.4)
        ax.set_ylim(lo - 0.05, RI_TOP + 0.05)
        ax.axhline(0, color="0.6", lw=0.6, ls=":")
        ax.set_title(t, fontsize=10)
        ax.set_ylabel(axis_label("median invariance", RI), fontsize=9)
        ax.set_xlabel(f"magnitude ({unit})", fontsize=9)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(fams):]:
        ax.axis("off")
    kind = "geometric" if geometric else "appearance"
    fig.suptitle(f"Median representation invariance vs magnitude ({kind} transforms, "
                 "penultimate layer)", fontsize=11)
    fig.tight_layout()
    h, lab = axes.flat[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="upper center", ncol=3, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return _save(fig, out, f"fig_profile_median_{kind}")


def figure_heatmap(m: pd.Series, out: Path, stem: str = "fig_heatmap_median",
                   title: str = "Median invariance (magnitudes 3–7), penultimate layer"
                   ) -> list[str]:
    df = m.rename("v").reset_index()
    models = _sorted_models(zip(df.arch, df.regime))
    if not models:
        return []
    mat = np.array([[m.get((a, r, t), np.nan) for a, r in models] for t in B21_FAMILIES])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(11.0, 2.6 + 0.62 * len(models)), 7.0))
    im = ax.imshow(mat, cmap="viridis", vmin=min(0.0, np.nanmin(mat)), vmax=RI_TOP,
                   aspect="auto")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if mat[i, j] < 0.6 else "black")
    ax.set_yticks(range(len(B21_FAMILIES)), B21_FAMILIES, fontsize=9)
    ax.set_xticks(range(len(models)), [f"{a}\n{REGIME_LABEL.get(r, r)}" for a, r in models],
                  fontsize=9, rotation=60, ha="right")
    ax.axhline(len(GEOMETRIC) - 0.5, color="white", lw=1.5)
    cb = fig.colorbar(im, ax=ax, fraction=0.04)
    cb.set_label(axis_label(f"median invariance ({RI_TOP:g} = invariant)", RI), fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, stem)


def _class_names(classes: list[int], dataset: str) -> list[str]:
    if dataset == "fashion-mnist" and max(classes) < 10:
        return [FMNIST_CLASSES[c] for c in classes]
    return [str(c) for c in classes]


def figure_factors(fs: dict[str, Any], out: Path, dataset: str) -> list[str]:
    s = np.array(fs["scores"])
    ranks = np.argsort(np.argsort(-s, axis=1, kind="stable"), axis=1)
    names = _class_names(fs["classes"], dataset)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 0.5 * len(names) + 2.2))
    im = ax.imshow(s, cmap="magma", vmin=0, vmax=max(0.5, float(s.max())), aspect="auto")
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            ax.text(j, i, str(ranks[i, j] + 1), ha="center", va="center", fontsize=9,
                    color="white" if s[i, j] < 0.6 * max(0.5, s.max()) else "black",
                    fontweight="bold" if ranks[i, j] < TOP_K else "normal")
    ax.set_xticks(range(len(fs["transforms"])), fs["transforms"], rotation=45, ha="right",
                  fontsize=9)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, label="proportion of pairs boosted (best magnitude)")
    ax.set_title("Factors of variation per class (numbers: rank; bold: top 5)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out, "fig_factors")


def figure_specificity(fs: dict[str, Any], out: Path, dataset: str) -> list[str]:
    names = _class_names(fs["classes"], dataset)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.2, 5.6))
    for ax, key, title in zip(axes, ("spearman", "iou"),
                              ("Spearman ρ of factor rankings", f"IoU of top-{TOP_K} factors")):
        mat = np.array(fs[key])
        im = ax.imshow(mat, cmap="coolwarm", vmin=-1 if key == "spearman" else 0, vmax=1)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, f"{mat[i, j]:.1f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=9)
        ax.set_yticks(range(len(names)), names, fontsize=9)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.045)
    fig.suptitle("Class specificity of the factors of variation", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, "fig_specificity")


def figure_alignment(al: dict[str, Any], fs: dict[str, Any], out: Path, dataset: str
                     ) -> list[str]:
    keys = [k for k in al if k.endswith("/none") or k.endswith("/user")] or list(al)
    if not keys:
        return []
    names = _class_names(fs["classes"], dataset)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.2, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    ax = axes[0]
    w = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ax.bar(np.arange(len(names)) + (i - (len(keys) - 1) / 2) * w, al[k]["alignment"], w,
               label=f"{k.split('/')[0]} (chance {al[k]['chance']:.2f})")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel(f"share of top-{TOP_K} factors with gap > 0", fontsize=9)
    ax.set_title("Alignment of invariance gap\n(no aug − untrained) with factors", fontsize=10)
    # below the panel: it covers no bar
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2,
              frameon=False)
    ax = axes[1]
    order = [fs["transforms"].index(t) for t in B21_FAMILIES]
    mean_pb = np.array(fs["scores"])[:, order].mean(0)
    for k in keys:
        g = np.array([al[k]["gap"][t] for t in B21_FAMILIES])
        ax.scatter(mean_pb, g, s=18, label=k.split("/")[0])
    k0 = keys[0]
    gaps = np.array([al[k0]["gap"][t] for t in B21_FAMILIES])
    span = np.ptp(mean_pb) or 1.0, np.ptp(gaps) or 1.0
    clusters: list[list[int]] = []  # points too close to label apart share one label
    for j in np.argsort(-gaps):
        home = next((c for c in clusters if abs(mean_pb[j] - mean_pb[c[0]]) < 0.04 * span[0]
                     and abs(gaps[j] - gaps[c[-1]]) < 0.05 * span[1]), None)
        if home is None:
            clusters.append([j])
        else:
            home.append(j)
    for c in clusters:
        ax.annotate("\n".join(B21_FAMILIES[j] for j in c), (mean_pb[c[0]], gaps[c[0]]),
                    fontsize=9, xytext=(3, 2), textcoords="offset points", va="top")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xlabel("proportion boosted (mean over classes)", fontsize=9)
    ax.set_ylabel("invariance gap (mid magnitudes)", fontsize=9)
    ax.set_title("Gap vs factor strength\nper transform", fontsize=10)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3,
              frameon=False)
    fig.tight_layout()
    return _save(fig, out, "fig_alignment")


# ------------------------------------------------------------------------------ build

def _profiles_json(prof: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in sorted(set(prof.layer)):
        med = medians(prof, layer)
        d: dict[str, Any] = defaultdict(lambda: defaultdict(dict))
        for (a, r, t), row in med.iterrows():
            d[a][r][t] = [round(float(v), 4) for v in row.values]
        out[layer] = {a: dict(v) for a, v in d.items()}
    return out


def build_report(out_dir: str | Path, store: ResultsStore | None = None) -> list[str]:
    """Write summary.json, the tables and the figures of ``out_dir``; returns the paths."""
    out = Path(out_dir)
    own = store is None
    store = store or ResultsStore(out / "store.sqlite")
    try:
        data = load(store)
    finally:
        if own:
            store.close()
    return _write(out, data, _dataset(out))


# the canvas (H, W) of the built-in data sets: translations are labelled in pixels on it
CANVAS = {"mnist": (28, 28), "fashion-mnist": (28, 28)}


def redraw_from_summary(out_dir: str | Path) -> list[str]:
    """In a directory without a store (e.g. committed results): redraw the figures that
    ``summary.json`` holds the data of — median profiles (``fig_profile_median_*``), the
    mid-magnitude heat maps, the factors of variation, their class specificity and
    alignment. The box-plot profiles need the stored quartiles and are left as they are."""
    out = Path(out_dir)
    s = json.loads((out / "summary.json").read_text())
    mids = [m for m in s.get("mid_magnitudes", MID)]
    dataset = _dataset(out)

    def mid_series(layers: list[str]) -> pd.Series:
        vals = {}
        for lay in layers:
            for a, regs in s["profiles_median"][lay].items():
                for r, fams in regs.items():
                    for t, v in fams.items():
                        vals[(a, r, t)] = float(np.mean([v[i] for i in mids if i < len(v)]))
        idx = pd.MultiIndex.from_tuples(list(vals), names=["arch", "regime", "transform"])
        return pd.Series(list(vals.values()), index=idx)

    layers = list(s.get("profiles_median", {}))
    paths: list[str] = []
    if "penultimate" in layers:  # the box plots need the stored quartiles: medians instead
        for geometric in (True, False):
            paths += figure_median_profiles(s["profiles_median"]["penultimate"], out,
                                            geometric, CANVAS.get(dataset))
    if "penultimate" in layers:
        paths += figure_heatmap(mid_series(["penultimate"]), out)
    inner = sorted(set(layers) - {"penultimate"})
    if inner:
        paths += figure_heatmap(mid_series(inner), out, "fig_heatmap_median_inner",
                                "Median invariance (magnitudes 3–7), inner layer")
    fs = s.get("factors")
    if fs:
        paths += figure_factors(fs, out, dataset)
        paths += figure_specificity(fs, out, dataset)
        if s.get("alignment"):
            paths += figure_alignment(s["alignment"], fs, out, dataset)
    return paths


def _dataset(out: Path) -> str:
    try:
        return str(json.loads((out / "config.json").read_text())["config"]["data"]["dataset"])
    except (OSError, KeyError, ValueError, TypeError):
        return ""


def _write(out: Path, data: dict[str, Any], dataset: str) -> list[str]:
    prof, acc = data["profile"], data["accuracy"]
    paths: list[str] = []
    if prof.empty:
        return paths
    m = mid(medians(prof))
    claims = [claim_data_vs_aug(m), claim_arch_vs_regime(m)]
    summary: dict[str, Any] = {"profiles_median": _profiles_json(prof),
                               "mid_magnitudes": list(MID)}
    accs = acc.groupby(["arch", "regime"]).accuracy.agg(["mean", "std", "count"]).reset_index()
    summary["accuracy"] = accs.to_dict(orient="records")
    tr = data.get("training")
    if tr is not None and not tr.empty:
        summary["training"] = tr.to_dict(orient="records")
        paths += write_table(tr, out, "training", "Training of each model: epochs, what "
                             "stopped it, best validation accuracy and its gain over the "
                             "last 20 epochs run (0 = converged by this measure)")
    abl_arch = _ablation_arch(m)
    if abl_arch:
        abl = ablation_table(m, acc, abl_arch)
        summary["ablation"] = {"arch": abl_arch, "rows": abl.to_dict(orient="records")}
        paths += write_table(abl, out, "ablation", f"Augmentation ablation ({abl_arch}): "
                             "test accuracy and mid-magnitude median invariance")
    if data["factors"]:
        fs = factor_summary(data["factors"][0])
        fs["reference_model"] = list(data["factors"][0]["model"])
        al = alignment_table(m, fs)
        claims += [claim_specific(fs), claim_alignment(al)]
        summary["factors"] = fs
        summary["alignment"] = al
        paths += figure_factors(fs, out, dataset)
        paths += figure_specificity(fs, out, dataset)
        paths += figure_alignment(al, fs, out, dataset)
    summary["claims"] = claims
    paths += write_table(_heat_table(m), out, "profile_mid", "Median invariance, magnitudes "
                         "3–7 (rows: transform; columns: architecture/regime)")
    canvas = CANVAS.get(dataset)
    paths += figure_boxes(prof, out, geometric=True, canvas=canvas)
    paths += figure_boxes(prof, out, geometric=False, canvas=canvas)
    paths += figure_heatmap(m, out)
    inner = sorted(set(prof.layer) - {"penultimate"})
    if inner:
        mi = mid(pd.concat([medians(prof, lay) for lay in inner]))
        paths += figure_heatmap(mi, out, "fig_heatmap_median_inner",
                                "Median invariance (magnitudes 3–7), inner layer")
    paths += write_claims(out, claim_records(claims, acc))
    atomic_write_json(out / "summary.json", _clean(summary))
    paths.append(str(out / "summary.json"))
    return paths


def _clean(obj: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _ablation_arch(m: pd.Series) -> str | None:
    counts = m.rename("v").reset_index().groupby("arch").regime.nunique()
    return str(counts.idxmax()) if len(counts) and counts.max() > 3 else None


def _heat_table(m: pd.Series) -> pd.DataFrame:
    df = m.rename("v").reset_index()
    models = _sorted_models(zip(df.arch, df.regime))
    rows = []
    for t in B21_FAMILIES:
        row = {"transform": t}
        row.update({f"{a}/{r}": round(float(m.get((a, r, t), np.nan)), 3) for a, r in models})
        rows.append(row)
    return pd.DataFrame(rows)


def print_table(out_dir: str | Path) -> str:
    """The claims check and the ablation table, as printed by ``invlab study origins``."""
    out = Path(out_dir)
    s = json.loads((out / "summary.json").read_text())
    cs = read_claims(out)
    lines = [render_text(cs) if cs is not None else claims_markdown(s["claims"]) + "\n"]
    if (out / "ablation.md").exists():
        lines.append((out / "ablation.md").read_text())
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    path = ((cfg.get("config") or {}).get("data") or {}).get("path")
    lines.append(f"Small grayscale images ({path or _dataset(out) or 'your data'}) are not "
                 "ImageNet: "
                 "answers that differ from the paper are reported as measured.")
    return "\n".join(lines)
