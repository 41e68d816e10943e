"""The one atomic file writer every invlab output goes through, and stale-temp cleanup.

``atomic_write(path, data)`` writes to a uniquely named temporary file in the destination
directory (``.<name>.<pid>.<random>.tmp``, from ``tempfile.mkstemp``), ``fsync``s it, then
``os.replace``s it over ``path``: a reader, a concurrent writer or a run killed with
``kill -9`` sees the old file or the new one, never a torn one, and two writers never share
a temporary name. ``data`` is bytes, a str (UTF-8) or a callback ``write(tmp_path)`` for
libraries that write files themselves (safetensors, matplotlib's ``savefig``)::

    atomic_write("out/summary.json", json.dumps(rows))
    atomic_write("out/fig.png", lambda tmp: fig.savefig(tmp, format="png"))

A process killed between ``mkstemp`` and ``os.replace`` leaves its temporary file behind;
:func:`remove_stale_temps` deletes the temporaries of dead processes in a directory (the
checkpoint writer and reader call it).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "remove_stale_temps"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask is process-global and not thread-safe
_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")
_LEGACY_TEMP_RE = re.compile(r"^\..+\.tmp(\d+)$")  # invlab <= 0.1.0: ".<name>.tmp<pid>"


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so the rename itself is durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (a separate function so tests can make the disk
    'full')."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: str | os.PathLike[str],
                 data: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``data`` (bytes, str or ``write(tmp_path)`` callback) to ``path`` atomically.

    Creates parent directories. The file gets the usual permissions (``0o666 & ~umask``).
    On any error (full disk, read-only folder, a failing callback) the destination is left
    untouched, the temporary file is removed and the ``OSError`` names the destination.
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                    suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if callable(data):
            os.close(fd)
            fd = -1
            data(tmp)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            _write_all(fd, data.encode("utf-8") if isinstance(data, str) else bytes(data))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, f"{e.strerror or e}; could not write {path}", str(path)) \
                from e
        raise
    _fsync_dir(path.parent)
    return path


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete ``atomic_write`` temporaries in ``directory`` whose writer process is dead.

    Temporaries of live processes (including this one) are kept, so a concurrent writer is
    never disturbed. Returns the removed paths.
    """
    d = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_RE.match(p.name) or _LEGACY_TEMP_RE.match(p.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
