"""Page-level memory of the buffer pool: aligned private mappings and the buffers made of them.

:mod:`ctflow.memory` decides which buffer serves which array; this module holds the memory
itself. On Linux a buffer is a private anonymous mapping aligned to huge pages (``mmap``), whose
written pages can move into another buffer (``mremap``) and be made inaccessible while idle
(``mprotect``, :data:`GUARD`); elsewhere, and for pool misses without page moving, it is numpy's
memory, used from its first 2 MiB boundary.

Examples
--------
>>> buf = Buffer(4 * GRAIN, GRAIN, movable=False)
>>> buf.addr % GRAIN, buf.size == 4 * GRAIN
(0, True)
>>> buf.free(); buf.size
0
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

import numpy as np
from numpy.typing import NDArray

__all__ = ["GRAIN", "GUARD", "LIBC", "Buffer", "whole_grains"]

#: Buffer sizes and addresses are whole huge pages (2 MiB).
GRAIN = 2 * 2**20


def whole_grains(nbytes: int) -> int:
    """``nbytes`` rounded up to whole huge pages (:data:`GRAIN`)."""
    return -(-nbytes // GRAIN) * GRAIN


class _Libc:
    """The C library's ``mmap``/``mremap``/``munmap`` on Linux, to move pages between buffers."""

    MREMAP_MAYMOVE = 1
    MREMAP_FIXED = 2

    def __init__(self) -> None:
        lib = ctypes.CDLL(None, use_errno=True)
        self.mmap = lib.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_long,
        ]  # fmt: skip
        self.munmap = lib.munmap
        self.munmap.restype = ctypes.c_int
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.mremap = lib.mremap
        self.mremap.restype = ctypes.c_void_p
        self.mremap.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p,
        ]  # fmt: skip
        self.mprotect = lib.mprotect
        self.mprotect.restype = ctypes.c_int
        self.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.failed = ctypes.c_void_p(-1).value

    def map(self, size: int) -> int | None:
        """Return a private anonymous mapping of ``size`` bytes at a huge-page boundary, or None."""
        span = size + GRAIN
        addr = self.mmap(
            None, span, mmap.PROT_READ | mmap.PROT_WRITE,
            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0,
        )  # fmt: skip
        if addr is None or addr == self.failed:
            return None
        start = whole_grains(addr)  # page moves keep huge pages only when aligned
        if start > addr:
            self.munmap(addr, start - addr)
        if addr + span > start + size:
            self.munmap(start + size, addr + span - start - size)
        # No MADV_HUGEPAGE (numpy's own large arrays get it): where the kernel defragments
        # synchronously for madvised memory (THP "defrag=madvise", the usual default), a
        # fresh pooled buffer filled several times slower (docs/design.md).
        return start

    def move(self, src: int, dst: int, nbytes: int) -> bool:
        """Move the pages of ``[src, src + nbytes)`` to ``dst`` (over what was mapped there)."""
        flags = self.MREMAP_MAYMOVE | self.MREMAP_FIXED
        return bool(self.mremap(src, nbytes, nbytes, flags, dst) == dst)


def _load_libc() -> _Libc | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _Libc()
    except (OSError, AttributeError):  # no C library symbols to use: plain numpy buffers
        return None


LIBC = _load_libc()
#: ``CTFLOW_POOL_GUARD=1`` (a debugging aid, Linux): idle buffers are made inaccessible
#: (``mprotect``), so a use of an array's memory after the pool took it back faults at once,
#: with a traceback under ``python -X faulthandler``, instead of corrupting another array.
GUARD = os.environ.get("CTFLOW_POOL_GUARD", "") == "1"


class Buffer:
    """One pooled allocation: its address, size and how much of it was ever written.

    On Linux the memory is a private anonymous mapping of its own, aligned to huge pages, so
    the pages of an idle buffer can be moved into another buffer (``mremap``) instead of being
    freed; elsewhere a numpy array. ``touched`` is the prefix that was ever written: the pages
    that cost memory. A buffer made of pages moved from others is several mappings; ``pieces``
    holds the offset where each starts (one ``mremap`` moves pages of one mapping only). Every
    offset is a whole number of huge pages, so the process never holds more pool mappings than
    pooled bytes / 2 MiB.
    """

    __slots__ = ("addr", "array", "pieces", "size", "touched")

    def __init__(self, size: int, touched: int, *, movable: bool = True) -> None:
        addr = LIBC.map(size) if LIBC is not None and movable else None
        self.array: NDArray[np.uint8] | None = None
        if addr is None:  # numpy's memory (or the mapping failed): numpy raises MemoryError
            # numpy asks the kernel for huge pages (a fresh buffer faults in 2 MiB at a time),
            # but malloc puts the data 16 bytes past a page boundary, where the kernel's copy
            # of file bytes into it (``readinto``) runs ~3x slower: start at a 2 MiB boundary.
            self.array = np.empty(size + GRAIN, np.uint8)
            base = int(self.array.ctypes.data)
            addr = whole_grains(base)
        self.addr = addr
        self.size = size
        self.touched = touched
        self.pieces = [0]

    @property
    def movable(self) -> bool:
        """Whether its pages can move into another buffer (a mapping of its own, not empty)."""
        return self.array is None and self.size > 0

    def give(self, dst: Buffer, offset: int, nbytes: int) -> tuple[int, bool]:
        """Move up to ``nbytes`` (whole huge pages) of written memory into ``dst`` at ``offset``.

        The pages are the end of the written part, moved mapping by mapping to the same place
        relative to ``offset``; the buffer keeps the rest (or nothing). Returns the bytes of
        ``dst`` used from ``offset`` on, and whether every move worked (if not, the part of that
        range that did not move stays new memory).
        """
        assert LIBC is not None
        written = min(self.size, whole_grains(self.touched))
        start = max(0, written - whole_grains(nbytes))
        end, ok = written, True
        while end > start:
            first = max(start, max(p for p in self.pieces if p < end))  # within one mapping
            at = offset + first - start
            if not LIBC.move(self.addr + first, dst.addr + at, end - first):
                ok = False
                break
            dst.pieces.append(at)
            end = first
        if end < written:  # [end, written) moved out: the rest above it was never written
            LIBC.munmap(self.addr + end, self.size - end)
            self.size = end
            self.touched = min(self.touched, end)
            self.pieces = [p for p in self.pieces if p < end] or [0]
        return written - start, ok

    def protect(self, usable: bool) -> None:
        """Make the buffer readable and writable, or not at all (:data:`GUARD`)."""
        if GUARD and LIBC is not None and self.size:
            prot = mmap.PROT_READ | mmap.PROT_WRITE if usable else 0  # 0: PROT_NONE
            LIBC.mprotect(self.addr, self.size, prot)

    def free(self) -> None:
        """Give the memory back now."""
        if self.array is not None:
            self.protect(True)  # numpy's memory goes back to malloc, which may reuse it
            self.array = None
        elif self.size and LIBC is not None:
            LIBC.munmap(self.addr, self.size)
        self.size = 0
