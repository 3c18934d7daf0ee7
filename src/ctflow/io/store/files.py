"""Create the files of an item with plain ``os`` calls and start their writeback early.

Every function returns or takes an open descriptor: the writer fsyncs and closes all of them
at the end, before the item is renamed in (see :mod:`~ctflow.io.store.writer`).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Any


def _load_sync_file_range() -> Any:
    """Return libc's ``sync_file_range`` (Linux), or None where it does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2

_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | _BINARY
# a descriptor only used to fsync a file written by someone else (blosc2): read-only is enough
# on POSIX; Windows' fsync (``_commit``) needs one open for writing
_REOPEN = os.O_RDONLY if os.name == "posix" else os.O_RDWR | _BINARY


def _write_file(path: Path, *parts: bytes) -> int:
    """Create ``path`` holding ``parts`` one after another, start its writeback; return the fd.

    Plain ``os`` calls: Python's ``open()`` adds an ``fstat``, an ``ioctl`` and an ``lseek``,
    and every system call lets go of the GIL and has to take it back, which means waiting up
    to a switch interval whenever another thread is running Python. The caller fsyncs and
    closes the descriptor.

    Parameters
    ----------
    path : Path
        The file to create; it must not exist.
    *parts : bytes
        What the file holds, in order.

    Returns
    -------
    int
        An open descriptor of the file.
    """
    fd = os.open(path, _CREATE, 0o666)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        _start_writeback(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_for_fsync(path: Path) -> int:
    """Open a file just written by another library so that it can be fsynced; return the fd.

    Its writeback is started at once (``_start_writeback``); the caller fsyncs and closes
    the descriptor.
    """
    fd = os.open(path, _REOPEN)
    _start_writeback(fd)
    return fd


def _start_writeback(fd: int) -> None:
    """Start writing an open file to disk without waiting (Linux ``sync_file_range``).

    The files of an item are all written first, each with its writeback started, and fsynced
    at the end: the first ``fsync`` then commits the journal for all of them and the others
    find nothing left to do. Durability is unchanged: every file is fsynced before the item is
    renamed in. Elsewhere, and on any error (the call is advisory), nothing happens.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
