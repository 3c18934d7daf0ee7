"""Where a reader's voxel bytes come from: a plain file or a bounded zlib/gzip inflater.

A :class:`VoxelSource` fills the caller's buffers: :class:`FileSource` reads straight into them
(``readinto``), :class:`ZlibSource` inflates compressed data in bounded pieces (at most
:data:`INFLATE_OUT` bytes out of at most :data:`INFLATE_IN` bytes in per zlib call), each copied
straight into the output array: reading a ``.nii.gz``, ``.zraw`` or gzip NRRD needs one volume
plus about a megabyte, never a second copy. Both release the GIL while they work.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import BinaryIO, Protocol

from ctflow.errors import CorruptFileError

__all__ = ["INFLATE_IN", "INFLATE_OUT", "FileSource", "VoxelSource", "ZlibSource"]

#: Compressed bytes handed to zlib per call (and read from the file per ``read``): bounds the
#: input zlib keeps back (``unconsumed_tail``) when its output limit is reached.
INFLATE_IN = 64 * 1024
#: Most bytes one zlib call may return: the only memory a compressed read needs besides the
#: output array (each piece is copied into it at once, while still in the CPU cache).
INFLATE_OUT = 256 * 1024
#: Deflate's largest inflation (bytes out per compressed byte), 1032:1, with some room.
_MAX_INFLATE_RATIO = 1040


class VoxelSource(Protocol):
    """Where voxel bytes come from: a plain file or a compressed stream (the interface)."""

    def fill(self, mv: memoryview) -> int:
        """Write bytes into ``mv``; return how many (fewer than ``len(mv)`` only at the end)."""
        ...

    def finish(self) -> None:
        """Check that the data ended where the header said (compressed streams)."""
        ...

    def check_claim(self, n_bytes: int, path: Path, where: str) -> None:
        """Refuse, before anything is allocated, a size the source cannot hold."""
        ...


class FileSource:
    """Raw bytes read straight into the caller's buffers (``readinto``, GIL released).

    Parameters
    ----------
    fh : binary file
        An unbuffered or buffered binary file, positioned at the first voxel byte.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def fill(self, mv: memoryview) -> int:
        """Read bytes into ``mv``; return how many (fewer than ``len(mv)`` only at the end)."""
        pos = 0
        while pos < len(mv):
            n = self.fh.readinto(mv[pos:])  # type: ignore[attr-defined]
            if not n:
                break
            pos += n
        return pos

    def finish(self) -> None:
        """Do nothing: a plain file's size was checked against the header beforehand."""
        return None

    def check_claim(self, n_bytes: int, path: Path, where: str) -> None:
        """Do nothing: a plain file's size was checked against the header beforehand."""
        return None


class ZlibSource:
    """zlib or gzip stream inflated in bounded pieces straight into the caller's buffers.

    Each zlib call gets at most :data:`INFLATE_IN` compressed bytes and returns at most
    :data:`INFLATE_OUT` bytes, which are copied into the caller's buffer at once: a volume is
    inflated with about a megabyte besides the output array, never a second copy of it.
    ``zlib`` inflates with the GIL released, so several scans decompress in parallel on
    threads. With ``multi_member=True`` concatenated gzip members are read as one stream (as
    ``gzip`` and zlib's ``gzread`` do).

    Parameters
    ----------
    fh : binary file
        The file, positioned at the first compressed byte.
    n_in : int
        Compressed bytes to read at most.
    path : Path
        The file the error messages name (the header).
    data_path : Path
        The file holding the compressed data (named in the messages too).
    multi_member : bool, default False
        Read concatenated gzip members as one stream.
    what : str, default "the header's sizes"
        What the sizes come from, for the message when the stream holds more data.

    Examples
    --------
    >>> import io, zlib
    >>> src = ZlibSource(io.BytesIO(zlib.compress(b"abcdef")), 100, Path("x"), Path("x"))
    >>> buf = bytearray(6)
    >>> src.fill(memoryview(buf)), bytes(buf)
    (6, b'abcdef')
    >>> src.finish()
    """

    def __init__(
        self,
        fh: BinaryIO,
        n_in: int,
        path: Path,
        data_path: Path,
        *,
        multi_member: bool = False,
        what: str = "the header's sizes",
    ) -> None:
        self.fh = fh
        self.n_in = n_in
        self.left = n_in
        self.path = path
        self.data_path = data_path
        self.multi_member = multi_member
        self.what = what
        self.z = zlib.decompressobj(47)  # 32 + 15: zlib or gzip header, auto-detected
        self.tail = b""  # input the inflater has not taken yet (at most INFLATE_IN bytes)

    def _read_raw(self) -> bytes:
        """Read the next compressed bytes from the file (b"" when ``n_in`` are used up)."""
        if self.left <= 0:
            return b""
        data = self.fh.read(min(INFLATE_IN, self.left))
        if not data:
            self.left = 0
            return b""
        self.left -= len(data)
        return data

    def _next_input(self) -> bytes:
        """Return the next input for the inflater (b"" at the end of the last stream)."""
        if self.tail:
            data, self.tail = self.tail, b""
            return data
        if not self.z.eof:
            return self._read_raw()
        if not self.multi_member:
            return b""
        rest = self.z.unused_data or self._read_raw()
        if rest:
            self.z = zlib.decompressobj(47)  # the next gzip member
        return rest

    def _inflate(self, data: bytes, max_length: int) -> bytes:
        """Inflate ``data`` into at most ``max_length`` bytes; keep what is left over."""
        try:
            out = self.z.decompress(data, max_length)
        except zlib.error as exc:
            raise CorruptFileError(
                f"{self.path}: compressed voxel data in {self.data_path.name} is corrupt "
                f"(zlib: {exc})"
            ) from exc
        # at the end of a stream, CPython reports the leftover input in BOTH unconsumed_tail and
        # unused_data: keep it only once (unused_data, the start of a next gzip member)
        self.tail = b"" if self.z.eof else self.z.unconsumed_tail
        return out

    def fill(self, mv: memoryview) -> int:
        """Inflate into ``mv``; return how many bytes (fewer than ``len(mv)`` only at the end)."""
        pos, end = 0, len(mv)
        while pos < end:
            data = self._next_input()
            if not data and self.z.eof:
                break
            # bounded: at most INFLATE_OUT bytes per call; b"" drains output zlib still holds
            out = self._inflate(data, min(end - pos, INFLATE_OUT))
            if not out:
                if not data:
                    break
                continue
            n = len(out)
            mv[pos : pos + n] = out
            pos += n
        return pos

    def check_claim(self, n_bytes: int, path: Path, where: str) -> None:
        """Refuse a claim of more bytes than the compressed data can inflate to.

        Deflate inflates at most 1032 bytes per compressed byte, so a few hundred compressed
        bytes claiming gigabytes are refused before the volume is allocated.

        Raises
        ------
        CorruptFileError
            ``n_bytes`` exceeds what ``n_in`` compressed bytes can hold.
        """
        most = _MAX_INFLATE_RATIO * max(self.n_in, 0) + 65536
        if n_bytes > most:
            raise CorruptFileError(
                f"{path}: {where} holds {max(self.n_in, 0)} compressed bytes, which cannot "
                f"inflate to the {n_bytes} voxel bytes the header claims (deflate inflates at "
                "most 1032 bytes per byte): truncated file or sizes disagree"
            )

    def finish(self) -> None:
        """Check that the stream ends here: no more voxel bytes, not truncated.

        Raises
        ------
        CorruptFileError
            The stream inflates to more bytes than the header says, or does not end.
        """
        while True:
            data = self._next_input()
            if not data:
                break
            if self._inflate(data, 1):
                raise CorruptFileError(
                    f"{self.path}: {self.data_path.name} inflates to more voxel bytes than "
                    f"{self.what} say (sizes disagree)"
                )
        if not self.z.eof:
            raise CorruptFileError(
                f"{self.path}: compressed voxel data in {self.data_path.name} is truncated "
                "(the compressed stream does not end)"
            )
