"""invlab's error types: one base, :class:`InvlabError`, for every error invlab raises.

Every error class of the package derives from :class:`InvlabError` *and* keeps the built-in
base it always had (``ConfigError(InvlabError, ValueError)``, ``StoreError(InvlabError,
RuntimeError)``, ...), so ``except ValueError`` code keeps working. The command line catches
``InvlabError`` once and prints ``invlab: error: <message>`` (exit 2 for bad input, 1 for failed
study cells; ``--debug`` shows the traceback).

This module imports nothing from invlab, so any layer may import it.

    >>> from invlab.errors import InvlabError
    >>> try:
    ...     invlab.run_study(...)                                   # doctest: +SKIP
    ... except InvlabError as e:
    ...     print(f"invlab failed: {e}")
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["InvlabError", "PreflightError", "UserCodeError", "UserCodeTypeError", "check_writable",
           "user_code_error"]


class InvlabError(Exception):
    """Base of every error invlab raises; its message is one line meant for the user."""


class UserCodeError(InvlabError, ValueError):
    """Code a user gave invlab (a ``--models`` file, a ``--model FILE.py:factory``) failed:
    it did not import, raised, called ``sys.exit`` or returned the wrong thing. The message
    is ``<file>: <what went wrong>``."""


class UserCodeTypeError(UserCodeError, TypeError):
    """User code returned the wrong type (also a ``TypeError``, as it always was)."""


class PreflightError(InvlabError, ValueError):
    """An output location cannot be written, found before any work starts."""


def user_code_error(where: str, what: str, exc: BaseException) -> UserCodeError:
    """``UserCodeError("<where>: <what> raised <Type>: <first line>")`` for an exception that
    user code raised (``"<where>: <what> called sys.exit(3)"`` for ``SystemExit``); the caller
    raises it ``from exc`` (the traceback shows under ``--debug``)."""
    if isinstance(exc, SystemExit):
        return UserCodeError(f"{where}: {what} called sys.exit({exc.code!r})")
    lines = str(exc).strip().splitlines()
    return UserCodeError(f"{where}: {what} raised {type(exc).__name__}"
                         + (f": {lines[0]}" if lines else ""))


def check_writable(path: str | os.PathLike[str], what: str) -> Path:
    """Make sure ``path`` is a folder invlab can write: create it (and its parents), write and
    remove a probe file. Runs before any training or measuring, so a read-only or misplaced
    output fails in seconds, not after hours.

    Args:
        path: the folder (created when missing).
        what: how the user names it, e.g. ``"--checkpoints"`` or ``"$INVLAB_CACHE"``.

    Returns:
        ``Path(path)``.

    Raises:
        PreflightError: ``"<what> <path>: not writable (<reason>); choose a writable <what>"``.
    """
    p = Path(path)
    probe = p / f".invlab-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"invlab")  # fails on a full disk too
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PreflightError(f"{what} {p}: not writable ({reason}); choose a writable {what}") \
            from None
    return p
