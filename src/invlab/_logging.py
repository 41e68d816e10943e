"""Logging: the library only creates loggers (``logging.getLogger("invlab.<part>")``); the
``invlab`` command configures them once with :func:`configure_logging`.

``import invlab`` installs no handler, so an application that imports invlab decides where
its records go (the standard-library rule for libraries). The CLI prints INFO and above on
stderr as ``[invlab] message`` lines; a Python user gets the same with
``invlab.configure_logging()`` (or with their own ``logging`` configuration).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["configure_logging", "logging_configured"]

_FORMAT = "[invlab] %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to ``target``, or, without one, to the *current*
    ``sys.stderr`` at each record (so a redirected stderr, e.g. a notebook's, receives the
    lines)."""

    def __init__(self, target: TextIO | None = None) -> None:
        self._target = target
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return self._target if self._target is not None else sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ assigns it
        pass


def _ours(h: logging.Handler) -> bool:
    return isinstance(h, _StderrHandler)


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Print invlab's records of ``level`` and above on stderr as ``[invlab] message``.

    ``stream``: where to write (default: the current ``sys.stderr`` at each record). The
    ``invlab`` command passes the process's own stderr (``sys.__stderr__``). Idempotent: a
    second call adds no second handler (the first call's stream stays). The ``invlab`` logger keeps
    propagating to the root logger, so handlers of the caller (and pytest's ``caplog``) see
    the records too; the root logger's own handlers print nothing for invlab unless the
    caller configured them.
    """
    log = logging.getLogger("invlab")
    if not any(_ours(h) for h in log.handlers):
        h = _StderrHandler(stream)
        h.setFormatter(logging.Formatter(_FORMAT))
        log.addHandler(h)
    log.setLevel(level)


def logging_configured() -> bool:
    """Whether :func:`configure_logging` ran in this process (worker processes of a study
    repeat it, so their records reach the same stderr)."""
    return any(_ours(h) for h in logging.getLogger("invlab").handlers)
