"""Where results came from: invlab version and git revision (both cached per process)."""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from invlab._version import __version__

__all__ = ["git_revision", "invlab_version"]


@functools.lru_cache(maxsize=1)
def invlab_version() -> str | None:
    """``invlab._version.__version__`` if defined, else the installed distribution's version."""
    if __version__:
        return str(__version__)
    try:
        return version("invlab")
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """``git rev-parse --short HEAD`` of the source tree invlab is imported from.

    None when git is missing, the code is not in a repository, or git fails.
    """
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and rev else None
