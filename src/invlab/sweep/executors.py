"""Executors: run a function over items, yielding ``(item, result)`` as each finishes.

All executors implement one protocol, :class:`Executor`::

    def map_unordered(self, fn, items) -> Iterator[tuple[item, result | BaseException]]

* results come back in completion order, each paired with its item;
* if ``fn(item)`` raises (or its worker process dies), the exception instance is yielded in
  place of the result and the other items continue;
* the executor owns its workers only for the duration of the iteration: closing the
  iterator early (e.g. on ``KeyboardInterrupt`` in the consumer) cancels pending items and
  stops the workers;
* ``items`` may yield :data:`WAIT` ("nothing is ready until an item in flight finishes"):
  the executor then takes no item until it has yielded the next result, so a producer that
  creates work from results (:func:`invlab.sweep.run_dynamic`) can feed one pool. ``WAIT``
  with nothing in flight is an error (the producer would wait forever).

The study runner passes a module-level wrapper as ``fn`` and writes results in the parent
process, so executors never touch the store. The Ray executor
(:mod:`invlab.sweep.ray_executor`) implements the same method (one Ray task per item,
``ray.wait`` for completion order). :func:`choose_executor` derives the executor from the
study flags (``--executor``, ``--workers``, ``--ray-address``).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from invlab._logging import configure_logging, logging_configured
from invlab.sweep.ray_executor import RayExecutor
from invlab.sweep.wait import WAIT

__all__ = [
    "WAIT",
    "Executor",
    "ProcessPoolExecutorBackend",
    "SerialExecutor",
    "EXECUTORS",
    "available_cores",
    "choose_executor",
    "make_executor",
]

log = logging.getLogger("invlab.sweep")

T = TypeVar("T")
R = TypeVar("R")


def _nothing_in_flight() -> RuntimeError:
    return RuntimeError("the item source yielded WAIT with nothing in flight: it waits for a "
                        "result that will never come")


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn`` over ``items``; yields ``(item, result_or_exception)`` in completion order."""

    def map_unordered(
        self, fn: Callable[[Any], Any], items: Iterable[Any]
    ) -> Iterator[tuple[Any, Any]]: ...


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class SerialExecutor:
    """Runs items one after the other in this process."""

    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        for item in items:
            if item is WAIT:
                raise _nothing_in_flight()
            try:
                result: R | BaseException = fn(item)
            except Exception as e:  # noqa: BLE001 - reported as the item's result
                result = e
            yield item, result

    def __repr__(self) -> str:
        return "SerialExecutor()"


def _exit_with_parent(parent: int, period: float = 2.0) -> None:
    """Daemon thread: end this worker when the parent process is gone (e.g. SIGTERM/SIGKILL
    of the study), so no orphaned worker keeps training and writing."""

    def watch() -> None:
        while True:
            time.sleep(period)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="invlab-parent-watch", daemon=True).start()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _parent_death_signal(parent: int) -> bool:
    """Linux: ask the kernel to SIGKILL this process when its parent dies
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes), so a worker ends even when its
    Python threads cannot run. Returns False where unavailable (other OS, no libc).

    The kernel sends the signal when the *thread* that started the worker exits; the pool
    starts its workers from the thread that iterates :meth:`map_unordered`, which outlives
    them. If the parent already died before the call, exit now.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        ok = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    return ok


def _init_worker(threads: int, log: bool = False) -> None:
    """Process-pool initializer: share the cores between workers; die with the parent
    (kernel parent-death signal on Linux, and a thread polling the parent pid everywhere);
    print invlab's log records like the parent when it configured them (``log``)."""
    parent = os.getppid()
    _parent_death_signal(parent)
    _exit_with_parent(parent, period=1.0)
    if log:
        configure_logging()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class ProcessPoolExecutorBackend:
    """Runs items in a pool of fresh processes (``spawn`` or ``forkserver``).

    ``fn`` and the items must be picklable: ``fn`` a module-level function. Each worker
    sets ``torch.set_num_threads(max(1, cores // workers))`` (and ``OMP_NUM_THREADS``) so
    the pool does not oversubscribe the machine. At most ``max_in_flight`` items are
    submitted at a time (default ``2 * workers``). If a worker process dies (segfault,
    OOM kill), the items it had in flight are yielded with the ``BrokenProcessPool`` error
    and a new pool takes the remaining items.
    """

    def __init__(self, workers: int = 2, *, start_method: str = "spawn",
                 threads_per_worker: int | None = None, max_in_flight: int | None = None,
                 ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(
                f"start_method must be 'spawn' or 'forkserver', got {start_method!r} "
                "('fork' is unsafe with torch and threads)"
            )
        self.workers = int(workers)
        self.start_method = start_method
        self.threads_per_worker = threads_per_worker or max(1, available_cores() // workers)
        self.max_in_flight = max_in_flight or 2 * self.workers

    def __repr__(self) -> str:
        return (f"ProcessPoolExecutorBackend(workers={self.workers}, "
                f"start_method={self.start_method!r}, "
                f"threads_per_worker={self.threads_per_worker})")

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context(self.start_method),
            initializer=_init_worker,
            initargs=(self.threads_per_worker, logging_configured()),
        )

    @staticmethod
    def _kill_pool(pool: cf.ProcessPoolExecutor) -> None:
        procs = dict(getattr(pool, "_processes", None) or {})  # shutdown() forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for p in list(procs.values()):
            if p.is_alive():
                p.terminate()
        for p in list(procs.values()):
            p.join(timeout=5)

    def map_unordered(
        self, fn: Callable[[T], R], items: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        it = iter(items)
        pool = self._new_pool()
        pending: dict[cf.Future[R], T] = {}
        finished = False
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < self.max_in_flight:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    if item is WAIT:
                        if not pending:
                            raise _nothing_in_flight()
                        break
                    try:
                        pending[pool.submit(fn, item)] = item
                    except BrokenProcessPool as e:
                        yield item, e
                if not pending:
                    break
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                broken = False
                for fut in done:
                    item = pending.pop(fut)
                    try:
                        result: R | BaseException = fut.result()
                    except BrokenProcessPool as e:
                        broken = True
                        result = e
                    except Exception as e:  # noqa: BLE001 - reported as the result
                        result = e
                    yield item, result
                if broken:
                    # every in-flight future of a broken pool fails; report and start over
                    for fut, item in list(pending.items()):
                        try:
                            result = fut.result()
                        except Exception as e:  # noqa: BLE001
                            result = e
                        yield item, result
                    pending.clear()
                    log.warning("a worker process died; starting a new process pool")
                    self._kill_pool(pool)
                    pool = self._new_pool()
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:  # consumer stopped early or interrupted: do not wait for running cells
                self._kill_pool(pool)


EXECUTORS = ("serial", "process", "ray")


def make_executor(executor: str | Executor = "serial", workers: int = 1, *,
                  start_method: str = "spawn", ray_address: str | None = None) -> Executor:
    """Executor from a name (``"serial"``, ``"process"``, ``"ray"``) or pass an instance
    through. ``ray_address``: see :class:`invlab.sweep.ray_executor.RayExecutor`."""
    if not isinstance(executor, str):
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be one of {EXECUTORS} or an Executor (with "
                            f"map_unordered), got {executor!r}")
        return executor
    name = executor.lower()
    if ray_address is not None and name != "ray":
        raise ValueError(f"--ray-address {ray_address!r} needs --executor ray (found "
                         f"{executor!r})")
    if name == "serial":
        return SerialExecutor()
    if name in ("process", "processes", "pool"):
        return ProcessPoolExecutorBackend(workers, start_method=start_method)
    if name == "ray":
        return RayExecutor(workers, address=ray_address)
    raise ValueError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")


def choose_executor(executor: str | Executor | None = None, workers: int = 1, *,
                    ray_address: str | None = None) -> Executor:
    """The one place that turns the study flags into an executor.

    ``--executor`` (None: ``process`` when ``--workers`` > 1, else ``serial``), ``--workers``
    (pool size; CPUs of a local Ray instance) and ``--ray-address`` (only with ``ray``:
    None starts a local instance, ``auto`` joins a running cluster). An Executor instance
    passes through, so a study's stages share one (e.g. one Ray connection).
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"--workers must be an int >= 1, found {workers!r}")
    if executor is None:
        if ray_address is not None:
            executor = "ray"
        else:
            executor = "process" if workers > 1 else "serial"
    return make_executor(executor, workers, ray_address=ray_address)
