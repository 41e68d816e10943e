"""Keep freed memory in the process (glibc) so training does not page-fault every batch.

glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB, raised dynamically up to
32 MiB) with fresh ``mmap`` pages and returns them on ``free``. A training step allocates and
frees megabytes of activations and batches, so every step touches new pages, and on this
project's VMs a first-touch page fault is slow: a 2.6 MB ``index_select`` took ~2 ms, mostly
faults. Keeping blocks under 64 MiB in the heap and trimming only above 1 GiB made training
epochs ≈ 10 % faster (``benchmarks/train_orbit.py`` run with and without the two variables,
docs/speed.md). Values are unchanged: only where memory comes from.

:func:`keep_freed_memory` is what ``invlab`` (the CLI) calls first: it sets the process's
thresholds with ``mallopt`` and exports ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
so that worker processes started by a study inherit them. It does nothing off glibc, or
when the user has set either variable (theirs wins). The library never calls it on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory() -> bool:
    """Apply the thresholds above to this process and its children; True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return False
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    os.environ["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    return True
