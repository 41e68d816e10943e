"""A plain-text table for the list commands."""

from __future__ import annotations

from collections.abc import Sequence


def _table(rows: list[dict[str, str]], cols: Sequence[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(s.rstrip() for s in out)
