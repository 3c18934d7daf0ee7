"""Speed tricks that change how the process behaves, behind one switchboard.

ctflow's kernels are plain numba loops; four switches go further and change the process
itself. What each buys on a realistic pipeline is measured by ``python -m benchmarks.run
--cases tuning`` (the numbers are in ``docs/benchmarks.md``). The buffer pool is on by default:
it spares a scan's large arrays the page faults of fresh memory when an idle buffer fits, and
the memory it keeps idle is bounded (a tenth of the machine's memory, at most 2 GiB, per
process) and released when runs end: 2 seconds after the last run of the process
(``CTFLOW_POOL_LINGER``; a run starting meanwhile reuses the buffers), at once in Dask
workers. Streaming stores are on: a kernel, bit-identical to the plain one, that holds nothing.
Page moving (``mremap`` of idle buffers' pages into a new request) and thread lending are
opt-in: page moving remaps memory under the process's feet, and one unexplained crash of a
benchmark worker with it on is reason enough to keep it off by default until it is understood;
lending gains within this kind of machine's run-to-run noise and makes scheduling harder to
follow. Each can be switched here or by an environment variable, in every process (Dask
workers too):

=================  ==========================  ==================================================
switch             environment                 what it does
=================  ==========================  ==================================================
``buffer_pool``    ``CTFLOW_BUFFER_POOL``      **On by default.** Large arrays come from a pool
                   (1 / 0); ``CTFLOW_POOL_MB`` of buffers that one scan hands to the next
                   (MiB, 0 = off)              (:mod:`ctflow.memory`) instead of fresh memory
                                               (page faults, zeroing). At most ``pool_mb`` idle
                                               (default: a tenth of the machine's memory, at
                                               most 2 GiB), released 2 s after the last run
                                               (``CTFLOW_POOL_LINGER``); pooled memory within
                                               1.25x its peak in use
                                               (``CTFLOW_POOL_SLACK``).
``move_pages``     ``CTFLOW_MOVE_PAGES``       Off by default. Linux: a request no idle buffer
                   (1 / 0)                     fits is made of idle buffers' pages, moved with
                                               ``mremap``, rather than of new memory.
``lend_threads``   ``CTFLOW_LEND_THREADS``     Off by default. With ``prefetch``, a thread no
                   (1 / 0)                     batch uses joins the kernel another batch runs
                                               (:func:`ctflow.parallel.run_ranges`).
``streaming``      ``CTFLOW_STREAMING_STORES`` **On by default.** x86-64: ``normalize_hu`` writes
                   (1 / 0)                     int16 -> float32 with non-temporal stores
                                               (hand-written LLVM).
=================  ==========================  ==================================================

Examples
--------
>>> previous = configure(lend_threads=True)
>>> settings().lend_threads
True
>>> _ = configure(**previous)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

from ctflow.errors import InvalidParameterError

__all__ = ["Tuning", "configure", "settings", "tuned"]


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidParameterError(f"{name} must be 1 or 0; got {raw!r}")


@dataclass(frozen=True)
class Tuning:
    """The switches (see the module docstring)."""

    buffer_pool: bool = True
    move_pages: bool = False
    lend_threads: bool = False
    streaming: bool = True


def _from_environment() -> Tuning:
    from ctflow.memory import _pool_mb

    pool_mb = _pool_mb()
    return Tuning(
        buffer_pool=_flag("CTFLOW_BUFFER_POOL", True) and (pool_mb is None or pool_mb > 0),
        move_pages=_flag("CTFLOW_MOVE_PAGES", False),
        lend_threads=_flag("CTFLOW_LEND_THREADS", False),
        streaming=_flag("CTFLOW_STREAMING_STORES", True),
    )


_lock = threading.Lock()
_current = _from_environment()


def settings() -> Tuning:
    """Return the switches now."""
    return _current


def configure(**switches: bool) -> dict[str, Any]:
    """Set switches for this process; returns the previous values (to restore them).

    Examples
    --------
    >>> old = configure(streaming=False)
    >>> settings().streaming, configure(**old)["streaming"]
    (False, False)
    """
    global _current
    known = set(asdict(Tuning()))
    unknown = set(switches) - known
    if unknown:
        raise InvalidParameterError(
            f"configure: unknown switches {sorted(unknown)}; known {sorted(known)}"
        )
    for key, value in switches.items():
        if not isinstance(value, bool):
            raise InvalidParameterError(f"configure: {key} must be True or False; got {value!r}")
    with _lock:
        previous = asdict(_current)
        _current = replace(_current, **switches)
    if switches.get("buffer_pool") is False:
        from ctflow import memory

        memory.clear_pool()
    return previous


@contextmanager
def tuned(**switches: bool) -> Iterator[Tuning]:
    """Switches set for the ``with`` block, restored after.

    Examples
    --------
    >>> with tuned(lend_threads=False) as t:
    ...     t.lend_threads
    False
    """
    previous = configure(**switches)
    try:
        yield settings()
    finally:
        configure(**previous)
