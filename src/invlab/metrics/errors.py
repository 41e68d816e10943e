"""Errors raised by the measurement engine."""

from __future__ import annotations

from invlab.errors import InvlabError


class MeasureError(InvlabError, ValueError):
    """Bad input to :func:`invlab.metrics.measure`; the message says expected vs found."""
