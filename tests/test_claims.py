"""Claims as records: three verdicts, the reason they cannot be evaluated, the renderings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from invlab.report.claims import (
    CANNOT,
    FAILS,
    HOLDS,
    Claim,
    ClaimSet,
    accuracy_gate,
    decide,
    read_claims,
    render_html,
    render_markdown,
    render_text,
    write_claims,
)


def test_decide_gives_three_outcomes_and_names_the_nan() -> None:
    assert decide("c", "x > 0", {"x": 1.0}, True).verdict == HOLDS
    assert decide("c", "x > 0", {"x": -1.0}, False).verdict == FAILS
    c = decide("c", "x > 0 and y > 0", {"x": 1.0, "y": math.nan}, True)
    assert c.verdict == CANNOT and c.reason == "NaN statistic: y could not be computed"
    assert c.values == {"x": 1.0, "y": None}  # strict JSON
    c = decide("c", "x > 0", {"x": 1.0}, True, reason="too few models: 2")
    assert c.verdict == CANNOT and c.reason == "too few models: 2"
    assert decide("c", "x", {"x": 1.0}, None).verdict == CANNOT
    # only the required values are checked
    assert decide("c", "x", {"x": 1.0, "note": None}, True, required=["x"]).verdict == HOLDS


def test_a_record_without_a_reason_or_with_an_unknown_verdict_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        Claim("c", "x", {}, CANNOT)
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("c", "x", {}, "TRUE")


def test_claims_json_round_trips_and_every_rendering_comes_from_it(tmp_path: Path) -> None:
    cs = ClaimSet("T", (decide("a", "x > 0", {"x": 1.0}, True, scope="s1"),
                        decide("b", "x > 0", {"x": -1.0}, False, caveat="weak models"),
                        decide("c", "x > 0", {"x": float("nan")}, True)), ("intro",))
    write_claims(tmp_path, cs)
    doc = json.loads((tmp_path / "claims.json").read_text())
    assert doc["format"] == "invlab.claims/1"
    assert doc["counts"] == {HOLDS: 1, FAILS: 1, CANNOT: 1}
    assert read_claims(tmp_path) == cs
    md = (tmp_path / "claims.md").read_text()
    assert md == render_markdown(cs)
    assert "- **HOLDS**: [s1] a." in md and "- **DOES NOT HOLD**: b." in md
    assert "why: NaN statistic: x could not be computed." in md and "caveat: weak models." in md
    assert "1 of 3 hold, 1 do not, 1 cannot be evaluated." in md
    assert "**" not in render_text(cs)
    page = render_html(cs)
    assert "1 of 2 evaluated hold" in page and "1 cannot be evaluated" in page
    assert page.count("<li ") == 3 and '<li class="na">' in page


def test_read_claims_of_old_or_broken_directories(tmp_path: Path) -> None:
    assert read_claims(tmp_path) is None  # only claims.md, or none
    (tmp_path / "claims.json").write_text('{"claims": []}')
    with pytest.raises(ValueError, match="not a readable claims record"):
        read_claims(tmp_path)


def test_accuracy_gate_at_chance_and_below_the_floor() -> None:
    reason, caveat = accuracy_gate({"a": 0.12, "b": 0.4, "c": 0.9, "d": None}, 10)
    assert reason.startswith("models at chance") and "a 12.0 %" in reason and "b " not in reason
    assert "below the 50 % accuracy floor: b 40.0 %" in caveat
    assert accuracy_gate({"a": 0.16, "b": 0.95}, 10) == (
        "", "computed from models below the 50 % accuracy floor: a 16.0 %")
    assert accuracy_gate({"a": 0.95}, 10) == ("", "")


def test_origins_claims_gate_trained_models_only() -> None:
    from invlab.report.origins import claim_records

    answers = [{"question": "q1?", "answer": True, "criterion": "k", "data_gain": 0.1},
               {"question": "q2?", "answer": None, "reason": "needs >= 2 architectures"}]
    acc = pd.DataFrame({"arch": ["mlp5"] * 3, "regime": ["untrained", "none", "translate_zoom"],
                        "accuracy": [0.1, 0.28, 0.29]})
    cs = claim_records(answers, acc)
    assert cs.claims[0].verdict == HOLDS and "below the 50 % accuracy floor" in cs.claims[0].caveat
    assert "untrained" not in cs.claims[0].caveat  # at chance by design, not gated
    assert cs.claims[1].verdict == CANNOT and cs.claims[1].reason == "needs >= 2 architectures"
    acc.loc[1, "accuracy"] = 0.11
    assert claim_records(answers, acc).claims[0].verdict == CANNOT
    assert "mlp5/none 11.0 %" in claim_records(answers, acc).claims[0].reason


def test_genuine_claims_cannot_be_evaluated_without_all_methods_or_at_chance() -> None:
    from invlab.report.genuine import claims

    rows = [{"dataset": "mnist", "group": "r4", "method": m, "metric": k, "mean": v}
            for m, acc in (("wt", 95.0), ("da", 94.0), ("ir", 90.0))
            for k, v in (("accuracy", acc), ("logit_l2", 0.0 if m == "wt" else 0.01 if m == "ir"
                                             else 30.0), ("kl", 0.0 if m != "da" else 0.3),
                         ("saliency_similarity", 1.0 if m == "wt" else 0.96 if m == "ir" else 0.3))]
    cs = claims(rows)
    assert [c.verdict for c in cs.claims] == [HOLDS] * 6
    cs = claims([r for r in rows if r["method"] != "ir"])
    assert all(c.verdict == CANNOT and "found WT, DA" in c.reason for c in cs.claims)
    at_chance = [dict(r, mean=12.0) if r["metric"] == "accuracy" and r["method"] == "da" else r
                 for r in rows]
    assert all(c.verdict == CANNOT and "DA 12.0 %" in c.reason for c in claims(at_chance).claims)
    nan_si = [dict(r, mean=float("nan")) if r["metric"] == "saliency_similarity"
              and r["method"] == "ir" else r for r in rows]
    c = claims(nan_si).claims[4]
    assert c.verdict == CANNOT and "IR test SI" in c.reason


def test_drift_and_spectral_claims_from_the_committed_summaries_and_when_unevaluable() -> None:
    from invlab.report import drift, spectral

    root = Path(__file__).resolve().parents[1] / "results"
    d = json.loads((root / "drift" / "summary.json").read_text())
    assert all(c.verdict == HOLDS for c in drift.claims(d).claims)
    no_ir = [r for r in d if r["method"] != "ir"]
    assert all(c.verdict == CANNOT and "found WT, DA" in c.reason
               for c in drift.claims(no_ir).claims)
    at_chance = [dict(r, mean=0.1) if r["metric"] == "accuracy" and r["method"] == "wt" else r
                 for r in d]
    assert all(c.verdict == CANNOT and "at chance" in c.reason
               for c in drift.claims(at_chance).claims)
    s = json.loads((root / "spectral" / "summary.json").read_text())
    cs = spectral.claims(s)
    bad = [c.scope for c in cs.claims if c.verdict == FAILS]
    assert bad == ["R4/logit_l2_normalized", "T3/logit_l2_normalized"]  # σ_max above DA's
    no_da = [r for r in s if r["method"] != "da"]
    assert all(c.verdict == CANNOT and c.reason == "no DA model of this group"
               for c in spectral.claims(no_da).claims)
    nan = [dict(r, mean=float("nan")) if r["metric"] == "sigma_max" else r for r in s]
    assert all("NaN statistic" in c.reason for c in spectral.claims(nan).claims[::2])
