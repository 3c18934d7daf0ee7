"""Threads: the items of a batch, the parts of a kernel, and batches sharing the cores.

* :func:`map_items` runs a function on every item of a batch on a process-wide pool of item
  threads (one pool per worker count), or sequentially with ``target="for"``, for one item, or
  when called from a pool thread (so nesting never deadlocks).
* :func:`run_ranges` cuts a kernel's work into slice ranges and runs them on ``n_threads``
  threads: the calling thread works too, the others come from a pool of kernel threads.
* :class:`ThreadShare`: with ``prefetch``, the batches running at once share the run's threads
  (``total // running``, re-read at every action); a thread no batch uses joins a kernel in
  progress (thread lending, a switch of :mod:`ctflow.tuning`).

Worker counts come from :func:`default_n_workers`: ``CTFLOW_NUM_THREADS`` or the usable cores
(:func:`ctflow.system.cpu_count`).

Examples
--------
>>> [f.result() for f in map_items(lambda v: v * 2, [1, 2, 3], n_workers=2)]
[2, 4, 6]
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from ctflow.errors import InvalidParameterError

__all__ = [
    "LEND_PARTS",
    "ThreadShare",
    "available_threads",
    "current_share",
    "default_n_workers",
    "map_items",
    "run_ranges",
    "split_ranges",
]

R = TypeVar("R")
T = TypeVar("T")
Target = Literal["threads", "for"]

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_local = threading.local()


def default_n_workers() -> int:
    """Return the number of usable cores (respects CPU affinity and ``CTFLOW_NUM_THREADS``).

    Examples
    --------
    >>> default_n_workers() >= 1
    True
    """
    env = os.environ.get("CTFLOW_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InvalidParameterError(
                f"CTFLOW_NUM_THREADS must be a positive integer; got {env!r}"
            ) from None
        if n >= 1:
            return n
        raise InvalidParameterError(f"CTFLOW_NUM_THREADS must be a positive integer; got {env!r}")
    from ctflow.system import cpu_count

    return cpu_count()


class ThreadShare:
    """Threads shared fairly by the batches that run at the same time.

    With ``prefetch``, several batches run at once, each on its own thread; if each also used
    every core for its items and kernels, ``prefetch`` times more threads than cores would
    compete. Under a share, a batch's actions get ``total // running`` threads,
    re-evaluated at every action, so the last batch of a run gets all of them again.

    With ``lend_threads`` (:mod:`ctflow.tuning`), threads nobody uses are lent out at once:
    when a batch ends and no other is waiting to start (the last batches of a run), its thread
    joins the kernel that another batch is running (:func:`run_ranges`), taking the parts of it
    that have not started yet, instead of idling until that batch's next action.

    Examples
    --------
    >>> share = ThreadShare(4)
    >>> with share.running():
    ...     alone = share.threads()
    ...     with share.running():   # a second batch starts
    ...         both = share.threads()
    >>> alone, both, current_share() is None
    (4, 2, True)
    """

    def __init__(self, total: int) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise InvalidParameterError(
                f"ThreadShare: total must be an integer >= 1; got {total!r}"
            )
        self.total = total
        self._running = 0
        self._lock = threading.Lock()
        self._allotted: dict[int, int] = {}  # running batch -> threads of its current action
        self._slots = 0
        self._expected = 0  # batches submitted that have not started yet
        self._lent = 0  # threads helping other batches' kernels
        self._jobs: list[_RangeJob] = []  # kernels running under this share, oldest first

    def __repr__(self) -> str:
        """Return a readable summary."""
        return f"ThreadShare(total={self.total}, running={self._running})"

    def threads(self) -> int:
        """Threads for one batch now: the total divided by the batches running (at least 1)."""
        with self._lock:
            n = max(1, self.total // max(1, self._running))
            slot = getattr(_local, "slot", None)
            if slot in self._allotted:
                self._allotted[slot] = n
            return n

    def expect(self) -> None:
        """Announce a batch that will start soon, so its thread is not lent out meanwhile."""
        with self._lock:
            self._expected += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[ThreadShare]:
        """Count a batch as running, and make this share the current thread's share."""
        with self._lock:
            self._running += 1
            self._expected = max(0, self._expected - 1)
            slot = self._slots
            self._slots += 1
            self._allotted[slot] = 1
        previous = getattr(_local, "share", None), getattr(_local, "slot", None)
        _local.share, _local.slot = self, slot
        try:
            yield self
        finally:
            _local.share, _local.slot = previous
            with self._lock:
                self._running -= 1
                del self._allotted[slot]
            self._lend()

    # -- lending idle threads to running kernels
    def _open(self, job: _RangeJob) -> None:
        with self._lock:
            self._jobs.append(job)
        self._lend()

    def _close(self, job: _RangeJob) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._jobs.remove(job)

    def _lend(self) -> None:
        """Send every idle thread to the oldest kernel that still has parts nobody started."""
        from ctflow.tuning import settings

        if not settings().lend_threads:
            return
        with self._lock:
            idle = self.total - sum(self._allotted.values()) - self._lent - self._expected
            for job in self._jobs:
                if idle <= 0:
                    break
                if job.unclaimed():
                    self._lent += 1
                    idle -= 1
                    _kernel_pool().submit(self._help, job)

    def _help(self, job: _RangeJob) -> None:
        try:
            job.work()
        finally:
            with self._lock:
                self._lent -= 1
            self._lend()


def current_share() -> ThreadShare | None:
    """Return the :class:`ThreadShare` the calling thread's batch runs under, if any."""
    return getattr(_local, "share", None)


def available_threads() -> int:
    """Return the threads the calling code may use: its batch's fair share, else every core.

    Examples
    --------
    >>> available_threads() == default_n_workers()  # outside a run
    True
    """
    share = current_share()
    return share.threads() if share is not None else default_n_workers()


# -- kernels split into ranges --------------------------------------------------------------------
#: Under a :class:`ThreadShare`, a kernel is cut into at least this many parts per thread of the
#: share, so that a thread lent to it mid-way still finds parts that have not started.
LEND_PARTS = 4

_kernel_executor: ThreadPoolExecutor | None = None


def _forget_pools_in_child() -> None:
    """Start the thread pools afresh in a forked child (``os.register_at_fork``).

    A child of ``fork`` (``DataLoader`` workers, ``multiprocessing``) inherits the pool objects
    but none of their threads, and a lock may have been held at the fork: work submitted to
    them would wait forever. The child makes new pools on first use instead.
    """
    global _pools, _pools_lock, _kernel_executor
    _pools_lock = threading.Lock()
    _pools = {}
    _kernel_executor = None


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def _kernel_pool() -> ThreadPoolExecutor:
    """Threads that run parts of kernels (leaf work only: nothing here waits on this pool)."""
    global _kernel_executor
    with _pools_lock:
        if _kernel_executor is None:
            _kernel_executor = ThreadPoolExecutor(
                max(32, 4 * default_n_workers()), thread_name_prefix="ctflow-kernel"
            )
        return _kernel_executor


class _RangeJob:
    """The parts of one kernel call, claimed one at a time by the caller and its helpers."""

    __slots__ = ("_cond", "_error", "_left", "_next", "fn", "ranges", "results")

    def __init__(self, fn: Callable[[int, int], Any], ranges: list[tuple[int, int]]) -> None:
        self.fn = fn
        self.ranges = ranges
        self.results: list[Any] = [None] * len(ranges)
        self._next = 0  # first part nobody has claimed
        self._left = len(ranges)  # parts not finished
        self._error: BaseException | None = None
        self._cond = threading.Condition(threading.Lock())

    def unclaimed(self) -> bool:
        return self._next < len(self.ranges)

    def work(self) -> None:
        """Run parts until none is left to claim (a failure stops the claiming)."""
        n = len(self.ranges)
        while True:
            with self._cond:
                k = self._next
                if k >= n:
                    return
                self._next += 1
            error: BaseException | None = None
            try:
                result = self.fn(*self.ranges[k])
            except BaseException as exc:  # re-raised by the caller, in its own thread
                error, result = exc, None
            with self._cond:
                self.results[k] = result
                self._left -= 1
                if error is not None and self._error is None:
                    self._error = error
                    self._left -= n - self._next  # the parts nobody claimed will not run
                    self._next = n
                if self._left == 0:
                    self._cond.notify_all()

    def wait(self) -> list[Any]:
        with self._cond:
            while self._left > 0:
                self._cond.wait()
        if self._error is not None:
            raise self._error
        return self.results


def split_ranges(n: int, n_parts: int, min_size: int = 1) -> list[tuple[int, int]]:
    """Cut ``range(n)`` into at most ``n_parts`` contiguous, near-equal, non-empty ranges.

    Parts are at least ``min_size`` long (one part when ``n`` is smaller).

    Examples
    --------
    >>> split_ranges(10, 3)
    [(0, 3), (3, 7), (7, 10)]
    >>> split_ranges(10, 4, min_size=5)
    [(0, 5), (5, 10)]
    """
    n_parts = max(1, min(int(n_parts), int(n) // max(1, int(min_size))))
    edges = [round(k * n / n_parts) for k in range(n_parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def run_ranges(
    fn: Callable[[int, int], R],
    n: int,
    n_threads: int,
    *,
    per_thread: int = 1,
    min_size: int = 1,
) -> list[tuple[int, int, R]]:
    """Run ``fn(start, stop)`` over ``range(n)`` cut into parts, on ``n_threads`` threads.

    The calling thread works too; the others come from a process-wide pool of kernel threads.
    ``fn`` must be leaf work (a ``nogil`` numba kernel over its part, say) whose result does
    not depend on how ``range(n)`` is cut. Under a :class:`ThreadShare` the work is cut finer
    (:data:`LEND_PARTS` parts per thread of the share) and threads the share does not use
    join in: the last batch of a run no longer runs its kernels on its share of one thread
    while the other cores idle.

    Parameters
    ----------
    fn : callable
        ``fn(start, stop)`` for one part.
    n : int
        Length of the range to cut (slices, rows, voxels).
    n_threads : int
        Threads this call may use.
    per_thread : int, default 1
        Parts per thread when several threads run (more parts even out uneven work).
    min_size : int, default 1
        Smallest part.

    Returns
    -------
    list of (start, stop, result)
        Every part, in order, with what ``fn`` returned for it. A failing part re-raises its
        exception here once the parts already started have finished; the others do not run.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(10)
    >>> [r for *_, r in run_ranges(lambda i, j: int(a[i:j].sum()), 10, 2)]
    [10, 35]
    """
    from ctflow.tuning import settings

    share = current_share()
    n_parts = per_thread * n_threads if n_threads > 1 else 1
    if share is not None and share.total > 1 and settings().lend_threads:
        n_parts = max(n_parts, LEND_PARTS * share.total)
    ranges = split_ranges(n, n_parts, min_size)
    if len(ranges) == 1:
        a, b = ranges[0]
        return [(a, b, fn(a, b))]
    job = _RangeJob(fn, ranges)
    for _ in range(min(n_threads, len(ranges)) - 1):
        _kernel_pool().submit(job.work)
    if share is not None:
        share._open(job)
    try:
        job.work()
        results = job.wait()
    finally:
        if share is not None:
            share._close(job)
    return [(a, b, r) for (a, b), r in zip(ranges, results, strict=True)]


def _pool(n_workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(n_workers)
        if pool is None:
            pool = ThreadPoolExecutor(n_workers, thread_name_prefix=f"ctflow-item-{n_workers}")
            _pools[n_workers] = pool
        return pool


def _in_pool_thread() -> bool:
    return bool(getattr(_local, "in_pool", False))


def _run_marked(fn: Callable[[T], R], arg: T) -> R:
    _local.in_pool = True
    return fn(arg)


def map_items(
    fn: Callable[[T], R],
    args: Sequence[T],
    *,
    n_workers: int | None = None,
    target: Target = "threads",
) -> list[Future[R]]:
    """Run ``fn`` on every element of ``args``; return completed futures in input order.

    Futures (not values) are returned so the caller sees every item's outcome, failures
    included, and decides what to do with each. Items run on the shared pool of ``n_workers``
    threads, or sequentially with ``target="for"``, with a single item, or when called from a
    pool thread (no nested waiting on the same pool).

    Examples
    --------
    >>> [f.result() for f in map_items(lambda v: v * 2, [1, 2, 3], n_workers=2)]
    [2, 4, 6]
    """
    if target not in ("threads", "for"):
        raise InvalidParameterError(f"target must be 'threads' or 'for'; got {target!r}")
    n = default_n_workers() if n_workers is None else int(n_workers)
    if n < 1:
        raise InvalidParameterError(f"n_workers must be a positive integer; got {n_workers!r}")
    sequential = target == "for" or n == 1 or len(args) <= 1 or _in_pool_thread()
    if sequential:
        futures: list[Future[R]] = []
        for arg in args:
            fut: Future[R] = Future()
            try:
                fut.set_result(fn(arg))
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    raise
                fut.set_exception(exc)
            futures.append(fut)
        return futures
    pool = _pool(n)
    futures = [pool.submit(_run_marked, fn, arg) for arg in args]
    for fut in futures:
        fut.exception()  # wait for all, without raising
    return futures
