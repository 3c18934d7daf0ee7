"""Facts about this machine and process, the same way on Linux, macOS and Windows.

Every part of ctflow that asks "how many cores may I use?", "how much memory is there?", "how
much has this process used?" or "is that process still alive?" asks here, so platform
differences live in one place: CPU affinity exists on Linux only, ``ru_maxrss`` is KiB on Linux
and bytes on macOS, Windows has no ``resource`` module, and ``os.kill(pid, 0)`` *terminates*
the process on Windows instead of probing it.

Examples
--------
>>> cpu_count() >= 1, total_memory_bytes() > 0
(True, True)
"""

from __future__ import annotations

import os
import sys

__all__ = ["cpu_count", "peak_rss_mb", "process_exists", "total_memory_bytes"]


def cpu_count() -> int:
    """Cores this process may run on (CPU affinity where the OS has it), at least 1.

    Examples
    --------
    >>> cpu_count() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:  # pragma: no cover - affinity unreadable
            pass
    return max(1, os.cpu_count() or 1)


def total_memory_bytes() -> int:
    """Physical memory of the machine in bytes (0 when the OS does not say).

    Examples
    --------
    >>> total_memory_bytes() > 2**20
    True
    """
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return int(pages) * int(size)
    except (AttributeError, ValueError, OSError):  # Windows, or an unknown name
        pass
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [
                ("dwLength", ctypes.c_ulong),
                ("dwMemoryLoad", ctypes.c_ulong),
                ("ullTotalPhys", ctypes.c_ulonglong),
                ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong),
                ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong),
                ("ullAvailVirtual", ctypes.c_ulonglong),
                ("sullAvailExtendedVirtual", ctypes.c_ulonglong),
            ]

        status = _Status()
        status.dwLength = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.ullTotalPhys)
    return 0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (0 where the OS does not say).

    Examples
    --------
    >>> peak_rss_mb() >= 0
    True
    """
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def process_exists(pid: int) -> bool | None:
    """Return whether process ``pid`` is alive on this machine (zombies count as gone).

    None when this cannot be told without harming it (Windows).

    Examples
    --------
    >>> process_exists(os.getpid())
    True
    """
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return True
    fields = stat.rsplit(")", 1)[-1].split()
    return not (bool(fields) and fields[0] in ("Z", "X"))
