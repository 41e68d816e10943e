"""The generalization report's statistics on synthetic zoo tables (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from invlab.report import generalization as rep

SETS = ("id", "blur", "noise", "thin")


def _wide(n: int = 30, seed: int = 0, with_ei: bool = True) -> dict[str, pd.DataFrame]:
    """A zoo where EI tracks accuracy weakly and −LI strongly but negatively."""
    rng = np.random.default_rng(seed)
    ids = [f"m{i}" for i in range(n)]
    attrs = pd.DataFrame({"family": ["mlp", "cnn"] * (n // 2),
                          "arch": ["mlp", "cnn_small"] * (n // 2),
                          "augment": (["none", "r4", "translate"] * n)[:n],
                          "n_train": ([500, 10000] * n)[:n], "epochs": 3, "seed": 0}, index=ids)
    out = {}
    for k, ts in enumerate(SETS):
        acc = np.clip(rng.uniform(0.2, 0.95, n) - 0.1 * k, 0, 1)
        w = attrs.copy()
        w["accuracy"] = acc
        if with_ei:
            w["ei"] = 0.3 * acc + rng.normal(0, 0.15, n)
        w["agreement"] = rng.uniform(0, 1, n)
        w["neg_js"] = -acc + rng.normal(0, 0.05, n)
        w["neg_kl"] = -acc + rng.normal(0, 0.05, n)
        w["neg_li"] = -acc + rng.normal(0, 0.02, n)
        w["confidence"] = np.clip(acc + rng.normal(0.05, 0.03, n), 0, 1)
        w.index.name = "model_id"
        out[ts] = w
    return out


def test_ranking_is_by_strength_and_keeps_the_sign() -> None:
    wide = _wide()
    stats = rep.model_centric(wide, n_boot=50, seed=0)
    r = rep.ranking(stats)
    for ts in SETS:
        g = r[r.test_set == ts].sort_values("rank")
        assert list(g.abs_spearman) == sorted(g.abs_spearman, reverse=True)
        assert (g.abs_spearman == g.spearman.abs()).all()
        li = g[g.measure == "neg_li"].iloc[0]
        assert li.spearman < 0 and li["rank"] < g[g.measure == "ei"].iloc[0]["rank"]


def test_claim_two_uses_strength_and_names_the_negative_measures() -> None:
    wide = _wide()
    stats = rep.model_centric(wide, n_boot=50, seed=0)
    c2 = rep.claims(stats, rep.effects(wide))[1]
    assert c2["holds"] is False
    assert "largest |ρ| on 0/4" in c2["evidence"] and "−LI" in c2["evidence"]
    for t in SETS:  # flip the sign of every other measure: EI is now the strongest
        for m in ("agreement", "neg_js", "neg_kl", "neg_li"):
            stats[t][m]["spearman"] = 0.1 * np.sign(stats[t][m]["spearman"])
    assert rep.claims(stats, rep.effects(wide))[1]["holds"] is True


def test_subgroups_carry_every_measure_with_probit() -> None:
    wide = _wide()
    sg = rep.subgroups(wide, n_boot=20, seed=0)
    per = sg["mlp"]["per_test_set"]["id"]
    assert set(per) == {"ei", "agreement", "neg_js", "neg_kl", "neg_li", "confidence"}
    w = wide["id"][wide["id"].family == "mlp"]
    assert per["neg_li"]["spearman"] == pytest.approx(
        sps.spearmanr(w["neg_li"], w["accuracy"]).statistic, abs=1e-9)
    assert "probit" in per["ei"] and "kendall_ci" in per["ei"]


def test_dataset_centric_statistics_per_measure_against_scipy() -> None:
    wide = _wide()
    dc = rep.dataset_centric(wide, n_boot=200, seed=0)
    m0 = "m3"
    x = [wide[t].at[m0, "confidence"] for t in SETS]
    y = [wide[t].at[m0, "accuracy"] for t in SETS]
    got = dc["per_measure"]["confidence"]["per_model"][m0]
    assert got["spearman"] == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-9)
    assert got["kendall"] == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-9)
    lr = sps.linregress(x, y)
    assert got["slope"] == pytest.approx(lr.slope) and got["r2"] == pytest.approx(lr.rvalue ** 2)
    s = dc["per_measure"]["ei"]
    lo, hi = s["spearman_median_ci"]
    assert lo <= s["spearman_median"] <= hi
    assert dc["spearman_median"] == s["spearman_median"]  # EI's summary at the top level


def test_raw_confidence_baseline_is_the_unfitted_mae() -> None:
    wide = _wide()
    est = rep.estimation(wide)["estimation"]["confidence_raw"]
    brute = np.mean([np.mean(np.abs(wide[t]["confidence"] - wide[t]["accuracy"]))
                     for t in SETS[1:]])
    assert est["mae"] == pytest.approx(brute)
    assert set(est["per_set"]) == set(SETS[1:])


def test_figures_without_rotation_ei(tmp_path: Path) -> None:
    """Your own non-square models have no rotation EI: the figures still render."""
    wide = _wide(with_ei=False)
    stats = rep.model_centric(wide, n_boot=0, seed=0)
    paths = rep.figures(wide, stats, tmp_path)
    assert (tmp_path / "scatter_ei.png").exists() and len(paths) >= 3
    assert rep.claims(stats, rep.effects(wide))[0]["holds"] is False
