"""Atomic file writes and the resolved-config files written beside results.

The writers live in :mod:`invlab.io` (re-exported here). Every writer goes through
:func:`invlab.io.atomic_write` (a uniquely named temporary file in the destination directory,
``fsync``, then ``os.replace``): a reader (or a run killed with ``kill -9``) sees either the
old file or the new one, never a torn one::

    >>> atomic_write_json("runs/demo/summary.json", {"acc": 0.95})  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from invlab.config import _to_plain
from invlab.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from invlab.sweep.provenance import git_revision, invlab_version

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "write_resolved_config",
]


def write_resolved_config(
    out_dir: str | os.PathLike[str], study_name: str, config_dict: Any
) -> tuple[Path, Path]:
    """Write the resolved config of a study as ``config.yaml`` and ``config.json``.

    Both files hold ``{"study": study_name, "config": config_dict, "invlab_version": ...,
    "git_rev": ...}`` with sorted keys; ``config_dict`` may also be a config dataclass
    (converted with :func:`invlab.sweep.config_to_dict`). Returns ``(yaml_path, json_path)``.
    """
    plain = _to_plain(config_dict, for_id=False, path="")
    doc = {
        "study": study_name,
        "config": plain,
        "invlab_version": invlab_version(),
        "git_rev": git_revision(),
    }
    out = Path(out_dir)
    y = atomic_write_text(
        out / "config.yaml",
        yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=True),
    )
    j = atomic_write_json(out / "config.json", doc)
    return y, j
