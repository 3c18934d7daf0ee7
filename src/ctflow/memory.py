"""Reuse of large buffers between batches: a small caching allocator for numpy arrays.

A pipeline allocates the same few large arrays for every scan — a resampled volume, a float32
copy, a mask, a rotated volume, each 50-300 MB. Fresh memory costs a page fault and a kernel
zeroing per page on first touch (and much more on a virtual machine whose host has taken freed
pages back). :func:`empty` hands out arrays whose memory comes back to a pool when the last
array or view of it is garbage-collected, so the next scan's arrays reuse pages that are already
mapped — like PyTorch's caching allocator, on the CPU. The pool is one of the switches of
:mod:`ctflow.tuning` (``buffer_pool``, ``move_pages``); what it buys is measured by the
``tuning`` benchmark case, and the measurements behind its rules are in ``docs/design.md``.

Rules
-----
* Only arrays of at least :data:`MIN_BYTES` are pooled; smaller ones are plain ``np.empty``.
* :func:`zeros` is :func:`empty` plus a ``memset``: right for an array that will be written
  over most of its pages anyway (a lung mask). A sparse array (a nodule mask) is better off
  with ``np.zeros``, whose pages the kernel zeroes lazily: most of them are never touched.
* New buffers get 25 % headroom, so the next, slightly larger scan fits (pages never written
  cost no memory), and a buffer serves requests down to half its size, so a small request never
  pins a big buffer.
* Pooled memory, in use plus idle, never exceeds :func:`pool_slack` (1.25 by default,
  ``CTFLOW_POOL_SLACK``; 1 for none) times the most pooled memory that was in use at one time
  so far (idle buffers are released, least recently freed first, before a new
  buffer would cross that mark): the pool makes the process at most a quarter bigger than its
  own peak of pooled memory, and the buffers of one scan serve the next. The quarter is what
  keeps scans of different sizes from missing: a pipeline's arrays play a few roles (the loaded
  scan, the resampled one, a mask, a float copy), each role's largest array comes from a
  different scan, and one buffer per role at its largest size is more than the peak of any one
  scan (on the ``pipeline`` benchmark, without it 4-13 of 32 requests missed per run).
* A miss (no idle buffer fits) is numpy's memory, which numpy asks the kernel to back with
  huge pages, started at a 2 MiB boundary (where the kernel's copy of file bytes into it runs
  at full speed; 16 bytes past a page boundary, where ``malloc`` puts it, ``readinto`` ran 3x
  slower).
* With ``move_pages`` (Linux, opt-in), a miss is instead made of idle buffers' written pages,
  *moved* into its new buffer with ``mremap`` (each buffer is then a private anonymous mapping
  aligned to huge pages; pages move whole, without a copy or a fault), least recently freed
  buffers first; a buffer that gives pages keeps the rest. Only what idle memory cannot cover
  is new memory.
* At most :func:`pool_limit` bytes are kept idle (least recently freed dropped first): by
  default a tenth of the machine's memory, at most 2 GiB (``CTFLOW_POOL_MB`` or
  :func:`set_pool_limit` change it; 0 turns pooling off). A pipeline run is a
  :func:`run_scope`: when the last run ends, the idle buffers are freed
  :func:`pool_linger` seconds later (2 by default, ``CTFLOW_POOL_LINGER``), unless another run
  starts first and reuses them (an epoch loop, repeated runs in a notebook).
* Memory in use is never limited or shared: an array's buffer returns to the pool only once no
  array, view, memoryview or tensor made from it is alive (numpy keeps the owner alive), so
  reuse can never alias live data.

Examples
--------
>>> import numpy as np
>>> a = empty((64, 256, 256), np.float32)   # 16 MiB: pooled
>>> a.shape, a.dtype.name, owns_data(a)
((64, 256, 256), 'float32', True)
>>> address = a.ctypes.data
>>> del a                                    # the buffer goes back to the pool ...
>>> b = empty((64, 256, 256), np.float32)   # ... and is handed out again
>>> b.ctypes.data == address
True
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.memory_pages import GRAIN, Buffer, whole_grains

__all__ = [
    "MIN_BYTES",
    "clear_pool",
    "empty",
    "owns_data",
    "pool_limit",
    "pool_linger",
    "pool_slack",
    "pool_stats",
    "run_scope",
    "set_pool_limit",
    "zeros",
]

#: Smallest array (bytes) taken from the pool.
MIN_BYTES = 8 * 2**20
#: Seconds idle buffers outlive the last run by default (:func:`pool_linger`).
DEFAULT_LINGER = 2.0
_HEADROOM = 1.25  # new buffers are this much larger than asked (unwritten pages cost nothing)
_MAX_WASTE = 2.0  # a buffer serves requests down to half its size (minus one grain)
#: Pooled memory (in use + idle) stays under this times the most in use at once, by default.
DEFAULT_SLACK = 1.25


def _env_number(name: str, default: float, lo: float, rule: str) -> float:
    """Return the environment variable ``name`` as a number >= ``lo`` (``default`` if unset)."""
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= lo:  # also NaN
        raise InvalidParameterError(f"{name} must be {rule}; got {raw!r}")
    return value


def _pool_mb() -> float | None:
    """Return ``CTFLOW_POOL_MB``, the pool's size in MiB (0 turns pooling off; None: unset)."""
    value = _env_number("CTFLOW_POOL_MB", -1.0, 0.0, "a number of MiB >= 0 (0 turns pooling off)")
    return None if value < 0 else value


def _default_limit() -> int:
    mb = _pool_mb()
    if mb is not None:
        return int(mb * 2**20)
    from ctflow.system import total_memory_bytes

    total = total_memory_bytes() or 8 * 2**30
    return int(min(2 * 2**30, total // 10))


class _Lease:
    """The owner numpy sees for arrays cut from one pooled buffer (returned when it dies)."""

    __slots__ = ("__array_interface__", "__weakref__", "buffer", "nbytes", "ptr")

    def __init__(self, buffer: Buffer, nbytes: int) -> None:
        self.buffer = buffer
        self.nbytes = nbytes
        self.ptr = buffer.addr
        self.__array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (self.ptr, False),
            "version": 3,
        }


class _Pool:
    """Idle buffers plus the bookkeeping that keeps in-use + idle under the high-water mark.

    Sizes are counted as resident bytes (``touched``): a buffer is allocated with headroom
    (:data:`_HEADROOM`) so the next, slightly larger scan fits in it, but pages never written
    cost no memory.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.RLock()  # a finaliser may run while this thread holds the lock
        self.idle: list[Buffer] = []  # least recently freed first
        self.idle_bytes = 0
        self.in_use = 0  # resident bytes of buffers handed out and not yet returned
        self.high_water = 0  # the most ever in use at once
        self.hits = 0
        self.misses = 0
        self.resized = 0  # misses served (partly) by pages moved from idle buffers
        self.fresh_bytes = 0  # bytes of misses that needed new memory

    def _drop_first(self) -> None:
        buf = self.idle.pop(0)
        self.idle_bytes -= buf.touched
        buf.free()

    def _new(self, nbytes: int) -> Buffer:
        """Return a new buffer for a miss, made as far as possible of idle buffers' written pages.

        Pages move (least recently freed buffers first) instead of idle buffers being freed
        and new memory faulted in: only what idle memory cannot cover is new.
        """
        from ctflow.tuning import settings

        size = whole_grains(int(nbytes * _HEADROOM))
        move = settings().move_pages
        # Without page moving a miss is numpy's own memory, which numpy asks the kernel to back
        # with huge pages: a fresh 300 MB buffer of 4 KiB pages pays ~75,000 page faults.
        buf = Buffer(size, nbytes, movable=move)
        used = 0  # bytes of buf filled from idle buffers
        if buf.movable:  # a mapping of its own: only made when pages may move
            while self.idle and used < nbytes:
                src = self.idle[0]
                if not src.movable:
                    self._drop_first()
                    continue
                before = src.touched
                buf.pieces.append(used)  # moved pages split buf's own mapping here ...
                span, ok = src.give(buf, used, nbytes - used)
                self.idle_bytes -= before - src.touched
                if src.size == 0:
                    self._drop_first()
                used += span
                if not ok:
                    break
            buf.pieces = sorted({*buf.pieces, used} - {size})  # ... and where they end
            if used:  # pages moved from idle buffers keep their protection
                buf.protect(True)
            if used:
                self.resized += 1
        self.fresh_bytes += max(0, nbytes - used)
        return buf

    def take(self, nbytes: int) -> Buffer:
        slack = pool_slack()  # a bad CTFLOW_POOL_SLACK fails here, before anything is taken
        with self.lock:
            best = -1  # the smallest idle buffer that fits without wasting more than half
            for k, buf in enumerate(self.idle):
                size = buf.size
                if nbytes <= size <= nbytes * _MAX_WASTE + GRAIN and (
                    best < 0 or size < self.idle[best].size
                ):
                    best = k
            if best >= 0:
                self.hits += 1
                buf = self.idle.pop(best)
                buf.protect(True)
                self.idle_bytes -= buf.touched
                buf.touched = max(buf.touched, nbytes)
            else:
                self.misses += 1
                buf = self._new(nbytes)
            self.in_use += buf.touched
            self.high_water = max(self.high_water, self.in_use)
            while self.idle and self.in_use + self.idle_bytes > self.high_water * slack:
                self._drop_first()  # the pool never makes the process much bigger than its peak
            return buf

    def give_back(self, buf: Buffer) -> None:
        buf.protect(False)
        with self.lock:
            self.in_use -= buf.touched
            if buf.touched > self.limit:
                buf.free()
                return
            self.idle.append(buf)
            self.idle_bytes += buf.touched
            while self.idle_bytes > self.limit:
                self._drop_first()

    def clear(self) -> None:
        with self.lock:
            while self.idle:
                self._drop_first()


_pool = _Pool(_default_limit())


def empty(shape: int | Sequence[int], dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """Return an uninitialised C-ordered array, its memory reused from the pool when large.

    Same contract as ``numpy.empty(shape, dtype)``.

    Examples
    --------
    >>> empty((2, 3), np.int16).shape
    (2, 3)
    """
    dims, dt = _dims(shape), np.dtype(dtype)
    arr = _pooled(dims, dt)
    return np.empty(dims, dt) if arr is None else arr


def _dims(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(v) for v in shape)


def _pooled(dims: tuple[int, ...], dt: np.dtype[Any]) -> NDArray[Any] | None:
    """Return an array cut from a pooled buffer, or None when it should not be pooled."""
    from ctflow.tuning import settings

    nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if nbytes < MIN_BYTES or _pool.limit <= 0 or dt.hasobject or not settings().buffer_pool:
        return None
    buf = _pool.take(nbytes)
    lease = _Lease(buf, nbytes)
    finaliser = weakref.finalize(lease, _pool.give_back, buf)
    finaliser.atexit = False
    flat: NDArray[np.uint8] = np.asarray(lease)
    return flat.view(dt).reshape(dims)


def zeros(shape: int | Sequence[int], dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """Return a C-ordered array of zeros, its memory reused from the pool when large.

    Same contract as ``numpy.zeros(shape, dtype)``. A pooled array is zeroed with one
    ``memset``, which beats fresh pages when most of the array will be written anyway; for a
    sparse array use ``numpy.zeros`` (see the module notes).

    Examples
    --------
    >>> m = zeros((64, 256, 256), np.uint8)   # 4 MiB: below MIN_BYTES, plain np.zeros
    >>> int(m.max()), zeros((40, 256, 256), np.float32).any()
    (0, np.False_)
    """
    dims, dt = _dims(shape), np.dtype(dtype)
    arr = _pooled(dims, dt)
    if arr is None:
        return np.zeros(dims, dt)
    arr.fill(0)
    return arr


def owns_data(arr: NDArray[Any]) -> bool:
    """Return True if ``arr`` owns its memory: numpy's own, or a whole buffer from :func:`empty`.

    A view of part of another array (user data, a slice of a batch) does not.

    Examples
    --------
    >>> a = np.zeros(4)
    >>> owns_data(a), owns_data(a[1:])
    (True, False)
    """
    base = arr.base
    if base is None:
        return True
    while isinstance(base, np.ndarray) and base.base is not None:  # views of views
        base = base.base
    return (
        isinstance(base, _Lease)
        and arr.ctypes.data == base.ptr
        and arr.nbytes == base.nbytes
        and arr.flags.c_contiguous
    )


def pool_limit() -> int:
    """Bytes the pool may keep idle."""
    return _pool.limit


def set_pool_limit(nbytes: int) -> None:
    """Change how many bytes the pool may keep idle (0 turns pooling off and frees the pool).

    Examples
    --------
    >>> old = pool_limit()
    >>> set_pool_limit(0); pool_stats()["idle_bytes"]
    0
    >>> set_pool_limit(old)
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes < 0:
        raise InvalidParameterError(
            f"set_pool_limit: nbytes must be an integer >= 0; got {nbytes!r}"
        )
    with _pool.lock:
        _pool.limit = int(nbytes)
        while _pool.idle_bytes > _pool.limit:
            _pool._drop_first()


def clear_pool() -> None:
    """Drop every idle buffer (the memory goes back to the operating system)."""
    _pool.clear()


def pool_slack() -> float:
    """How far pooled memory may exceed its high-water mark (``CTFLOW_POOL_SLACK``, default 1.25).

    Pooled memory, in use plus idle, stays under this times the most ever in use at once; 1
    keeps the pool strictly within the process's own peak (more misses when scan sizes vary).
    """
    return _env_number("CTFLOW_POOL_SLACK", DEFAULT_SLACK, 1.0, "a number >= 1")


def pool_linger() -> float:
    """Seconds idle buffers outlive the last run (``CTFLOW_POOL_LINGER``, default 2; 0: none)."""
    return _env_number("CTFLOW_POOL_LINGER", DEFAULT_LINGER, 0.0, "a number of seconds >= 0")


class _Runs:
    """Runs in progress, and the timer that empties the pool once the last has ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.generation = 0  # runs started so far: a timer of an older generation does nothing
        self.timer: threading.Timer | None = None

    def start(self) -> None:
        with self.lock:
            self.active += 1
            self.generation += 1
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def end(self) -> None:
        linger = pool_linger()
        with self.lock:
            self.active = max(0, self.active - 1)
            if self.active:
                return
            # at interpreter shutdown (an unfinished gen_batch closed by the garbage collector)
            # a new thread never starts, and Timer.start would wait for it forever
            if linger <= 0 or sys.is_finalizing():
                _pool.clear()
                return
            timer = threading.Timer(linger, self._expire, args=(self.generation,))
            timer.daemon = True
            self.timer = timer
        try:
            timer.start()
        except RuntimeError:  # no new threads here now: free at once
            _pool.clear()

    def _expire(self, generation: int) -> None:
        with self.lock:
            if self.active or generation != self.generation:
                return  # a run started meanwhile: its buffers are in use again
            self.timer = None
        _pool.clear()


_runs = _Runs()


def _forget_runs_in_child() -> None:
    """Start a forked child (a ``DataLoader`` worker) with none of its parent's runs."""
    global _runs
    _runs = _Runs()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_runs_in_child)


@contextmanager
def run_scope() -> Iterator[None]:
    """Mark a run: its idle buffers are freed :func:`pool_linger` seconds after it ends.

    A pipeline run (``run``, ``gen_batch``, a PyTorch dataset's epoch) is one scope. Idle
    buffers stay while any run is on; when the last ends they are freed after a short delay,
    unless another run starts first and reuses them. Back-to-back runs (an epoch loop, repeated
    ``run`` calls in a notebook, a benchmark) so start with the buffers the previous run
    faulted in, instead of paying page faults (and, on a virtual machine, the host's) for every
    large array again.

    Examples
    --------
    >>> with run_scope():
    ...     a = empty((64, 256, 256), np.float32)
    ...     del a
    >>> pool_stats()["idle_buffers"] >= 1   # kept for a next run, freed pool_linger() s later
    True
    """
    _runs.start()
    try:
        yield
    finally:
        _runs.end()


def pool_stats() -> dict[str, int]:
    """Idle buffers and bytes, the limit, and how requests were served.

    ``hits`` were served by an idle buffer as it was, ``misses`` were not; ``resized`` counts
    the misses that took pages from idle buffers (moved, not freed and faulted in again), and
    ``fresh_bytes`` the bytes of misses that needed new memory.

    Examples
    --------
    >>> sorted(pool_stats())
    ['fresh_bytes', 'hits', 'idle_buffers', 'idle_bytes', 'limit', 'misses', 'resized']
    """
    with _pool.lock:
        return {
            "idle_buffers": len(_pool.idle),
            "idle_bytes": _pool.idle_bytes,
            "limit": _pool.limit,
            "hits": _pool.hits,
            "misses": _pool.misses,
            "resized": _pool.resized,
            "fresh_bytes": _pool.fresh_bytes,
        }
