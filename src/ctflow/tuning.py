"""Speed tricks that change how the process behaves, behind one switchboard.

ctflow's kernels are plain numba loops; three tricks go further and change the process itself.
Each is kept only because a benchmark of a realistic pipeline shows it pays
(``python -m benchmarks.run --cases tuning``; the numbers are in ``docs/benchmarks.md``), and
each can be switched here or by an environment variable, in every process (Dask workers too):

=================  ==========================  ==================================================
switch             environment                 what it does
=================  ==========================  ==================================================
``buffer_pool``    ``CTFLOW_POOL_MB`` (MiB,    large arrays come from a pool of buffers that one
                   0 = off)                    scan hands to the next (:mod:`ctflow.memory`),
                                               instead of fresh memory (page faults, zeroing).
                                               At most ``pool_mb`` idle (default: a tenth of
                                               the machine's memory, at most 2 GiB), and the
                                               idle buffers are released when a run ends.
``move_pages``     ``CTFLOW_MOVE_PAGES``       Linux: a request no idle buffer fits is made of
                   (1 / 0)                     idle buffers' pages, moved with ``mremap``,
                                               rather than of new memory.
``lend_threads``   ``CTFLOW_LEND_THREADS``     with ``prefetch``, a thread no batch uses joins
                   (1 / 0)                     the kernel another batch runs
                                               (:func:`ctflow.parallel.run_ranges`).
``streaming``      ``CTFLOW_STREAMING_STORES`` x86-64: ``normalize_hu`` writes int16 -> float32
                   (1 / 0)                     with non-temporal stores (hand-written LLVM).
=================  ==========================  ==================================================

Examples
--------
>>> previous = configure(lend_threads=False)
>>> settings().lend_threads
False
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


def _pool_mb() -> float | None:
    raw = os.environ.get("CTFLOW_POOL_MB")
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParameterError(
            f"CTFLOW_POOL_MB must be a number of MiB (0 turns pooling off); got {raw!r}"
        ) from None
    if value < 0:
        raise InvalidParameterError(f"CTFLOW_POOL_MB must be >= 0; got {raw!r}")
    return value


@dataclass(frozen=True)
class Tuning:
    """The switches (see the module docstring)."""

    buffer_pool: bool = True
    move_pages: bool = True
    lend_threads: bool = True
    streaming: bool = True


def _from_environment() -> Tuning:
    pool_mb = _pool_mb()
    return Tuning(
        buffer_pool=_flag("CTFLOW_BUFFER_POOL", True) and (pool_mb is None or pool_mb > 0),
        move_pages=_flag("CTFLOW_MOVE_PAGES", True),
        lend_threads=_flag("CTFLOW_LEND_THREADS", True),
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
