"""Bring-your-own inputs of the origins study: ``--models FILE.py`` and ``--data PATH``.

The contract is the generalization study's: ``models()`` yields ``(name, nn.Module,
{"mean": [...], "std": [...]})``; ``--data`` is an ``.npz`` (``images``, ``labels``) or a
folder ``ROOT/<class>/<image>``. The readers are those of the generalization study
(:func:`invlab.studies.generalization.iter_user_models`, :func:`invlab.data.external.load_images`)
when they are installed; this module only re-exports them (with minimal stand-ins otherwise).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_fingerprint", "iter_user_models", "load_images"]


def file_fingerprint(path: str | Path) -> str:
    """Content hash (16 hex) of a file: a ``--models`` file's identity in cell ids."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# the generalization study's readers (same contract, one implementation)
from invlab.data.external import load_images  # noqa: E402
from invlab.studies.generalization import iter_user_models  # noqa: E402
