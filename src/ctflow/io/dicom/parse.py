"""The bounded pydicom parse of one DICOM file: regular files only, every read on a budget.

:func:`_parse` reads a file with pydicom up to a tag (the pixel data for the header pass of
:mod:`ctflow.io.dicom.headers`, past it for :mod:`ctflow.io.dicom.pixels`). Only regular files
are opened (a FIFO, socket or device never is), values over 64 KiB are skipped (seeked over),
not read, and a parse that makes more than 50 000 reads, reads more than 32 MiB, meets more
than 20 000 top-level elements, meets an element running past the end of the file, or inflates
a deflated dataset beyond 64 MiB stops and marks the file damaged (``_Damaged``). Whatever a
file holds, its header pass costs at most that.
"""

from __future__ import annotations

import io
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.filereader import read_partial

_DEFER_BYTES = 64 * 2**10  # header values longer than this are seeked over, never read
_MAX_READS = 50_000  # read calls one parse may make (real CT headers need 300 to a few 1000)
_MAX_READS_UID = 5_000  # ... when only reading up to SeriesInstanceUID (a damaged file's series)
_MAX_READ_BYTES = 32 * 2**20  # bytes one header parse may read
_MAX_INFLATED = 64 * 2**20  # the most a deflated dataset may inflate to
_MAX_ELEMENTS = 20_000  # top-level elements before the pixel data
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # (Float/Double) Pixel Data
_PIXEL_DATA = 0x7FE00010
_SERIES_UID = 0x0020000E
_NOT_DICOM = "not a DICOM file (no 'DICM' preamble / file meta header)"


class _Damaged(Exception):
    """Internal: a header parse met broken or hostile content, or went over its budget."""


class _NotDicom(Exception):
    """Internal: the file has no 'DICM' prefix; ``head`` holds its first bytes."""

    def __init__(self, head: bytes) -> None:
        super().__init__(_NOT_DICOM)
        self.head = head


class _NotRegular(OSError):
    """Internal: the path is not a regular file (it was not read)."""


def _file_kind(mode: int) -> str:
    """Name what a non-regular file is: FIFO, socket, device ..."""
    kinds: tuple[tuple[Callable[[int], bool], str], ...] = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def _opener(path: str, flags: int) -> int:
    """Open ``path`` read-only without blocking, and only when it is a regular file.

    ``O_NONBLOCK`` makes even a FIFO swapped in after the caller's ``stat`` open at once; the
    ``fstat`` of the open descriptor then refuses it.
    """
    extra = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | extra)
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _NotRegular(f"{_file_kind(mode)}, not a regular file")
    return fd


def _open_file(path: Path) -> io.FileIO:
    """Open a regular file for unbuffered reading; a FIFO, socket or device is refused at once."""
    return io.FileIO(os.fspath(path), "rb", opener=_opener)  # a str name: pydicom reopens it


class _BoundedReader(io.BufferedReader):
    """A buffered file whose reads raise ``_Damaged`` past a budget of calls and bytes.

    pydicom reads the whole rest of a file (``read()`` without a size) only for a deflated
    dataset, which it then inflates in memory: that read is refused over ``max_bytes``, and
    when the bytes are a deflate stream they are first inflated here, chunk by chunk, and
    refused when they inflate to more than ``_MAX_INFLATED``.
    """

    def __init__(self, raw: io.FileIO, size: int, max_bytes: int, max_reads: int) -> None:
        super().__init__(raw, buffer_size=2**16)
        self.size = size
        self.max_bytes = max_bytes
        self.max_reads = max_reads
        self.reads = 0
        self.read_bytes = 0
        self.inflated = False  # the parse goes on in a buffer pydicom inflated
        self.failure = ""

    def _fail(self, why: str) -> _Damaged:
        self.failure = why
        return _Damaged(why)

    def read(self, size: int | None = -1, /) -> bytes:
        """Read like ``BufferedReader.read``, within the budget."""
        self.reads += 1
        if self.reads > self.max_reads:
            raise self._fail(f"more than {self.max_reads} reads before the pixel data")
        if size is None or size < 0:
            return self._read_rest()
        if self.read_bytes + size > self.max_bytes:
            raise self._fail(f"more than {self.max_bytes >> 20} MiB of values before the pixels")
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def _read_rest(self) -> bytes:
        """Read the rest of the file (a deflated dataset), within both budgets."""
        data = super().read(self.max_bytes - self.read_bytes + 1)
        self.read_bytes += len(data)
        if self.read_bytes > self.max_bytes:
            raise self._fail(f"the dataset is over {self.max_bytes >> 20} MiB")
        inflater, total, rest = zlib.decompressobj(-zlib.MAX_WBITS), 0, data
        try:
            while rest and total <= _MAX_INFLATED:
                total += len(inflater.decompress(rest, 2**20))
                rest = inflater.unconsumed_tail
        except zlib.error:
            return data  # not a deflate stream after all: pydicom says what is wrong
        if total > _MAX_INFLATED:
            raise self._fail(f"the deflated dataset inflates to over {_MAX_INFLATED >> 20} MiB")
        self.inflated = True
        return data


def _tag_text(tag: int) -> str:
    """Format a tag as ``(gggg,eeee)``."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Stop:
    """The ``stop_when`` of a bounded parse, called before each top-level element's value.

    Stops (returns True) at the first tag for which ``stop(tag)`` holds, or on damage: more
    than ``_MAX_ELEMENTS`` elements, or a value running past the end of the file (``problem``
    says which).
    """

    def __init__(self, fh: _BoundedReader, stop: Callable[[int], bool]) -> None:
        self.fh = fh
        self.stop = stop
        self.elements = 0
        self.stopped = False
        self.problem = ""

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        """Tell pydicom whether to stop before this element's value."""
        self.elements += 1
        if self.stop(tag):
            self.stopped = True
            return True
        if self.elements > _MAX_ELEMENTS:
            self.problem = f"more than {_MAX_ELEMENTS} elements before the pixel data"
            return True
        if length != _UNDEFINED_LENGTH and not self.fh.inflated:
            left = self.fh.size - self.fh.tell()
            if length > left:
                self.problem = (
                    f"element {_tag_text(tag)} claims {length} bytes but the file ends "
                    f"{max(left, 0)} bytes later (truncated file)"
                )
                return True
        return False


@dataclass
class _Parsed:
    """A bounded parse: the dataset read, how it ended, where the pixel data starts."""

    dataset: Any
    state: _Stop
    pixel_at: int
    pixel_head: bytes


def _at_pixels(tag: int) -> bool:
    """Stop before the pixel data (the header pass)."""
    return tag in _PIXEL_TAGS


def _after_pixels(tag: int) -> bool:
    """Stop after the pixel data (the pixel pass: trailing elements are not parsed)."""
    return tag > _PIXEL_DATA


def _past_uid(tag: int) -> bool:
    """Stop after SeriesInstanceUID (reading the series of a damaged file)."""
    return tag > _SERIES_UID


def _parse(
    path: Path,
    size: int,
    stop: Callable[[int], bool],
    defer: bool = True,
    max_bytes: int = _MAX_READ_BYTES,
    max_reads: int = _MAX_READS,
) -> _Parsed:
    """Parse ``path`` with pydicom until ``stop(tag)``, within the budgets of this module.

    Raises
    ------
    _NotRegular, OSError
        The file is not a regular file, or cannot be opened.
    _NotDicom
        No ``DICM`` prefix at byte 128.
    _Damaged
        pydicom failed, or the parse went over a budget.
    """
    with _BoundedReader(_open_file(path), size, max_bytes, max_reads) as fh:
        head = fh.read(132)
        if head[128:132] != b"DICM":
            raise _NotDicom(head)
        fh.seek(0)
        state = _Stop(fh, stop)
        try:
            ds = read_partial(fh, state, defer_size=_DEFER_BYTES if defer else None, force=False)
            at = fh.tell()  # pydicom rewinds to the start of the element it stopped at
            pixel_head = fh.read(12)
        except (_Damaged, MemoryError):
            raise
        except Exception as exc:  # truncated or garbled: pydicom raises many types
            why = fh.failure or f"{type(exc).__name__}: {str(exc)[:150]}"
            raise _Damaged(f"unreadable header ({why})") from exc
    return _Parsed(ds, state, at, pixel_head)
