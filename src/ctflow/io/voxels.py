"""Voxel input shared by the native MetaImage, NIfTI and NRRD readers.

A reader parses its header, then hands a :class:`VoxelSource` (a plain file,
:class:`FileSource`, or a zlib/gzip stream, :class:`ZlibSource`) to :func:`read_voxels`, which
fills a preallocated numpy array straight from the file (``readinto`` and zlib both release the
GIL, so scans load in parallel on threads) and converts it to ctflow's CT dtype
(:func:`to_ct_dtype`): int16 when integer values fit, else float32 when exact; NaN and Inf are
refused (:func:`check_finite`). Size limits (:data:`MAX_VOXELS_BYTES`,
:data:`HEADER_MAX_BYTES`) stop a corrupt or hostile header before anything is allocated.

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

import zlib
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import CorruptFileError, InvalidScanError, UnsupportedFormatError

__all__ = [
    "HEADER_MAX_BYTES",
    "MAX_VOXELS_BYTES",
    "FileSource",
    "VoxelSource",
    "ZlibSource",
    "check_finite",
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
        The file is missing, a folder or unreadable (the message names it).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "h.mhd"
    >>> _ = p.write_bytes(b"NDims = 3\n")
    >>> read_header_bytes(p, "MetaImage header file", "MetaImage header")
    (b'NDims = 3\n', False)
    """
    try:
        with open(path, "rb") as fh:
            buf = fh.read(HEADER_MAX_BYTES)
            more = bool(fh.read(1))
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorruptFileError(f"{path}: is a folder, not a {file_kind}") from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read the {header_kind} ({exc})") from exc
    return buf, more


class VoxelSource(Protocol):
    """Where voxel bytes come from: a plain file or a compressed stream (the interface)."""

    def fill(self, mv: memoryview) -> int:
        """Write bytes into ``mv``; return how many (fewer than ``len(mv)`` only at the end)."""
        ...

    def finish(self) -> None:
        """Check that the data ended where the header said (compressed streams)."""
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


class ZlibSource:
    """zlib or gzip stream inflated chunk by chunk into the caller's buffers.

    ``zlib`` inflates with the GIL released, so several scans decompress in parallel on threads.
    With ``multi_member=True`` concatenated gzip members are read as one stream (as ``gzip``
    and zlib's ``gzread`` do).

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
        self.left = n_in
        self.path = path
        self.data_path = data_path
        self.multi_member = multi_member
        self.what = what
        self.z = zlib.decompressobj(47)  # 32 + 15: zlib or gzip header, auto-detected
        self.tail = b""

    def _read_raw(self) -> bytes:
        """Read the next compressed bytes from the file (b"" when ``n_in`` are used up)."""
        if self.left <= 0:
            return b""
        data = self.fh.read(min(_IO_CHUNK, self.left))
        self.left -= len(data)
        if not data:
            self.left = 0
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
        pos = 0
        while pos < len(mv):
            data = self._next_input()
            if not data and self.z.eof:
                break
            out = self._inflate(data, len(mv) - pos)  # b"" drains output zlib still holds
            if not data and not out:
                break
            mv[pos : pos + len(out)] = out
            pos += len(out)
        return pos

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
        ``stored.itemsize``.
    """
    native = stored.newbyteorder("=")
    swap = stored.byteorder not in ("=", "|") and stored != native
    n_bytes = int(np.prod(dims_zyx)) * stored.itemsize
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


def check_finite(out: NDArray[Any], path: Path, etype: str) -> None:
    """Refuse a float volume holding NaN or Inf.

    Parameters
    ----------
    out : ndarray
        The volume (anything but float passes).
    path : Path
        The file the error message names.
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
