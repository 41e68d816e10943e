"""A cell function for the Ray tests that records every call, then fails for cell 3."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _sweep_worker_script as W  # noqa: E402


def record_then_fail(cfg: W.KCell, ctx: W.CellContext) -> W.CellResult:
    """Like ``cell_fn`` (which writes ``ctx.dir/calls``), but cell i == 3 raises after it."""
    res = W.cell_fn(cfg, ctx)
    if cfg.i == 3:
        raise RuntimeError(f"boom in cell {cfg.i}")
    return res


from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class Producer:
    i: int


@dataclass(frozen=True)
class Consumer:
    i: int


def produce(cfg: Producer, ctx: W.CellContext) -> W.CellResult:
    return W.CellResult().add("v", 10.0 * cfg.i)


def consume(cfg: Consumer, ctx: W.CellContext) -> W.CellResult:
    """Reads its producer's value through ``ctx.value``; records whether a reader served it."""
    v = ctx.value(Producer(cfg.i), "v")
    return W.CellResult().add("twice", 2 * v).add("via_reader", float(ctx.reader is not None))
