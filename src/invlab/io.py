"""The one atomic file writer every invlab output goes through, and stale-temp cleanup.

``atomic_write(path, data)`` writes to a uniquely named temporary file in the destination
directory (``.<name>~<host>.<pid>.<random>.tmp``, from ``tempfile.mkstemp``; ``host``:
:data:`HOST`, so its writer is known on every host sharing the folder), ``fsync``s it, then
``os.replace``s it over ``path``: a reader, a concurrent writer or a run killed with
``kill -9`` sees the old file or the new one, never a torn one, and two writers never share
a temporary name. ``data`` is bytes, a str (UTF-8) or a callback ``write(tmp_path)`` for
libraries that write files themselves (safetensors, matplotlib's ``savefig``)::

    atomic_write("out/summary.json", json.dumps(rows))
    atomic_write("out/fig.png", lambda tmp: fig.savefig(tmp, format="png"))

A process killed between ``mkstemp`` and ``os.replace`` leaves its temporary file behind;
:func:`remove_stale_temps` deletes the temporaries that are provably dead: written on this
host by a process that no longer exists, or (any host, or a name without a host) not
modified for ``$INVLAB_STALE_TEMP_SECONDS`` (default 86400 s = 24 h). A temporary of
another host is never removed because its pid is absent here (the checkpoint writer and
reader and the cache's entry locks call it; see docs/howto/guarantees-cache.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HOST", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "pid_alive", "private_temp_path", "remove_stale_temps",
           "stale_temp_seconds", "temp_is_dead"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask is process-global and not thread-safe
HOST = re.sub(r"[^A-Za-z0-9_-]", "-", os.environ.get("INVLAB_HOST_ID") or socket.gethostname()
              or "unknown-host")
"""This machine as named in temporaries and lock files: ``$INVLAB_HOST_ID`` or the hostname
(characters outside ``[A-Za-z0-9_-]`` become ``-``). Processes that share a hostname must
share a pid namespace (set ``INVLAB_HOST_ID`` per container otherwise)."""
STALE_TEMP_SECONDS = 86_400.0
_HOSTED_TEMP_RE = re.compile(r"^\..+~([A-Za-z0-9_-]+)\.(\d+)\.[^.]+\.tmp$")
_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")  # before issue 25: no host in the name
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
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{HOST}.{os.getpid()}.",
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


def private_temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh name ``.<name>~<host>.<pid>.<random>.tmp`` beside ``path`` (no file is
    created), in the temporary format :func:`remove_stale_temps` understands: a process that
    dies while holding it leaves a file the next clean-up removes."""
    p = Path(path)
    return p.parent / f".{p.name}~{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_pid_alive = pid_alive  # the name before it was public


def stale_temp_seconds() -> float:
    """``$INVLAB_STALE_TEMP_SECONDS`` (default 86400): the age after which a temporary that
    cannot be proven dead otherwise (another host's, or one without a host) is removed."""
    return _env_seconds("INVLAB_STALE_TEMP_SECONDS", STALE_TEMP_SECONDS)


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"${name} must be > 0 seconds, got {raw!r}")
    return value


def temp_is_dead(p: Path, *, now: float | None = None, max_age: float | None = None) -> bool:
    """Whether ``p`` (an :func:`atomic_write` temporary, by its name) is provably dead.

    Dead means: written on this :data:`HOST` by a process that is gone; or not modified for
    ``max_age`` seconds (default :func:`stale_temp_seconds`), whichever host wrote it. Names
    that are not invlab temporaries are never dead.
    """
    hosted = _HOSTED_TEMP_RE.match(p.name)
    if hosted is not None:
        if hosted.group(1) == HOST and not pid_alive(int(hosted.group(2))):
            return True
    elif not (_TEMP_RE.match(p.name) or _LEGACY_TEMP_RE.match(p.name)):
        return False
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return False
    age = (time.time() if now is None else now) - mtime
    return age > (stale_temp_seconds() if max_age is None else max_age)


def remove_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``atomic_write`` temporaries in ``directory`` that are provably dead
    (:func:`temp_is_dead`): this host's whose process is gone, and any older than
    ``$INVLAB_STALE_TEMP_SECONDS``. A live writer's temporary is never touched, nor another
    host's in-progress one. Returns the removed paths.
    """
    d = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return removed
    now, max_age = time.time(), stale_temp_seconds()
    for p in entries:
        if not p.name.endswith(".tmp") and _LEGACY_TEMP_RE.match(p.name) is None:
            continue
        if not temp_is_dead(p, now=now, max_age=max_age):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`invlab.io.atomic_write`)."""
    return atomic_write(path, bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys, NaN rejected, trailing newline) atomically.

    The object is serialized before the file is touched, so a value without a JSON form
    raises without changing anything on disk.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")
