"""Voxel input shared by the native MetaImage, NIfTI and NRRD readers.

A reader parses its header, then hands a :class:`VoxelSource` (a plain file,
:class:`FileSource`, or a zlib/gzip stream, :class:`ZlibSource`) to :func:`read_voxels`, which
fills a preallocated numpy array straight from the file (``readinto`` and zlib both release the
GIL, so scans load in parallel on threads) and converts it to ctflow's CT dtype
(:func:`to_ct_dtype`): int16 when integer values fit, else float32 when exact; NaN and Inf are
refused (:func:`check_finite`). Size limits (:data:`MAX_VOXELS_BYTES`,
:data:`HEADER_MAX_BYTES`) stop a corrupt or hostile header before anything is allocated.

Compressed data is inflated in bounded pieces (at most :data:`INFLATE_OUT` bytes out of at most
:data:`INFLATE_IN` bytes in per zlib call), each copied straight into the output array: reading a
``.nii.gz``, ``.zraw`` or gzip NRRD needs one volume plus about a megabyte, never a second copy.

Files are opened only when :func:`os.stat` says they are regular files (:func:`open_regular`):
a FIFO, socket or device named like a scan is refused at once instead of blocking the reader.
Paths given by the caller are checked first (:func:`as_source_path`: no NUL byte, names and
length within the file system's limits), and a data file named by a header must lie in the
header's folder unless the caller allows otherwise (:func:`check_data_file`).

Examples
--------
>>> import io
>>> import numpy as np
>>> from pathlib import Path
>>> data = np.arange(8, dtype="<u2").tobytes()
>>> arr = read_voxels(FileSource(io.BytesIO(data)), (2, 2, 2), np.dtype("<u2"), Path("x"),
...                   "the data", "MET_USHORT")
>>> arr.dtype.name, int(arr[1, 1, 1])
('int16', 7)
"""

from __future__ import annotations

import io
import os
import stat
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import (
    CorruptFileError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.validation import check_path_text

__all__ = [
    "HEADER_MAX_BYTES",
    "INFLATE_IN",
    "INFLATE_OUT",
    "MAX_VOXELS_BYTES",
    "FileSource",
    "VoxelSource",
    "ZlibSource",
    "as_source_path",
    "check_data_file",
    "check_finite",
    "open_regular",
    "read_header_bytes",
    "read_stored",
    "read_voxels",
    "skip_bytes",
    "to_ct_dtype",
]


#: Largest voxel payload (bytes, as stored) a header may claim; larger claims are refused
#: before anything is allocated (a corrupt or hostile header cannot exhaust memory).
MAX_VOXELS_BYTES = 4 * 1024**3

#: A text header (MetaImage, NRRD) longer than this is taken for a file of another kind.
HEADER_MAX_BYTES = 1024 * 1024

_EXACT_FLOAT32_INT = 2**24  # integers up to this magnitude are exact in float32
_IO_CHUNK = 16 * 1024 * 1024  # bytes per read/compress step for streamed (converted) data

#: Compressed bytes handed to zlib per call (and read from the file per ``read``): bounds the
#: input zlib keeps back (``unconsumed_tail``) when its output limit is reached.
INFLATE_IN = 64 * 1024
#: Most bytes one zlib call may return: the only memory a compressed read needs besides the
#: output array (each piece is copied into it at once, while still in the CPU cache).
INFLATE_OUT = 256 * 1024
#: Deflate's largest inflation (bytes out per compressed byte), 1032:1, with some room.
_MAX_INFLATE_RATIO = 1040


def read_header_bytes(path: Path, file_kind: str, header_kind: str) -> tuple[bytes, bool]:
    r"""Read the first :data:`HEADER_MAX_BYTES` of a text-header file.

    Parameters
    ----------
    path : Path
        The file.
    file_kind : str
        What the file should be, for the error on a folder (``"is a folder, not a <file_kind>"``).
    header_kind : str
        What the header is, for the error on a read failure (``"cannot read the <header_kind>"``).

    Returns
    -------
    buf : bytes
        The first bytes of the file.
    more : bool
        Whether the file goes on after them.

    Raises
    ------
    CorruptFileError
        The file is missing, a folder, a FIFO, socket or device, or unreadable (the message
        names it).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "h.mhd"
    >>> _ = p.write_bytes(b"NDims = 3\n")
    >>> read_header_bytes(p, "MetaImage header file", "MetaImage header")
    (b'NDims = 3\n', False)
    """
    fh, _ = open_regular(path, file_kind)
    try:
        with fh:
            buf = fh.read(HEADER_MAX_BYTES)
            more = bool(fh.read(1))
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read the {header_kind} ({exc})") from exc
    return buf, more


def as_source_path(path: Any, where: str) -> Path:
    r"""Return the path a caller gave a reader, once it can name a file.

    Parameters
    ----------
    path : str or os.PathLike
        The path as given (``bytes`` paths are decoded as :func:`os.fsdecode` does).
    where : str
        The function checking it, for the message (e.g. ``"read_scan"``).

    Returns
    -------
    Path
        The same path.

    Raises
    ------
    InvalidParameterError
        Not a path, empty, a NUL byte, a name over 255 bytes or a path over 4096 bytes (the
        message names the path); the operating system is never asked about such a path.

    Examples
    --------
    >>> as_source_path("a/scan.mhd", "read_scan")
    PosixPath('a/scan.mhd')
    >>> as_source_path("scan\x00.mhd", "read_scan")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: read_scan: path 'scan\x00.mhd' contains a NUL byte
    """
    try:
        raw = os.fspath(path)
    except TypeError:
        raise InvalidParameterError(
            f"{where}: path must be a str or os.PathLike; got {type(path).__name__} {path!r:.80}"
        ) from None
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    if not text:
        raise InvalidParameterError(f"{where}: path must not be empty")
    check_path_text(text, "path", where)
    return Path(text)


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _not_regular(mode: int) -> str | None:
    """Return what a file of this ``st_mode`` is when it is not a regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    for test, what in _SPECIAL:
        if test(mode):
            return what
    return "not a regular file"


def open_regular(
    path: Path, file_kind: str, *, owner: Path | None = None, label: str = ""
) -> tuple[io.FileIO, int]:
    """Open a regular file for reading, never blocking; refuse FIFOs, sockets, devices, folders.

    The file is checked with :func:`os.stat` before it is opened, opened non-blocking (a FIFO
    swapped in between cannot block either) and checked again with :func:`os.fstat`.

    Parameters
    ----------
    path : Path
        The file.
    file_kind : str
        What the file should be, for the messages (``"is a folder, not a <file_kind>"``).
    owner : Path, optional
        The header that named ``path`` (a data file): the messages then start with the header
        and ``label``.
    label : str
        How the messages name a data file, e.g. ``"its data file /d/s.raw (ElementDataFile)"``.

    Returns
    -------
    fh : io.FileIO
        The open file (unbuffered), at its first byte.
    size : int
        Its size in bytes.

    Raises
    ------
    CorruptFileError
        Missing, not a regular file, or cannot be opened (the message names it).

    Examples
    --------
    >>> open_regular(Path("/dev/null"), "NIfTI file")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.CorruptFileError: /dev/null: is a character device, not a NIfTI file; ...
    """
    head = f"{path}:" if owner is None else f"{owner}: {label}"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        missing = "no such file" if owner is None else "does not exist"
        raise CorruptFileError(f"{head} {missing}") from None
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{head} cannot be read ({exc})") from None
    kind = _not_regular(st.st_mode)
    if kind is not None:
        raise CorruptFileError(
            f"{head} is {kind}, not a {file_kind}; ctflow reads regular files only"
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CorruptFileError(f"{head} cannot be opened ({exc})") from None
    try:
        st = os.fstat(fd)
        kind = _not_regular(st.st_mode)
        if kind is not None:
            raise CorruptFileError(
                f"{head} is {kind}, not a {file_kind}; ctflow reads regular files only"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        fh = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    return fh, st.st_size


def check_data_file(header: Path, data_path: Path, line: str, allow_external_data: bool) -> None:
    """Refuse a data file that a header names outside its folder (unless allowed).

    The data file must resolve, after symbolic links, to the header's folder or a folder below
    it: the folder the header is named in, or, when the header itself is a symbolic link, the
    folder of the file it points to. So ``ElementDataFile = /etc/passwd``, ``../x`` or a link
    out of the folder are refused, while ``scan.raw``, ``sub/scan.raw`` or the absolute path of
    a file beside the header are read.

    Parameters
    ----------
    header : Path
        The header file.
    data_path : Path
        The data file it names (relative names already joined to the header's folder).
    line : str
        The header line that names it, for the message (``"ElementDataFile = ../x.raw"``).
    allow_external_data : bool
        Skip the check: read data files wherever the header says (trusted headers only).

    Raises
    ------
    UnsupportedFormatError
        The data file lies outside the header's folder; the message says how to allow it.

    Examples
    --------
    >>> check_data_file(Path("/d/s.mhd"), Path("/etc/passwd"), "ElementDataFile = /etc/passwd",
    ...                 False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.UnsupportedFormatError: /d/s.mhd: 'ElementDataFile = /etc/passwd' names ...
    """
    if allow_external_data:
        return
    try:
        real = os.path.realpath(data_path)
        roots = {os.path.realpath(header.parent), os.path.dirname(os.path.realpath(header))}
    except (OSError, ValueError) as exc:
        raise CorruptFileError(
            f"{header}: cannot resolve its data file {data_path} ({exc})"
        ) from None
    for root in roots:
        try:
            if os.path.commonpath([real, root]) == root:
                return
        except ValueError:  # another drive (Windows)
            continue
    raise UnsupportedFormatError(
        f"{header}: {line!r} names {real}, outside the header's folder "
        f"{os.path.realpath(header.parent)}; ctflow reads data files only from a header's own "
        "folder (or below) by default, so a header cannot make it read other files. If you "
        "trust this header, pass allow_external_data=True (read_scan(..., "
        "allow_external_data=True), or load(allow_external_data=True) in a pipeline)"
    )


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


def skip_bytes(src: VoxelSource, n: int, path: Path, where: str) -> None:
    """Read and drop ``n`` bytes from ``src`` (a gap before the voxels).

    Parameters
    ----------
    src : VoxelSource
        Where the bytes come from.
    n : int
        How many bytes to drop (nothing for ``n <= 0``).
    path : Path
        The file the error message names.
    where : str
        What holds the data, for the message (e.g. ``"the gzip stream"``).

    Raises
    ------
    CorruptFileError
        The data ends inside the ``n`` bytes.
    """
    scratch = bytearray(min(max(n, 0), _IO_CHUNK))
    left = n
    while left > 0:
        k = min(left, len(scratch))
        got = src.fill(memoryview(scratch)[:k])
        if got != k:
            raise CorruptFileError(
                f"{path}: {where} is truncated: it ends inside the {n} bytes before the voxels"
            )
        left -= k


def read_stored(
    src: VoxelSource,
    dims_zyx: tuple[int, int, int],
    stored: np.dtype[Any],
    path: Path,
    where: str,
) -> NDArray[Any]:
    """Read the stored voxels in native byte order (float64 comes back as float32).

    float64 data is converted slab by slab, so no float64 volume is ever held.

    Parameters
    ----------
    src : VoxelSource
        Where the voxel bytes come from, positioned at the first one.
    dims_zyx : tuple of 3 int
        The volume's shape, (Z, Y, X).
    stored : numpy.dtype
        The stored type, with its byte order.
    path : Path
        The file the error messages name.
    where : str
        What holds the data, for the messages (e.g. ``"data file scan.raw"``).

    Returns
    -------
    ndarray
        The (Z, Y, X) voxels, of ``stored``'s type in native byte order (float32 for float64).

    Raises
    ------
    CorruptFileError
        The data is shorter (or, for compressed streams, longer) than ``dims_zyx`` x
        ``stored.itemsize``, or compressed data too short ever to inflate to that (refused
        before the volume is allocated).
    """
    native = stored.newbyteorder("=")
    swap = stored.byteorder not in ("=", "|") and stored != native
    n_bytes = dims_zyx[0] * dims_zyx[1] * dims_zyx[2] * stored.itemsize
    src.check_claim(n_bytes, path, where)
    if native.kind == "f" and native.itemsize == 8:
        # float64 -> float32 one slab at a time: no float64 volume is ever held
        out = memory.empty(dims_zyx, np.float32)
        z_step = max(1, _IO_CHUNK // max(1, dims_zyx[1] * dims_zyx[2] * 8))
        buf = np.empty((min(z_step, dims_zyx[0]), dims_zyx[1], dims_zyx[2]), stored)
        done = 0
        for z0 in range(0, dims_zyx[0], z_step):
            z1 = min(z0 + z_step, dims_zyx[0])
            part = buf[: z1 - z0]
            mv = part.data.cast("B")
            got = src.fill(mv)
            if got != len(mv):
                raise CorruptFileError(
                    f"{path}: {where} is truncated: expected {n_bytes} voxel bytes, "
                    f"got {done + got}"
                )
            done += got
            with np.errstate(over="ignore", invalid="ignore"):
                out[z0:z1] = part
        src.finish()
        return out
    arr = memory.empty(dims_zyx, native)
    mv = arr.data.cast("B")
    got = src.fill(mv)
    if got != n_bytes:
        raise CorruptFileError(
            f"{path}: {where} is truncated: expected {n_bytes} voxel bytes, got {got}"
        )
    src.finish()
    if swap:
        arr.byteswap(inplace=True)
    return arr


def check_finite(out: NDArray[Any], path: Path | str, etype: str) -> None:
    """Refuse a float volume holding NaN or Inf.

    Parameters
    ----------
    out : ndarray
        The volume (anything but float passes).
    path : Path or str
        The file (or URL) the error message names.
    etype : str
        The stored element type, for the message.

    Raises
    ------
    InvalidScanError
        The volume holds NaN or Inf voxels.

    Examples
    --------
    >>> check_finite(np.array([[[1.0, np.nan]]]), Path("x.nii"), "float32")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidScanError: x.nii: float32 volume holds 1 NaN or Inf voxel(s) ...
    """
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InvalidScanError(
            f"{path}: {etype} volume holds {bad} NaN or Inf voxel(s) (or values beyond float32); "
            "voxels must be finite"
        )


def read_voxels(
    src: VoxelSource,
    dims_zyx: tuple[int, int, int],
    stored: np.dtype[Any],
    path: Path,
    where: str,
    etype: str,
) -> NDArray[Any]:
    """Read the voxels and convert them to ctflow's CT dtype, refusing NaN and Inf.

    :func:`read_stored`, then :func:`to_ct_dtype` and :func:`check_finite`.

    Parameters
    ----------
    src : VoxelSource
        Where the voxel bytes come from, positioned at the first one.
    dims_zyx : tuple of 3 int
        The volume's shape, (Z, Y, X).
    stored : numpy.dtype
        The stored type, with its byte order.
    path : Path
        The file the error messages name.
    where : str
        What holds the data, for the messages.
    etype : str
        The stored element type as the header names it, for the messages.

    Returns
    -------
    ndarray
        The (Z, Y, X) volume, int16 or float32.

    Raises
    ------
    CorruptFileError
        The data is shorter or longer than the header says.
    InvalidScanError
        NaN or Inf voxels, or integers that fit neither int16 nor exactly float32.
    """
    out = to_ct_dtype(read_stored(src, dims_zyx, stored, path, where), path, etype)
    check_finite(out, path, etype)
    return out


def to_ct_dtype(arr: NDArray[Any], path: Path, etype: str) -> NDArray[Any]:
    """Convert voxels to ctflow's CT dtype: int16 when integers fit, else float32.

    int16 and float32 arrays are returned as they are (no copy); other integers become int16
    when every value fits, else float32 when that is exact (``|v| <= 2**24``); floats become
    float32.

    Parameters
    ----------
    arr : ndarray
        The stored voxels (native byte order).
    path : Path
        The file the error messages name.
    etype : str
        The stored element type as the header names it, for the messages.

    Returns
    -------
    ndarray
        int16 or float32.

    Raises
    ------
    InvalidScanError
        Integers that fit neither int16 nor exactly float32.
    UnsupportedFormatError
        Another kind of data (complex, ...).

    Examples
    --------
    >>> to_ct_dtype(np.array([[[0, 40000]]], np.int32), Path("x.mhd"), "MET_INT").dtype
    dtype('float32')
    """
    if arr.dtype == np.int16 or arr.dtype == np.float32:
        return arr
    if arr.dtype.kind in "iub":
        if arr.dtype.itemsize == 1:
            return arr.astype(np.int16)
        if arr.size == 0:
            return arr.astype(np.int16)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= -32768 and hi <= 32767:
            return arr.astype(np.int16)
        if max(abs(lo), abs(hi)) <= _EXACT_FLOAT32_INT:
            return arr.astype(np.float32)
        raise InvalidScanError(
            f"{path}: {etype} values {lo}..{hi} fit neither int16 nor exactly float32 "
            f"(|value| <= {_EXACT_FLOAT32_INT})"
        )
    if arr.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            return arr.astype(np.float32)
    raise UnsupportedFormatError(f"{path}: unsupported voxel type {arr.dtype} ({etype})")
