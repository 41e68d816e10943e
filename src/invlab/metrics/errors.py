"""Errors raised by the measurement engine."""

from __future__ import annotations


class MeasureError(ValueError):
    """Bad input to :func:`invlab.metrics.measure`; the message says expected vs found."""
