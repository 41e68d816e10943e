"""The ``WAIT`` sentinel of the executors' item sources, in a module of its own so that every
executor (:mod:`invlab.sweep.executors`, :mod:`invlab.sweep.ray_executor`) imports it without
importing another executor."""

from __future__ import annotations

from typing import Any

__all__ = ["WAIT"]


class _Wait:
    def __repr__(self) -> str:
        return "WAIT"


WAIT: Any = _Wait()
"""Yielded by an executor's ``items``: take nothing more until one in-flight item finishes."""
