"""Helpers shared by the benchmarks: timing with medians, peak memory, bandwidth, the machine.

Memory
------
Peak memory is read from the kernel: ``VmHWM`` (the resident-set high-water mark) of
``/proc/self/status``. :func:`reset_peak_rss` writes ``5`` to ``/proc/self/clear_refs``, which
resets the high-water mark to the current RSS (Linux >= 4.0), so the peak of one measured call
can be taken inside a process that already holds its inputs. Every benchmark case runs in a
fresh subprocess (:mod:`benchmarks.worker`), so a peer's imports or caches never count against
another contender.

Bandwidth
---------
:func:`copy_bandwidth` measures what the machine can stream: ``numpy.copyto`` between two
already-touched buffers (read + write bytes counted), on 1 thread and on 2 threads (each thread
copies one half; ``copyto`` releases the GIL). It also reports the copy into a *fresh*
allocation, whose first-touch page faults cost more than the copy itself.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ctflow.system import cpu_count


def median_time(
    fn: Callable[[], Any], repeat: int = 5, warmup: int = 1
) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed runs.

    Examples
    --------
    >>> t, times = median_time(lambda: sum(range(100)), repeat=3)
    >>> len(times), t >= 0
    (3, True)
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def machine() -> dict[str, Any]:
    """A short description of the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            found = re.search(r"model name\s*:\s*(.+)", fh.read())
        if found:
            cpu = found.group(1).strip()
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            found = re.search(r"MemTotal:\s*(\d+)", fh.read())
        if found:
            mem_gb = round(int(found.group(1)) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


# -- memory -----------------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    return _status_kb("VmRSS") / 1024.0


def peak_rss_mb() -> float:
    """High-water mark of the resident set size of this process (``VmHWM``), MiB."""
    return _status_kb("VmHWM") / 1024.0


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS; False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


# -- machine limits -------------------------------------------------------------------------
def _on_two_threads(first: Callable[[], Any], second: Callable[[], Any]) -> None:
    """Run ``first`` on a new thread and ``second`` on this one; return when both are done."""
    th = threading.Thread(target=first)
    th.start()
    second()
    th.join()


def _spin_kernel() -> Callable[[int], float]:
    import numba

    @numba.njit(nogil=True, cache=False)
    def spin(n: int) -> float:  # registers only: no memory traffic, no GIL
        s = 0.0
        for i in range(n):
            s += np.sqrt(i * 1.0001) * 0.5
        return s

    return spin  # type: ignore[no-any-return]


def compute_scaling(n: int = 100_000_000, repeat: int = 7) -> dict[str, float]:
    """How much faster two threads do two pure-compute jobs than one thread (the ideal is 2).

    The ceiling of any thread-scaling ratio on this machine: a numba ``nogil`` loop on
    registers, so neither memory bandwidth nor the GIL is involved. Returns
    ``{"serial_s": ..., "two_threads_s": ..., "ratio": ...}``.

    Examples
    --------
    >>> 0.5 < compute_scaling(2_000_000, repeat=3)["ratio"] < 2.5  # 1 on one core, 2 ideally
    True
    """
    spin = _spin_kernel()
    spin(10)

    def serial() -> None:
        spin(n)
        spin(n)

    def two_threads() -> None:
        _on_two_threads(lambda: spin(n), lambda: spin(n))

    serial()
    two_threads()
    t1s, t2s, ratios = [], [], []
    for _ in range(repeat):  # in pairs, so a busy moment of the host hits both sides
        t1, _ = median_time(serial, repeat=1, warmup=0)
        t2, _ = median_time(two_threads, repeat=1, warmup=0)
        t1s.append(t1)
        t2s.append(t2)
        ratios.append(t1 / t2)
    return {
        "serial_s": round(statistics.median(t1s), 4),
        "two_threads_s": round(statistics.median(t2s), 4),
        "ratio": round(statistics.median(ratios), 2),
    }


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeat: int = 7) -> dict[str, float]:
    """Measured copy bandwidth, GB/s with read + write bytes counted.

    Returns ``{"copy_1t": ..., "copy_2t": ..., "copy_fresh_1t": ..., "bytes": ...}``.

    Examples
    --------
    >>> bw = copy_bandwidth(8 * 2**20, repeat=3)
    >>> bw["copy_1t"] > 0 and bw["copy_2t"] > 0
    True
    """
    n = n_bytes // 4
    src = np.ones(n, np.float32)
    dst = np.ones(n, np.float32)
    moved = 2 * src.nbytes / 1e9
    t1, _ = median_time(lambda: np.copyto(dst, src), repeat=repeat)
    half = n // 2

    def copy_part(a: int, b: int) -> None:
        np.copyto(dst[a:b], src[a:b])

    def two_threads() -> None:
        _on_two_threads(lambda: copy_part(0, half), lambda: copy_part(half, n))

    t2, _ = median_time(two_threads, repeat=repeat)
    tf, _ = median_time(lambda: src.copy(), repeat=repeat)
    return {
        "copy_1t": round(moved / t1, 2),
        "copy_2t": round(moved / t2, 2),
        "copy_fresh_1t": round(moved / tf, 2),
        "bytes": float(2 * src.nbytes),
    }
