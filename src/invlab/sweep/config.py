"""Moved to :mod:`invlab.config`, a low layer that ``data``, ``train`` and ``zoo`` import
without the study runner. This module keeps the old import path working."""

from __future__ import annotations

from invlab.config import *  # noqa: F403
from invlab.config import __all__ as __all__
from invlab.config import _to_plain  # noqa: F401  (invlab.sweep.io's resolved configs)
