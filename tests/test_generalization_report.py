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
    c2 = rep.claims(stats, rep.effects(wide)).claims[1]
    assert c2.verdict == "does not hold"
    assert c2.values["EI largest |ρ|"].startswith("0/4") and "−LI" in c2.values["stronger but negative"]
    for t in SETS:  # flip the sign of every other measure: EI is now the strongest
        for m in ("agreement", "neg_js", "neg_kl", "neg_li"):
            stats[t][m]["spearman"] = 0.1 * np.sign(stats[t][m]["spearman"])
    assert rep.claims(stats, rep.effects(wide)).claims[1].verdict == "holds"


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
    c1 = rep.claims(stats, rep.effects(wide)).claims[0]
    assert c1.verdict == "cannot be evaluated" and c1.reason == "EI was not measured"


def test_claims_cannot_be_evaluated_on_two_models_or_without_metadata() -> None:
    """The issue's cases: a 2-model user zoo printed FALSE with Δacc +nan; a 7-model zoo
    without n_train/augmentation metadata printed the third claim FALSE."""
    wide = _wide(n=2)
    stats = rep.model_centric(wide, n_boot=0, seed=0)
    cs = rep.claims(stats, rep.effects(wide), n_models=2)
    assert [c.verdict for c in cs.claims] == ["cannot be evaluated"] * 3
    assert all("too few models: 2" in c.reason for c in cs.claims[:2])
    wide = _wide(n=8)
    for w in wide.values():
        w["n_train"] = np.nan
        w["augment"] = "user"
    stats = rep.model_centric(wide, n_boot=0, seed=0)
    cs = rep.claims(stats, rep.effects(wide))
    assert cs.claims[0].verdict in ("holds", "does not hold")
    c3 = cs.claims[2]
    assert c3.verdict == "cannot be evaluated" and c3.reason.startswith("missing metadata")
    # a NaN statistic: an undefined ρ on one test set
    wide = _wide(n=8)
    stats = rep.model_centric(wide, n_boot=0, seed=0)
    stats["blur"]["ei"]["spearman"] = None
    c1 = rep.claims(stats, rep.effects(wide)).claims[0]
    assert c1.verdict == "cannot be evaluated" and "NaN statistic: ρ blur" in c1.reason


def test_models_below_the_floor_are_flagged() -> None:
    wide = _wide(n=8)
    stats = rep.model_centric(wide, n_boot=0, seed=0)
    acc = {f"m{i}": (0.12 if i < 2 else 0.4 if i < 3 else 0.9) for i in range(8)}
    cs = rep.claims(stats, rep.effects(wide), acc)
    assert all(c.caveat == "3 of 8 models below the 50 % ID accuracy floor, 2 of them at chance"
               for c in cs.claims)


def test_print_table_survives_statistics_that_could_not_be_computed(tmp_path: Path) -> None:
    """A 2-model zoo with one test set of its own has no confidence MAE (None in
    summary.json): the print says n/a instead of raising TypeError."""
    import json

    from invlab.report.claims import write_claims

    s = {"zoo_size": 2, "test_sets": ["mine"],
         "model_centric": {"mine": {"ei": {"spearman": None}}},
         "estimation": {"confidence_raw": {"mae": None},
                        "ei": {"linear": {"mae": None}, "probit": {"mae": None}}},
         "selection": {"ei": {"mean_regret": None}}}
    (tmp_path / "summary.json").write_text(json.dumps(s))
    wide = _wide(n=2)
    write_claims(tmp_path, rep.claims(rep.model_centric(wide, n_boot=0, seed=0),
                                      rep.effects(wide), n_models=2))
    text = rep.print_table(tmp_path)
    assert "n/a / n/a" in text and "no fit n/a" in text and "CANNOT BE EVALUATED" in text


def test_claim_three_needs_two_training_set_sizes() -> None:
    wide = _wide(n=8)
    for w in wide.values():
        w["n_train"] = 300
    stats = rep.model_centric(wide, n_boot=0, seed=0)
    c3 = rep.claims(stats, rep.effects(wide)).claims[2]
    assert c3.verdict == "cannot be evaluated" and "same n_train (300)" in c3.reason
