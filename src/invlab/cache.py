"""Content-addressed caches you can share: an entry proves what it is, one writer per entry.

invlab caches trained models (``<checkpoints>/<key>.safetensors``, ``origins-<key>``,
``zoo/<key>``) and built test sets (``<name>-<key>.npz``) under a key that is a hash of
what produced them. Two promises make such a folder safe to share between runs, processes,
Ray workers and hosts (a shared filesystem):

**An entry proves what it is.** Before a cached file is used, the config and data
fingerprint recorded *inside* it are hashed again and must give the key in its name (and
the data fingerprint must be the one the key stands for). A file that does not — swapped,
copied or renamed by hand, written by an older invlab that did not record its key, corrupt
— raises :class:`CacheMismatch`. Where invlab can rebuild the entry (training a model,
building a test set) it does: one WARNING line names the file and what was wrong, and the
rebuilt entry replaces it atomically (:func:`load_or_create`). Where it cannot (a measuring
cell reading a test set the parent process built) it stops with that one line. A mismatched
entry is never used. This guards against mix-ups, not forgery: whoever writes both the
weights and a matching record can still fool the check (weights are not signed).

**One writer per entry.** Creating an entry happens under its *entry lock*: a file
``.<entry name>.lock`` beside the entry, created atomically (``O_CREAT | O_EXCL``) and
holding JSON ``{"host", "pid", "start", "start_utc", "token", "entry"}``. Whoever creates
it trains; everyone else (another process, Ray worker or host) polls until it is gone and
then uses the finished entry instead of training again; a log line says whom it waits
for, repeated every minute. The holder *heartbeats*: a daemon thread touches the lock every
``min(30 s, stale / 10)``. A lock is removed by someone else only when provably dead:

- written on this host (:data:`invlab.io.HOST`) by a process that no longer exists, or
- not refreshed for ``$INVLAB_LOCK_STALE_SECONDS`` (default 600 s: twenty missed
  heartbeats), measured both by the file's mtime and by the waiter's own clock (how long it
  has watched the lock unchanged), so clock skew between hosts can delay a takeover but not
  cause an early one.

A lock of another host is never removed because its pid is absent here. A waiter gives up
after ``$INVLAB_LOCK_TIMEOUT_SECONDS`` (default 86400 s) with :class:`CacheLockTimeout`
naming the lock and its holder. The lock only prevents duplicated work; correctness never
depends on it (entries are written atomically and training is deterministic), so in the one
race it cannot exclude — two waiters removing the same dead lock at the same instant — two
writers may both train and write identical bytes.

Temporaries of the atomic writer follow the same rule (:func:`invlab.io.remove_stale_temps`:
this host's dead pid, or ``$INVLAB_STALE_TEMP_SECONDS``, default 24 h).

Usage::

    model, reused = load_or_create(path, load=verified_loader, create=train_and_save,
                                   what="mnist/r4/da/seed0")

See docs/howto/guarantees-cache.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from invlab.errors import InvlabError
from invlab.io import HOST, _env_seconds, pid_alive, private_temp_path, remove_stale_temps

__all__ = ["CacheLockTimeout", "CacheMismatch", "EntryLock", "acquire_all", "load_or_create",
           "lock_path", "lock_stale_seconds", "lock_timeout_seconds", "remove_dead_locks",
           "read_lock"]

log = logging.getLogger("invlab.cache")
T = TypeVar("T")

LOCK_STALE_SECONDS = 600.0
LOCK_TIMEOUT_SECONDS = 86_400.0
REPORT_EVERY_SECONDS = 60.0
LOCK_SUFFIX = ".lock"

_HELD: dict[str, str] = {}  # lock path -> token, for the locks this process holds
_GUARD = threading.Lock()


class CacheMismatch(InvlabError, ValueError):
    """A cache entry whose recorded config / data fingerprint does not hash to its key (or
    that cannot be read): it is never used. ``path``: the file; ``why``: what was wrong."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        self.path, self.why = Path(path), why
        super().__init__(f"cache entry {path} does not prove what it is: {why}")


class CacheLockTimeout(InvlabError, TimeoutError):
    """Waited ``$INVLAB_LOCK_TIMEOUT_SECONDS`` for another writer of a cache entry."""


def lock_stale_seconds() -> float:
    """``$INVLAB_LOCK_STALE_SECONDS`` (default 600): a lock not refreshed this long is dead."""
    return _env_seconds("INVLAB_LOCK_STALE_SECONDS", LOCK_STALE_SECONDS)


def lock_timeout_seconds() -> float:
    """``$INVLAB_LOCK_TIMEOUT_SECONDS`` (default 86400): how long to wait for a live writer."""
    return _env_seconds("INVLAB_LOCK_TIMEOUT_SECONDS", LOCK_TIMEOUT_SECONDS)


def lock_path(entry: str | os.PathLike[str]) -> Path:
    """``<dir>/.<entry name>.lock``: the lock of cache entry ``entry``."""
    p = Path(entry)
    return p.parent / f".{p.name}{LOCK_SUFFIX}"


def read_lock(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, float] | None:
    """``(holder info or None if not yet readable, mtime)`` of a lock file, None if absent."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
        raw = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return None, time.time()
    try:
        info = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, mtime  # being written right now (or garbage: dead by age only)
    return (info if isinstance(info, dict) else None), mtime


def _describe_holder(info: dict[str, Any] | None) -> str:
    if info is None:
        return "a writer that has not identified itself yet"
    return (f"pid {info.get('pid')} on {info.get('host')} (since "
            f"{info.get('start_utc', '?')})")


def _dead_reason(info: dict[str, Any] | None, mtime: float, stale: float,
                 now: float | None = None) -> str | None:
    """Why the lock is provably dead, or None while it may be alive."""
    if info is not None and info.get("host") == HOST and isinstance(info.get("pid"), int):
        pid = info["pid"]
        if not pid_alive(pid):
            return f"its writer, pid {pid} on this host ({HOST}), is gone"
        if pid == os.getpid() and info.get("token") not in _HELD.values():
            return f"it names this process (pid {pid}) but was not taken by it (pid reused)"
    age = (time.time() if now is None else now) - mtime
    if age > stale:
        return (f"not refreshed for {age:.0f} s (> $INVLAB_LOCK_STALE_SECONDS = "
                f"{stale:.0f} s)")
    return None


def _break(path: Path, token: Any, reason: str) -> bool:
    """Remove the dead lock at ``path`` if it still is the one judged dead (same token).

    The lock is first renamed to a private name (atomic), then checked: if another waiter
    replaced it meanwhile, the new lock is put back (``os.link`` fails rather than
    overwriting a newer one)."""
    private = private_temp_path(path)
    try:
        os.rename(path, private)
    except FileNotFoundError:
        return True  # someone else removed it
    except OSError:
        return False
    got = read_lock(private)
    if got is not None and (got[0] or {}).get("token") != token:
        with contextlib.suppress(OSError):
            os.link(private, path)  # put the live lock back; EEXIST: a newer one won
    else:
        log.warning("removed the lock %s of a dead writer (%s)", path, reason)
    with contextlib.suppress(OSError):
        private.unlink()
    return True


def remove_dead_locks(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove every provably dead entry lock in ``directory`` (see the module docstring);
    live ones and other hosts' fresh ones are kept. Returns the removed lock paths."""
    removed = []
    stale = lock_stale_seconds()
    try:
        entries = [p for p in Path(directory).iterdir()
                   if p.name.startswith(".") and p.name.endswith(LOCK_SUFFIX)]
    except OSError:
        return removed
    for p in entries:
        got = read_lock(p)
        if got is None:
            continue
        reason = _dead_reason(got[0], got[1], stale)
        if reason is not None and _break(p, (got[0] or {}).get("token"), reason):
            removed.append(p)
    return removed


class EntryLock:
    """The writer lock of one cache entry (see the module docstring).

    ``with EntryLock(path, what="mnist/r4/da/seed0"):`` waits until this process holds
    ``.<name>.lock`` beside ``path`` (polling, with a log line naming the holder), holds and
    heartbeats it for the block, and removes it at the end.
    """

    def __init__(self, entry: str | os.PathLike[str], *, what: str = "") -> None:
        self.entry = Path(entry)
        self.path = lock_path(self.entry)
        self.what = what or self.entry.name
        self.token: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: tuple[Any, float, float] | None = None  # (token, mtime, first seen)

    @property
    def held(self) -> bool:
        return self.token is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or provably dead); never waits."""
        key = str(self.path)
        with _GUARD:
            if key in _HELD:
                raise RuntimeError(f"{self.path} is already held by this process (nested "
                                   "creation of the same cache entry)")
        if self._create():
            return True
        got = read_lock(self.path)
        if got is None:
            return self._create()
        info, mtime = got
        stale = lock_stale_seconds()
        reason = _dead_reason(info, mtime, stale)
        token = (info or {}).get("token")
        now = time.monotonic()
        if reason is None:
            if self._seen is None or self._seen[:2] != (token, mtime):
                self._seen = (token, mtime, now)
            elif now - self._seen[2] > stale:
                reason = (f"watched for {now - self._seen[2]:.0f} s without a heartbeat (> "
                          f"$INVLAB_LOCK_STALE_SECONDS = {stale:.0f} s)")
        if reason is not None and _break(self.path, token, reason):
            return self._create()
        return False

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        now = time.time()
        info = {"host": HOST, "pid": os.getpid(), "start": now, "token": token,
                "start_utc": datetime.fromtimestamp(now, timezone.utc).strftime(
                    "%Y-%m-%d %H:%M:%S UTC"), "entry": self.entry.name}
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        os.close(fd)
        with _GUARD:
            _HELD[str(self.path)] = token
        self.token = token
        self._stop.clear()
        beat = min(30.0, lock_stale_seconds() / 10)
        self._thread = threading.Thread(target=self._heartbeat, args=(beat,), daemon=True,
                                        name=f"invlab-lock-{self.entry.name}")
        self._thread.start()
        return True

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            got = read_lock(self.path)
            if got is None or (got[0] or {}).get("token") != self.token:
                log.warning("the lock %s was taken over by %s; this writer goes on (its "
                            "atomic write gives the same bytes)", self.path,
                            _describe_holder(got[0] if got else None))
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def wait(self, *, acquire: bool = True, timeout: float | None = None) -> None:
        """Poll until the lock is ours (``acquire``) or merely free / dead (not taken).

        Raises:
            CacheLockTimeout: still held by a live writer after ``timeout`` seconds
                (default ``$INVLAB_LOCK_TIMEOUT_SECONDS``).
        """
        limit = lock_timeout_seconds() if timeout is None else timeout
        t0 = time.monotonic()
        report_at, delay = t0, 0.05
        while True:
            if acquire:
                if self.try_acquire():
                    return
            else:
                got = read_lock(self.path)
                if got is None:
                    return
                reason = _dead_reason(got[0], got[1], lock_stale_seconds())
                if reason is not None:
                    _break(self.path, (got[0] or {}).get("token"), reason)
                    return
            now = time.monotonic()
            got = read_lock(self.path)
            holder = _describe_holder(got[0] if got else None)
            if now - t0 > limit:
                raise CacheLockTimeout(
                    f"waited {now - t0:.0f} s for {holder} to finish {self.what} (lock "
                    f"{self.path}); if that writer is gone, delete the lock file, or raise "
                    "$INVLAB_LOCK_TIMEOUT_SECONDS")
            if now >= report_at:
                log.info("%s: %s for %s to finish it (lock %s)", self.what,
                         "waiting" if report_at == t0 else f"still waiting ({now - t0:.0f} s)",
                         holder, self.path)
                report_at = now + REPORT_EVERY_SECONDS
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock (if it is still ours)."""
        if self.token is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        got = read_lock(self.path)
        if got is not None and (got[0] or {}).get("token") == self.token:
            with contextlib.suppress(OSError):
                self.path.unlink()
        with _GUARD:
            _HELD.pop(str(self.path), None)
        self.token = None

    def __enter__(self) -> EntryLock:
        self.wait(acquire=True)
        try:
            remove_stale_temps(self.path.parent)
            remove_dead_locks(self.path.parent)
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_all(entries: Sequence[str | os.PathLike[str]], *, what: str = ""
                ) -> list[EntryLock]:
    """The locks of all ``entries``, taken in the given order, all or none.

    When one is held by another writer, the locks taken so far are released, this waits
    until that one is free, and returns ``[]``: the caller re-checks which entries now
    exist and calls again with the rest. Everyone taking the same entries in the same order
    therefore never holds a part of another's set for long (no deadlock)."""
    held: list[EntryLock] = []
    for e in entries:
        lk = EntryLock(e, what=what or Path(e).name)
        if lk.try_acquire():
            held.append(lk)
            continue
        for h in held:
            h.release()
        lk.wait(acquire=False)
        return []
    if held:
        remove_stale_temps(held[0].path.parent)
    return held


@contextlib.contextmanager
def holding(locks: Sequence[EntryLock]) -> Iterator[None]:
    """Release ``locks`` at the end of the block, however it ends."""
    try:
        yield
    finally:
        for lk in locks:
            lk.release()


def load_or_create(entry: str | os.PathLike[str], load: Callable[[Path], T],
                   create: Callable[[], T], *, what: str = "",
                   rebuild: str = "retraining it") -> tuple[T, bool]:
    """``(value, reused)``: the verified cache entry, or one created under its entry lock.

    ``load(path)`` must verify the file and raise :class:`CacheMismatch` when it does not
    prove what it is; ``create()`` writes the entry (atomically) and returns the value.
    Steps: a verified entry is returned at once (no lock). Otherwise the entry lock is
    taken (waiting for another writer, see :class:`EntryLock`), the entry checked again
    (the other writer's result is reused), and only then ``create()`` runs. A mismatched
    entry is reported with one WARNING line (``<file> does not prove what it is: <why>;
    retraining it``) and replaced by ``create()``'s.
    """
    p = Path(entry)
    told: set[str] = set()

    def verified() -> tuple[T] | None:
        if not p.exists():
            return None
        try:
            return (load(p),)
        except CacheMismatch as e:
            if e.why not in told:
                log.warning("%s; %s", e, rebuild)
                told.add(e.why)
            return None

    got = verified()
    if got is not None:
        return got[0], True
    with EntryLock(p, what=what):
        got = verified()
        if got is not None:
            return got[0], True
        return create(), False
