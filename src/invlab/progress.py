"""Progress for long work, on a terminal and off it.

:func:`progress_bar` is the one place invlab makes a progress indicator (measure, training,
studies, audit). On a terminal it is a ``tqdm`` bar. When the stream is not a terminal (a
pipe, a log file, a notebook's captured stderr, a batch job) it is a :class:`LogProgress`:
plain lines with the count, rate and ETA, written at most every ``interval`` seconds or
when a further tenth of the total is done (never faster than ``min_gap`` seconds apart),
with no carriage returns or escape sequences. Work that finishes within ``min_gap``
seconds prints nothing, so nested bars (a training run inside a study) stay quiet when
they are short.

``INVLAB_PROGRESS=log`` forces the line mode on a terminal too, ``INVLAB_PROGRESS=off``
disables every indicator; ``INVLAB_PROGRESS_INTERVAL=S`` sets the seconds between lines
(default 10; 0 writes a line at every update).

Example line::

    [invlab] measure rotate: 340/1000 img (34%), 12.3 img/s, elapsed 0:27, ETA 0:54
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["LogProgress", "fmt_seconds", "progress_bar"]

DEFAULT_INTERVAL = 10.0
"""Seconds between two log lines at most (a line also comes at every further 10 %)."""


def fmt_seconds(s: float) -> str:
    """``h:mm:ss`` / ``m:ss`` for a duration in seconds (``?`` when unknown)."""
    if not math.isfinite(s) or s < 0:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _fmt_count(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 or x >= 100 else f"{x:.1f}"


class LogProgress:
    """A tqdm-compatible progress indicator that writes plain log lines.

    Supports what invlab uses of tqdm: iteration over ``iterable``, ``update(n)``,
    ``set_postfix(**kw)``, ``set_postfix_str(s)``, ``set_description(s)``, ``refresh()``,
    ``close()``, a settable ``total`` and use as a context manager.

    Args:
        iterable: iterated over (``total`` defaults to its ``len``).
        total: the amount of work (None: unknown; then no percentage or ETA).
        desc: what is being done (``measure rotate``).
        unit: the unit of ``update`` (``img``, ``cell``, ``epoch``).
        file: the stream (default ``sys.stderr``).
        interval: seconds between lines at most.
        min_gap: seconds between lines at least (and before the first line).
        clock: a monotonic clock (for tests).
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: float | None = None,
                 desc: str = "", unit: str = "it", file: TextIO | None = None,
                 interval: float = DEFAULT_INTERVAL, min_gap: float = 2.0,
                 clock: Any = time.monotonic) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = file if file is not None else sys.stderr
        self.interval = float(interval)
        self.min_gap = float(min_gap)
        self.n: float = 0
        self.postfix = ""
        self.lines = 0
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._decile = 0
        self.closed = False

    # tqdm interface -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress without an iterable is not iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` units; write a line when one is due."""
        self.n += n
        now = self._clock()
        since = now - self._last
        decile = self._current_decile()
        if since >= self.interval or (decile > self._decile and since >= self.min_gap):
            self._emit(now)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw (lines are written by :meth:`update`)."""

    def close(self) -> None:
        """Write a closing line when progress lines were written (else nothing)."""
        if self.closed:
            return
        self.closed = True
        if self.lines:
            self._emit(self._clock(), final=True)

    # ---------------------------------------------------------------------------------
    def _current_decile(self) -> int:
        if not self.total:
            return 0
        return int(min(max(self.n / self.total, 0.0), 1.0) * 10 + 1e-9)

    def line(self, now: float | None = None, final: bool = False) -> str:
        """The progress line (count, share, rate, elapsed, ETA) without a newline."""
        now = self._clock() if now is None else now
        el = max(now - self._start, 1e-9)
        rate = self.n / el
        head = f"[invlab] {self.desc}: " if self.desc else "[invlab] "
        if self.total:
            body = (f"{_fmt_count(self.n)}/{_fmt_count(self.total)} {self.unit} "
                    f"({100 * self.n / self.total:.0f}%)")
        else:
            body = f"{_fmt_count(self.n)} {self.unit}"
        rate_s = (f"{rate:.3g} {self.unit}/s" if rate >= 1 or rate == 0
                  else f"{1 / rate:.3g} s/{self.unit}")
        parts = [body, rate_s, f"elapsed {fmt_seconds(el)}"]
        if final:
            parts.append("done")
        elif self.total and rate > 0:
            parts.append(f"ETA {fmt_seconds((self.total - self.n) / rate)}")
        out = head + ", ".join(parts)
        if self.postfix:
            out += f" | {self.postfix}"
        return out.replace("\r", " ").replace("\x1b", "")

    def _emit(self, now: float, final: bool = False) -> None:
        self._last = now
        self._decile = self._current_decile()
        self.lines += 1
        try:
            self.file.write(self.line(now, final) + "\n")
            self.file.flush()
        except (ValueError, OSError):  # a closed stream: progress is best effort
            pass


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None,
                 desc: str = "", unit: str = "it", file: TextIO | None = None,
                 disable: bool = False, interval: float = DEFAULT_INTERVAL,
                 **tqdm_kwargs: Any) -> Any:
    """A tqdm bar on a terminal, a :class:`LogProgress` elsewhere, a no-op when disabled.

    Args:
        iterable: optional iterable to wrap (as ``tqdm(iterable)``).
        total, desc, unit: as tqdm.
        file: the stream (default ``sys.stderr``); its ``isatty()`` picks the mode.
        disable: no output at all (iteration still passes the items through).
        interval: seconds between log lines at most (line mode only).
        **tqdm_kwargs: passed to tqdm on a terminal (``leave``, ``dynamic_ncols``,
            ``bar_format``, ...); ignored in line mode.

    Returns:
        an object with tqdm's ``update``/``set_postfix``/``close``/iteration interface.
    """
    stream = file if file is not None else sys.stderr
    mode = os.environ.get("INVLAB_PROGRESS", "").strip().lower()
    env_interval = os.environ.get("INVLAB_PROGRESS_INTERVAL", "").strip()
    if env_interval:
        try:
            interval = max(0.0, float(env_interval))
        except ValueError:
            raise ValueError(f"INVLAB_PROGRESS_INTERVAL must be a number of seconds, found "
                             f"{env_interval!r}") from None
    if disable or mode == "off":
        return tqdm(iterable, total=total, disable=True)
    notebook = "ipykernel" in sys.modules and stream is sys.stderr  # tqdm.auto: a widget
    if mode != "log" and (_is_tty(stream) or notebook):
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **tqdm_kwargs)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, file=stream,
                       interval=interval, min_gap=min(2.0, interval))
