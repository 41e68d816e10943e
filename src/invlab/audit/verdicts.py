"""The audit's verdicts: thresholds (:data:`THRESHOLDS`), the model's health
(:data:`HEALTH`, :func:`model_health`), the verdict text per transform and member
(:func:`verdict`) and the verdicts as claim records (:func:`audit_claims`).

Which way each threshold points (DI at most, agreement and SI at least) is the metric's better
direction in the metric registry (:func:`invlab.report.metric_labels.meets`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from invlab.report.claims import CANNOT as NOT_EVALUATED
from invlab.report.claims import FAILS, HOLDS, ClaimSet, decide
from invlab.report.metric_labels import comparison, meets, short_name

THRESHOLDS = {"di_max": 0.05, "agreement_min": 0.95, "si_min": 0.9}
"""Verdict thresholds: outputs invariant iff DI ≤ di_max and agreement ≥ agreement_min;
mechanism invariant iff SI ≥ si_min."""
OUTPUT_RULES = (("kl", "di_max"), ("agreement", "agreement_min"))
"""Outputs invariant iff every ``(metric, threshold key)`` is met (:func:`meets_rules`)."""
MECHANISM_RULES = (("saliency_similarity", "si_min"),)
"""Mechanism invariant iff SI meets ``si_min``."""
HEALTH = {"chance_margin": 0.05, "collapse_share": 0.9}
"""Preconditions of a verdict (:func:`model_health`): a model whose clean accuracy is within
``chance_margin`` (5 points) of chance 1/K, or whose clean predictions put more than
``collapse_share`` (90 %) of the images in one class (when the labels do not), is never
called invariant — a constant predictor agrees with itself under every transform. Its
verdict is ``cannot be evaluated`` unless its outputs visibly change (``not invariant``)."""
CANNOT = "cannot be evaluated"


def meets_rules(rules: Sequence[tuple[str, str]], values: dict[str, float],
                th: dict[str, float]) -> bool:
    """Every ``values[metric]`` meets its threshold ``th[key]`` in the metric's better
    direction (``≤`` for DI, ``≥`` for agreement and SI: the metric registry's)."""
    return all(meets(m, values[m], th[k]) for m, k in rules)


def rules_text(rules: Sequence[tuple[str, str]], th: dict[str, float], sep: str = " and ",
               ascii: bool = False) -> str:
    """The rules in words: ``DI ≤ 0.05 and agreement ≥ 0.95`` (``<=``/``>=`` with ``ascii``)."""
    return sep.join(f"{short_name(m)} {comparison(m, ascii)} {th[k]}" for m, k in rules)


def _nums(di: float, agreement: float, si: float | None) -> str:
    return f"DI {di:.3g}, agreement {agreement:.2f}" + (f", SI {si:.2f}" if si is not None
                                                        else "")


def verdict(di: float, agreement: float, si: float | None, invertible: bool,
            th: dict[str, float] | None = None, why: str | None = None) -> tuple[str, str]:
    """``(label, sentence)``: ``invariant``, ``outputs only``, ``outputs, mechanism not
    measured`` or ``not invariant``, with the numbers behind it."""
    th = th or THRESHOLDS
    nums = _nums(di, agreement, si)
    out_ok = meets_rules(OUTPUT_RULES, {"kl": di, "agreement": agreement}, th)
    if not out_ok:
        return "not invariant", f"not invariant in its outputs: {nums}"
    if si is None:
        why = why or ("not invertible" if not invertible else "not measured")
        return ("outputs only (mechanism not measured)",
                f"invariant in its outputs; its mechanism cannot be checked (SI: {why}): {nums}")
    if meets_rules(MECHANISM_RULES, {"saliency_similarity": si}, th):
        return "invariant", f"invariant in its outputs and in its mechanism: {nums}"
    return ("outputs only",
            f"invariant in its outputs but not in its mechanism: {nums}")


def model_health(pred: torch.Tensor, labels: torch.Tensor | None, classes: int,
                 health: dict[str, float] | None = None) -> dict[str, Any]:
    """Whether the model's verdicts can mean anything (see :data:`HEALTH`).

    Args:
        pred: ``[N]`` clean predicted classes; labels: ``[N]`` or None; classes: K.

    Returns ``{"chance", "clean_accuracy", "top_class", "top_class_share", "label_top_share",
    "at_chance", "collapsed", "problems"}``; ``problems`` holds one sentence per failed
    precondition (empty: verdicts stand)."""
    h = health or HEALTH
    n = max(int(pred.numel()), 1)
    counts = torch.bincount(pred.long().flatten(), minlength=classes)
    top = int(counts.argmax())
    share = float(counts[top]) / n
    chance = 1.0 / max(classes, 1)
    acc = None if labels is None else float((pred == labels).double().mean())
    lshare = (None if labels is None else
              float(torch.bincount(labels.long().flatten()).max()) / max(int(labels.numel()), 1))
    at_chance = acc is not None and acc <= chance + h["chance_margin"]
    collapsed = share > h["collapse_share"] and (lshare is None or lshare <= h["collapse_share"])
    problems = []
    if at_chance:
        problems.append(f"the model is at chance (clean accuracy {100 * acc:.1f} %, chance "
                        f"{100 * chance:.1f} % + {100 * h['chance_margin']:.0f} points)")
    if collapsed:
        problems.append(f"its predictions collapse to one class ({100 * share:.0f} % of the "
                        f"images are predicted class {top}; threshold "
                        f"{100 * h['collapse_share']:.0f} %)")
    return {"chance": chance, "clean_accuracy": acc, "top_class": top, "top_class_share": share,
            "label_top_share": lshare, "at_chance": at_chance, "collapsed": collapsed,
            "problems": problems, "thresholds": dict(h)}


def _gate(v: tuple[str, str], problems: list[str]) -> tuple[str, str]:
    """A verdict under the model's preconditions: "not invariant" stands (its outputs change),
    anything that would call a degenerate model invariant cannot be evaluated."""
    if not problems or v[0] == "not invariant":
        return v
    return CANNOT, (f"cannot be evaluated: {'; '.join(problems)}, so agreement with itself "
                    f"says nothing about invariance ({v[1]})")


def _summarize(t: Any, res: dict[str, Any], th: dict[str, float],
               problems: list[str] | None = None) -> dict[str, Any]:
    """Per-member verdicts and the transform's overall verdict (``problems``: the model's
    failed preconditions, :func:`model_health`)."""
    met = res["metrics"]
    k = len(res["members"])
    sis = met.get("saliency_similarity")
    why = res.get("si_note")
    per = [verdict(met["kl"][j], met["agreement"][j], None if sis is None else sis[j],
                   t.is_invertible, th, why) for j in range(k)]
    mean = {name: (None if vals is None else float(sum(vals) / len(vals)))
            for name, vals in met.items()}
    label, text = verdict(mean["kl"], mean["agreement"], mean["saliency_similarity"],
                          t.is_invertible, th, why)
    if t.kind == "family" and k > 1:
        ok = [res["member_names"][j] for j in range(k) if per[j][0] != "not invariant"]
        nums = _nums(mean["kl"], mean["agreement"], mean["saliency_similarity"])
        if 0 < len(ok) < k:
            label = "partly invariant"
            text = (f"invariant in its outputs for {len(ok)} of {k} magnitudes ({', '.join(ok)})"
                    f", not for the others; mean over magnitudes: {nums}")
        elif not ok:
            text = f"not invariant at any magnitude: {nums}"
    label, text = _gate((label, text), problems or [])
    per = [_gate(v, problems or []) for v in per]
    return {"mean": mean, "verdict": label, "text": text, "status": _status(label),
            "member_verdicts": [{"member": n, "verdict": v[0], "text": v[1]}
                                for n, v in zip(res["member_names"], per)]}


def _status(label: str) -> str:
    """The three-way outcome of "the model is invariant to T" (outputs and mechanism)."""
    return {"invariant": HOLDS, CANNOT: NOT_EVALUATED,
            "outputs only (mechanism not measured)": NOT_EVALUATED}.get(label, FAILS)


def audit_claims(doc: dict[str, Any]) -> ClaimSet:
    """The audit's verdicts as claim records (:mod:`invlab.report.claims`), two per
    transform: invariant in its outputs; invariant in its mechanism (SI)."""
    th = doc["settings"]["thresholds"]
    problems = (doc.get("model_health") or {}).get("problems") or []
    out = []
    for t in doc["transforms"]:
        m = t["mean"]
        vals = {short_name(k): m.get(k) for k, _ in OUTPUT_RULES}  # {"DI": .., "agreement": ..}
        ok = (None if None in vals.values() else meets_rules(OUTPUT_RULES, m, th))
        out.append(decide(f"invariant to {t['name']} in its outputs",
                          f"mean {rules_text(OUTPUT_RULES, th)}",
                          vals, ok, scope=t["name"],
                          reason="; ".join(problems) if problems and ok else ""))
        si = m.get("saliency_similarity")
        si_ok = None if si is None else meets_rules(MECHANISM_RULES, m, th)
        why = ("" if si is not None else "SI not measured: the transform is not invertible"
               if not t.get("invertible", True) else "SI not measured")
        out.append(decide(f"invariant to {t['name']} in its mechanism (saliency)",
                          f"mean {rules_text(MECHANISM_RULES, th)}", {"SI": si},
                          si_ok, scope=t["name"],
                          reason=why or ("; ".join(problems) if problems and si_ok else "")))
    return ClaimSet("Audit verdicts", tuple(out))

