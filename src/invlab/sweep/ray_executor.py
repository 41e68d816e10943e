"""The Ray executor: run study cells on a local Ray instance or a Ray cluster.

Optional extra: ``pip install 'invlab[ray]'``. It implements the executor protocol
(:class:`invlab.sweep.executors.Executor`): one Ray task per item, results yielded in
completion order (``ray.wait``), paired with their item. As with the other executors only the
driver writes the results store; a task returns its cell's rows to the driver.

Failures: a task whose function raises, or whose cell reports an error, is run once more
(on the same worker); a task whose worker process or node dies is resubmitted once by Ray
(``max_retries=1``). What still fails is yielded as the item's exception/result and the
study reports it (nothing stored; the next run retries it).

Addresses: ``address=None`` starts a private local instance with ``num_cpus=workers`` (shut
down when the executor is closed or the process exits); ``"auto"`` joins the cluster that
``ray start`` set up on this machine; any other string is passed to ``ray.init(address=...)``
(``ray://host:10001`` for a remote client). An already initialised Ray (``ray.init`` called by
the user) is used as it is.

Store reads: a cell that reads an earlier cell's result (``ctx.value``, e.g. IR's tuned ν)
asks a small actor pinned to the driver's node (``ctx.reader``), so the SQLite store (WAL: one
host's shared memory) is only opened on that node.

Multi-node: a cell runs in the driver's working directory (``CellContext.cwd``; relative
``--out``/``--checkpoints`` resolve against it), so every node must see it and the output and
checkpoint folders at the same path — put them on a shared filesystem — and must find the data: set ``INVLAB_DATA`` (and
``INVLAB_CACHE``) in the environment of ``ray start`` on every node. Cells check the content
hash of the data they load against the one the driver pinned, so a node with other data fails
loudly instead of computing other numbers.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from invlab.sweep.store import ResultsStore
from invlab.sweep.wait import WAIT

__all__ = ["RayExecutor", "ray_available"]

log = logging.getLogger("invlab.sweep")

_INSTALL = "pip install 'invlab[ray]'  (or: pip install 'ray>=2.9')"


def ray_available() -> bool:
    """True when ``import ray`` works."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ValueError(f"--executor ray needs Ray, which is not installed ({e}); install it "
                         f"with `{_INSTALL}`, or use --executor process") from e
    return ray


def _failed(result: Any) -> bool:
    """A cell outcome that carries an error (the runner's ``_Outcome``), by duck typing."""
    return getattr(result, "error", None) is not None


def _call_with_retry(fn: Callable[[Any], Any], item: Any) -> Any:
    """Worker side: ``fn(item)``, once more if it raised or returned a failed outcome."""
    try:
        result = fn(item)
    except Exception:  # noqa: BLE001 - retried once; a second failure propagates
        log.warning("ray task failed; retrying once")
        return fn(item)
    if _failed(result):
        log.warning("ray cell failed (%s); retrying once", getattr(result, "error", ""))
        return fn(item)
    return result


class _StoreReader:
    """Ray actor on the driver's node: serves ``store.value(cell_id, metric)`` to cells, so
    only that node opens the SQLite file (WAL needs one host's shared memory, not NFS)."""

    def __init__(self, path: str) -> None:
        self.store = ResultsStore(path)

    def value(self, cid: str, metric: str) -> float | None:
        return self.store.value(cid, metric)


class _RemoteValue:
    """Picklable ``(cell_id, metric) -> value`` backed by a :class:`_StoreReader` actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __call__(self, cid: str, metric: str) -> float | None:
        import ray

        return ray.get(self.actor.value.remote(cid, metric))


def _with_reader(item: Any, reader: Any) -> Any:
    """``item`` (a runner task) with ``ctx.reader`` set, when it has such a context."""
    ctx = getattr(item, "ctx", None)
    if reader is None or ctx is None or not dataclasses.is_dataclass(item) \
            or not hasattr(ctx, "reader"):
        return item
    return dataclasses.replace(item, ctx=dataclasses.replace(ctx, reader=reader))


def _cpus(item: Any) -> int:
    """CPUs a task reserves: the cell's intra-op threads (``item.ctx.threads``) or 1."""
    t = getattr(getattr(item, "ctx", None), "threads", 1)
    return t if isinstance(t, int) and t >= 1 else 1


class RayExecutor:
    """Runs items as Ray tasks; see the module docstring.

    Args:
        workers: CPUs of the local instance started when ``address`` is None.
        address: None (start a local instance), ``"auto"`` or a Ray address.
        max_in_flight: tasks submitted at a time (default ``4 * workers``, at least 8).
        runtime_env: passed to ``ray.init`` (e.g. ``{"env_vars": {...}}``).
    """

    def __init__(self, workers: int = 2, *, address: str | None = None,
                 max_in_flight: int | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"ray address must be 'auto' or host:port, got {address!r}")
        self.workers = workers
        self.address = address
        self.max_in_flight = max_in_flight or max(8, 4 * workers)
        self.runtime_env = runtime_env
        self._started = False
        self._remote: Any = None

    def __repr__(self) -> str:
        where = self.address or f"local, num_cpus={self.workers}"
        return f"RayExecutor({where})"

    def _connect(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            if self.runtime_env:
                kw["runtime_env"] = self.runtime_env
            if self.address is None:
                ray.init(num_cpus=self.workers, **kw)
            else:
                try:
                    ray.init(address=self.address, **kw)
                except ConnectionError as e:
                    raise ValueError(f"cannot join the Ray cluster at {self.address!r} ({e}); "
                                     "start it with `ray start --head` (and `ray start "
                                     "--address=HEAD:6379` on the other nodes), or omit "
                                     "--ray-address for a local instance") from e
            self._started = True
            atexit.register(self.shutdown)
            log.info("ray: %s, %s CPUs", self, ray.cluster_resources().get("CPU"))
        if self._remote is None:
            self._remote = ray.remote(max_retries=1)(_call_with_retry)
        return ray

    def shutdown(self) -> None:
        """Stop the Ray instance this executor started (no-op otherwise)."""
        if self._started:
            import ray

            self._started = False
            self._remote = None
            ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]
                      ) -> Iterator[tuple[Any, Any]]:
        ray = self._connect()
        fn_ref = ray.put(fn)
        it = iter(items)
        pending: dict[Any, Any] = {}
        finished = False
        actor: Any = None
        reader: Any = None
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < self.max_in_flight:
                    item = next(it, _END)
                    if item is _END:
                        exhausted = True
                        break
                    if item is WAIT:
                        if not pending:
                            raise RuntimeError("the item source yielded WAIT with nothing in "
                                               "flight")
                        break
                    store = getattr(getattr(item, "ctx", None), "store_path", None)
                    if store is not None and actor is None:
                        actor = _store_reader(ray, str(store))
                        reader = _RemoteValue(actor)
                    item = _with_reader(item, reader)
                    ref = self._remote.options(num_cpus=_cpus(item)).remote(fn_ref, item)
                    pending[ref] = item
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    item = pending.pop(ref)
                    yield item, _result(ray, ref)
            finished = True
        finally:
            if not finished:  # consumer stopped early or interrupted: cancel the rest
                for ref in pending:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:  # noqa: BLE001 - best effort
                        pass
            if actor is not None:
                ray.kill(actor)


def _store_reader(ray: Any, path: str) -> Any:
    """A :class:`_StoreReader` actor pinned to this (the driver's) node, using no CPU."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    cls = ray.remote(num_cpus=0)(_StoreReader)
    return cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
                       ).remote(path)


_END = object()


def _result(ray: Any, ref: Any) -> Any:
    """The task's return value, or the exception it ended with (the cause, when Ray wraps
    a Python exception; Ray's own error for a lost worker or node)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        return cause if isinstance(cause, BaseException) else e
    except ray.exceptions.RayError as e:
        return e
