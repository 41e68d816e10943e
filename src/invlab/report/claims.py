"""Claims as data: every claim and verdict is a record with one of three outcomes.

A :class:`Claim` holds the statement, the criterion that decides it, the measured values it
was decided on, the verdict and — when it cannot be evaluated or its inputs are weak — the
reason. A study writes its claims with :func:`write_claims` as ``claims.json`` (the record)
and ``claims.md`` (rendered from it); the terminal print (:func:`render_text`) and the HTML
section with its badge (:func:`render_html`) are rendered from the same records, never parsed
back out of Markdown.

Verdicts:

- ``holds`` — the criterion is met;
- ``does not hold`` — the criterion was evaluated and is not met;
- ``cannot be evaluated`` — the data cannot decide it; ``reason`` says why: too few models,
  missing metadata, a NaN statistic, models at chance.

``caveat`` flags weak inputs of a claim that could be evaluated (e.g. models below the
study's stated accuracy floor); it does not change the verdict but is printed with it.

``claims.json`` format (``"format": "invlab.claims/1"``)::

    {"format": "invlab.claims/1", "title": str, "intro": [str, ...],
     "claims": [{"claim", "criterion", "values", "verdict", "reason", "scope", "caveat"}]}

Result directories written before ``claims.json`` existed (only ``claims.md``) still render:
:func:`read_claims` returns None for them and the HTML page shows their ``claims.md`` as
text, without counting verdicts (rebuild with ``invlab report DIR`` to get the record).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from invlab.sweep.io import atomic_write_text

__all__ = ["ACCURACY_FLOOR", "CANNOT", "CHANCE_MARGIN", "Claim", "ClaimSet", "FAILS", "FORMAT",
           "HOLDS", "VERDICTS", "accuracy_gate", "decide",
           "missing_values", "read_claims", "render_html", "render_markdown", "render_text",
           "write_claims"]

HOLDS = "holds"
FAILS = "does not hold"
CANNOT = "cannot be evaluated"
VERDICTS = (HOLDS, FAILS, CANNOT)
FORMAT = "invlab.claims/1"
_WORD = {HOLDS: "HOLDS", FAILS: "DOES NOT HOLD", CANNOT: "CANNOT BE EVALUATED"}


def _finite(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return True
    if isinstance(v, int | float):
        return math.isfinite(float(v))
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return True  # strings, lists: not numbers, not missing


def _json_value(v: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python, containers recursively (strict JSON)."""
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if hasattr(v, "item") and not isinstance(v, int | float):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


@dataclass(frozen=True)
class Claim:
    """One claim and its verdict.

    Attributes:
        claim: the statement, e.g. ``"EI correlates strongly with accuracy"``.
        criterion: the rule that decides it, with its thresholds.
        values: the measured numbers it was decided on (NaN stored as None).
        verdict: one of :data:`VERDICTS`.
        reason: why it cannot be evaluated (required then), else empty.
        scope: what it is about when a study checks it several times (``"mnist/R4"``).
        caveat: weak inputs of an evaluated claim (e.g. models below the accuracy floor).
    """

    claim: str
    criterion: str
    values: dict[str, Any] = field(default_factory=dict)
    verdict: str = CANNOT
    reason: str = ""
    scope: str = ""
    caveat: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, found {self.verdict!r}")
        if self.verdict == CANNOT and not self.reason:
            raise ValueError(f"claim {self.claim!r}: 'cannot be evaluated' needs a reason")
        object.__setattr__(self, "values", _json_value(dict(self.values)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        known = {k: d[k] for k in ("claim", "criterion", "values", "verdict", "reason", "scope",
                                   "caveat") if k in d}
        return cls(**known)


def missing_values(values: Mapping[str, Any], required: Iterable[str] | None = None) -> list[str]:
    """Names of the ``required`` values (default: all) that are None, NaN or infinite."""
    names = list(values) if required is None else list(required)
    return [k for k in names if not _finite(values.get(k))]


def decide(claim: str, criterion: str, values: Mapping[str, Any], test: bool | None, *,
           required: Iterable[str] | None = None, reason: str = "", scope: str = "",
           caveat: str = "") -> Claim:
    """A :class:`Claim` whose verdict is ``test`` unless it cannot be evaluated.

    It cannot be evaluated when ``reason`` is given (too few models, missing metadata,
    models at chance, ...), when ``test`` is None, or when a ``required`` value (default:
    every value) is None/NaN/inf — the reason then names the NaN statistics.
    """
    if not reason:
        bad = missing_values(values, required)
        if bad:
            reason = "NaN statistic: " + ", ".join(bad) + " could not be computed"
        elif test is None:
            reason = "the criterion could not be applied to these data"
    if reason:
        return Claim(claim, criterion, dict(values), CANNOT, reason, scope, caveat)
    return Claim(claim, criterion, dict(values), HOLDS if test else FAILS, "", scope, caveat)


@dataclass(frozen=True)
class ClaimSet:
    """A study's claims: a title, intro lines (what the checks mean) and the records."""

    title: str
    claims: tuple[Claim, ...]
    intro: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.claims) for v in VERDICTS}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "title": self.title, "intro": list(self.intro),
                "counts": self.counts(), "claims": [c.to_dict() for c in self.claims]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClaimSet:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an invlab claims record (format {d.get('format')!r}, "
                             f"expected {FORMAT!r})")
        return cls(str(d.get("title", "")), tuple(Claim.from_dict(c) for c in d["claims"]),
                   tuple(d.get("intro", ())))


def _fmt_values(values: Mapping[str, Any]) -> str:
    def one(v: Any) -> str:
        if v is None:
            return "nan"
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(one(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{k}: {one(x)}" for k, x in v.items()) + "}"
        return str(v)
    return ", ".join(f"{k}={one(v)}" for k, v in values.items())


def _line(c: Claim, bold: bool) -> str:
    word = _WORD[c.verdict]
    head = f"**{word}**" if bold else word
    scope = f"[{c.scope}] " if c.scope else ""
    parts = [f"{head}: {scope}{c.claim}", f"criterion: {c.criterion}"]
    if c.values:
        parts.append(f"measured: {_fmt_values(c.values)}")
    if c.reason:
        parts.append(f"why: {c.reason}")
    if c.caveat:
        parts.append(f"caveat: {c.caveat}")
    return " ".join(p if p.endswith(("?", ".")) else p + "." for p in parts)


def _count_line(cs: ClaimSet) -> str:
    n = cs.counts()
    return (f"{n[HOLDS]} of {len(cs.claims)} hold, {n[FAILS]} do not, "
            f"{n[CANNOT]} cannot be evaluated")


def render_markdown(cs: ClaimSet) -> str:
    """``claims.md``: title, intro, one bullet per claim, the counts."""
    lines = [f"### {cs.title}", ""] if cs.title else []
    lines += [*cs.intro, ""] if cs.intro else []
    lines += [f"- {_line(c, True)}" for c in cs.claims]
    lines += ["", _count_line(cs) + "."]
    return "\n".join(lines) + "\n"


def render_text(cs: ClaimSet) -> str:
    """What a study prints at its end (plain text, no Markdown emphasis)."""
    lines = [cs.title, ""] if cs.title else []
    lines += [f"  {x}" for x in cs.intro]
    lines += [f"- {_line(c, False)}" for c in cs.claims]
    lines.append(_count_line(cs) + ".")
    return "\n".join(lines) + "\n"


def render_html(cs: ClaimSet) -> str:
    """The report page's claims section: intro with a badge, one item per claim."""
    e = html.escape
    n = cs.counts()
    evaluated = n[HOLDS] + n[FAILS]
    badge = ""
    if cs.claims:
        cls = "fail" if n[FAILS] else "pass"
        badge = (f' <span class="badge {cls}">{n[HOLDS]} of {evaluated} evaluated hold</span>'
                 if evaluated else "")
        if n[CANNOT]:
            badge += f' <span class="badge">{n[CANNOT]} cannot be evaluated</span>'
    intro = " ".join(cs.intro) if cs.intro else ""
    head = f"<p>{e(cs.title)}{'. ' if cs.title and intro else ''}{e(intro)}{badge}</p>"
    css = {HOLDS: ("pass", "yes"), FAILS: ("fail", "no"), CANNOT: ("na", "na")}
    items = []
    for c in cs.claims:
        li, word = css[c.verdict]
        body = f'<span class="{word}">{e(_WORD[c.verdict])}</span>: '
        body += (f"<strong>{e(c.scope)}</strong> " if c.scope else "") + e(c.claim)
        body += f'<br><span class="note">criterion: {e(c.criterion)}</span>'
        if c.values:
            body += f'<br><span class="note">measured: {e(_fmt_values(c.values))}</span>'
        if c.reason:
            body += f"<br>why: {e(c.reason)}"
        if c.caveat:
            body += f"<br>caveat: {e(c.caveat)}"
        items.append(f'<li class="{li}">{body}</li>')
    return head + (f'<ul class="claims">{"".join(items)}</ul>' if items else "")


def write_claims(out: str | Path, cs: ClaimSet) -> list[str]:
    """Write ``claims.json`` and ``claims.md`` (rendered from it) into ``out`` atomically."""

    d = Path(out)
    return [str(atomic_write_text(d / "claims.json",
                                  json.dumps(cs.to_dict(), indent=2, ensure_ascii=False) + "\n")),
            str(atomic_write_text(d / "claims.md", render_markdown(cs)))]


def read_claims(out: str | Path) -> ClaimSet | None:
    """``out/claims.json`` as a :class:`ClaimSet`; None when the directory has none (an old
    result directory with only ``claims.md``, or a study without claims)."""
    p = Path(out) / "claims.json"
    if not p.exists():
        return None
    try:
        return ClaimSet.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not a readable claims record ({e}); rebuild it with "
                         f"`invlab report {Path(out)}`") from None


CHANCE_MARGIN = 0.05
"""A model whose accuracy is within 5 points of chance (1/K) is "at chance": claims computed
from it cannot be evaluated (a constant or random predictor agrees with itself)."""
ACCURACY_FLOOR = 0.5
"""Claims computed from a model below 50 % accuracy are flagged (``caveat``): its invariance
numbers describe an unfinished model, not the method the claim is about."""


def accuracy_gate(accuracies: Mapping[str, float | None], n_classes: int, *,
                  floor: float = ACCURACY_FLOOR, margin: float = CHANCE_MARGIN
                  ) -> tuple[str, str]:
    """``(reason, caveat)`` for claims computed from models with these accuracies (fractions
    in [0, 1], keyed by model name).

    reason (→ cannot be evaluated): some model is at chance, accuracy ≤ 1/K + ``margin``.
    caveat (→ flagged): some model is below ``floor``. Missing accuracies are ignored here
    (a missing statistic is :func:`decide`'s business)."""
    known = {k: float(v) for k, v in accuracies.items() if _finite(v)}
    chance = 1.0 / max(n_classes, 1)
    at = {k: v for k, v in known.items() if v <= chance + margin}
    low = {k: v for k, v in known.items() if v < floor and k not in at}
    fmt = lambda d: ", ".join(f"{k} {100 * v:.1f} %" for k, v in d.items())  # noqa: E731
    reason = (f"models at chance (accuracy ≤ chance {100 * chance:.1f} % + "
              f"{100 * margin:.0f} points): {fmt(at)}") if at else ""
    caveat = (f"computed from models below the {100 * floor:.0f} % accuracy floor: "
              f"{fmt(low)}") if low else ""
    return reason, caveat
