"""The reports and the audit read a metric's direction, short name and range from the metric
registry (:mod:`invlab.report.metric_labels`): flipping ``higher_is_better`` in the registry
flips the plots' axis labels, the table headers and the audit's verdict rules."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import matplotlib.figure
import pytest

from invlab.metrics.registry import REGISTRY
from invlab.report import metric_labels as ml

ARROW = {True: "↑", False: "↓", None: ""}


def _flip(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``name``'s registry entry with the opposite ``higher_is_better``."""
    spec = REGISTRY[name]
    assert spec.higher_is_better is not None
    monkeypatch.setitem(REGISTRY, name,
                        dataclasses.replace(spec, higher_is_better=not spec.higher_is_better))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every matplotlib figure saved while the test runs."""
    figs: list[Any] = []
    orig = matplotlib.figure.Figure.savefig

    def savefig(self: Any, *a: Any, **k: Any) -> Any:
        if self not in figs:
            figs.append(self)
        return orig(self, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return figs


@pytest.mark.parametrize("name", list(REGISTRY))
def test_direction_of_every_metric_is_the_registry_s(name: str) -> None:
    hib = REGISTRY[name].higher_is_better
    assert ml.higher_is_better(name) is hib
    assert ml.arrow(name) == ARROW[hib]
    assert ml.axis_label("x", name) == (f"x, {ARROW[hib]} better" if hib is not None else "x")
    neg = None if hib is None else not hib  # the generalization study's neg_<metric>
    assert ml.higher_is_better(f"neg_{name}") is neg
    lo, hi = REGISTRY[name].value_range
    assert ml.value_range(f"neg_{name}") == (-hi, -lo)


def test_keys_of_stores_resolve_to_their_metric() -> None:
    assert ml.short_name("kl") == "DI" and ml.short_name("logit_l2") == "LI"
    assert ml.short_name("si") == "SI" and ml.short_name("agreement") == "agreement"
    assert ml.column_label("sigma_max", "σ_max") == "σ_max ↓"  # the sensitivity metric
    assert ml.higher_is_better("representation_invariance_d_same@conv1") is True
    assert ml.higher_is_better("neg_li") is True  # −LI: higher = more invariant
    assert ml.higher_is_better("confidence") is None and ml.arrow("nu") == ""
    assert ml.value_range("nu") == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="no better direction"):
        ml.meets("equivariance_alignment", 0.1, 0.0)


def test_flipping_the_registry_flips_labels_and_comparisons(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    assert ml.column_label("kl") == "DI ↓" and ml.meets("kl", 0.01, 0.05)
    _flip(monkeypatch, "kl")
    assert ml.column_label("kl") == "DI ↑"
    assert not ml.meets("kl", 0.01, 0.05) and ml.comparison("kl") == "≥"
    assert ml.higher_is_better("neg_kl") is False


def test_genuine_table_headers_follow_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.report.genuine import table_frame

    rows = [{"dataset": "mnist", "group": "r4", "method": "da", "metric": m, "mean": 0.5,
             "std": 0.0, "n_seeds": 1} for m in ("accuracy", "logit_l2", "kl")]
    cols = list(table_frame(rows, "mnist").columns)
    assert "LI ↓" in cols and "DI ↓" in cols and "SI ↑" in cols and "acc %" in cols
    _flip(monkeypatch, "logit_l2")
    assert "LI ↑" in list(table_frame(rows, "mnist").columns)


def _family_entry() -> dict[str, Any]:
    members = [10.0, 20.0, 30.0]
    met = {"kl": [0.1, 0.2, 0.3], "logit_l2": [1.0, 2.0, 3.0],
           "effective_invariance": [0.9, 0.8, 0.7], "agreement": [0.95, 0.9, 0.8],
           "saliency_similarity": [0.5] * 3, "representation_invariance": [0.9, 0.5, -0.2]}
    return {"name": "rotate", "kind": "family", "members": members, "metrics": met}


def _legend_axis(fig: Any) -> dict[str, str]:
    """``{legend label: y-axis label of the axes it is drawn on}``."""
    return {line.get_label(): ax.get_ylabel() for ax in fig.axes for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def test_audit_profile_axes_follow_the_registry(tmp_path: Path, drawn: list[Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.audit import profile_plot

    assert profile_plot(_family_entry(), tmp_path)
    on = _legend_axis(drawn[-1])
    assert on["agreement"] == on["EI"] == on["RI"] == "score (1 = invariant), ↑ better"
    assert on["DI = KL (right axis)"] == "DI = KL (nats), ↓ better"
    _flip(monkeypatch, "agreement")  # now lower is better: it moves to the right axis
    assert profile_plot(_family_entry(), tmp_path)
    on = _legend_axis(drawn[-1])
    assert on["agreement (right axis)"].endswith("↓ better")
    assert "agreement" not in on and on["EI"].endswith("↑ better")


def test_drift_figure_axis_direction_follows_the_registry(tmp_path: Path, drawn: list[Any],
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from invlab.report.drift import figure4

    summary = [{"mode": "blend", "group": "r4", "method": m, "beta": b, "metric": k,
                "mean": 0.5, "std": 0.1, "n_seeds": 2}
               for m in ("wt", "da", "ir") for b in (0.0, 1.0)
               for k in ("kl", "accuracy_ratio")]
    figure4(summary, "blend", tmp_path)
    ax, ax2 = drawn[-1].axes[:2]
    assert ax.get_ylabel() == "DI = KL (solid), ↓ better"
    assert ax2.get_ylabel().endswith("↑ better")
    _flip(monkeypatch, "kl")
    figure4(summary, "blend", tmp_path)
    assert drawn[-1].axes[0].get_ylabel() == "DI = KL (solid), ↑ better"


def test_audit_verdict_rules_point_the_registry_s_way(monkeypatch: pytest.MonkeyPatch) -> None:
    from invlab.audit import THRESHOLDS, verdict
    from invlab.audit.verdicts import MECHANISM_RULES, OUTPUT_RULES, rules_text

    for metric, key in (*OUTPUT_RULES, *MECHANISM_RULES):  # di_max: at most; *_min: at least
        assert key.endswith("_max") is (ml.higher_is_better(metric) is False), key
    assert rules_text(OUTPUT_RULES, THRESHOLDS) == "DI ≤ 0.05 and agreement ≥ 0.95"
    assert verdict(0.01, 1.0, 0.95, True)[0] == "invariant"
    _flip(monkeypatch, "kl")
    assert rules_text(OUTPUT_RULES, THRESHOLDS) == "DI ≥ 0.05 and agreement ≥ 0.95"
    assert verdict(0.01, 1.0, 0.95, True)[0] == "not invariant"


def test_generalization_measures_all_point_up() -> None:
    """The generalization report compares signed ρ(accuracy, measure) across measures ("stronger
    but negative"): that needs every invariance measure oriented higher = more invariant, as
    the registry says of EI and agreement and of the negated −JS, −KL, −LI."""
    from invlab.report.generalization import INVARIANCE_MEASURES

    assert all(ml.higher_is_better(m) is True for m in INVARIANCE_MEASURES)
