"""One writer per output folder: an advisory ``flock`` on ``DIR/.lock``.

``with output_lock(out):`` takes an exclusive, non-blocking ``fcntl.flock`` on
``out/.lock`` and writes this process's pid into it. A second study (or report) on the same
folder fails at once with :class:`OutputLocked` naming the holder's pid. The kernel drops
the lock when the holder exits, however it exits (``kill -9`` included), so a crash never
leaves a stale lock. The lock is re-entrant within a process (a study that rebuilds its
report takes it once).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from invlab.errors import InvlabError

__all__ = ["OutputLocked", "output_lock"]

_HELD: dict[str, tuple[int, int]] = {}  # realpath -> (fd, depth)
_GUARD = threading.Lock()


class OutputLocked(InvlabError, RuntimeError):
    """Another process is writing to this output folder."""


def _acquire(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(directory)
    with _GUARD:
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            return key
        path = directory / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLocked(
                f"{directory} is in use by another invlab process (pid {holder}); wait for "
                "it to finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = (fd, 1)
        return key


def _release(key: str) -> None:
    with _GUARD:
        fd, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (fd, depth - 1)
            return
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive writer lock of ``directory`` for the block (see module docstring).

    Raises:
        OutputLocked: another process holds it (the message names its pid).
    """
    d = Path(directory)
    key = _acquire(d)
    try:
        yield d
    finally:
        _release(key)
