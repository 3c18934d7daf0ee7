"""Voxel input shared by the native MetaImage, NIfTI and NRRD readers.

A reader parses its header, then hands a :class:`~ctflow.io.voxel_sources.VoxelSource` (a
plain file, :class:`~ctflow.io.voxel_sources.FileSource`, or a zlib/gzip stream,
:class:`~ctflow.io.voxel_sources.ZlibSource`) to :func:`read_voxels`, which fills a
preallocated numpy array straight from the file (``readinto`` and zlib both release the GIL,
so scans load in parallel on threads) and converts it to ctflow's CT dtype
(:func:`to_ct_dtype`): int16 when integer values fit, else float32 when exact; NaN and Inf are
refused (:func:`check_finite`). Stored types of another size than the result are converted slab
by slab as they are read, so a read holds one volume (the result) plus a slab, never the stored
volume and the result side by side; uint16 whose values fit int16 becomes an int16 view of the
same memory. Size limits (:data:`MAX_VOXELS_BYTES`, read at call time through
:func:`max_voxels_bytes`, and :data:`~ctflow.io.files.HEADER_MAX_BYTES`) stop a corrupt or
hostile header before anything is allocated.

The sources live in :mod:`ctflow.io.voxel_sources` and the checked opening of files (paths,
regular files only, data files in the header's folder) in :mod:`ctflow.io.files`; their names
stay importable from here.

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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import CorruptFileError, InvalidScanError, UnsupportedFormatError
from ctflow.io.files import (
    HEADER_MAX_BYTES,
    as_source_path,
    check_data_file,
    open_regular,
    read_header_bytes,
)
from ctflow.io.voxel_sources import INFLATE_IN, INFLATE_OUT, FileSource, VoxelSource, ZlibSource

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
    "max_voxels_bytes",
    "open_regular",
    "read_header_bytes",
    "read_stored",
    "read_voxels",
    "skip_bytes",
    "to_ct_dtype",
]


#: Largest volume (bytes) a header may claim; larger claims are refused before anything is
#: allocated (a corrupt or hostile header cannot exhaust memory). The one size cap of ctflow:
#: the MetaImage, NIfTI, NRRD and SimpleITK readers (voxels as stored), the DICOM series reader
#: (int16 voxels), the DICOM SEG reader (its label grid) and dumps (each array) all read it at
#: call time through :func:`max_voxels_bytes`. Set ``ctflow.io.voxels.MAX_VOXELS_BYTES`` to
#: change it.
MAX_VOXELS_BYTES = 4 * 1024**3

_EXACT_FLOAT32_INT = 2**24  # integers up to this magnitude are exact in float32
_IO_CHUNK = 16 * 1024 * 1024  # bytes per read/compress step for streamed (converted) data
_FINITE_CHUNK = 1024 * 1024  # bytes of floats checked for NaN/Inf at a time (no volume-size temp)


def max_voxels_bytes() -> int:
    """Return the size cap as it is now: ``ctflow.io.voxels.MAX_VOXELS_BYTES``.

    Every reader and dumps call this when they check a size, so a program changes the cap by
    setting ``ctflow.io.voxels.MAX_VOXELS_BYTES`` at any time, whatever was imported before.

    Examples
    --------
    >>> import ctflow.io.voxels as voxels
    >>> voxels.max_voxels_bytes() == voxels.MAX_VOXELS_BYTES == 4 * 1024**3
    True
    """
    return int(MAX_VOXELS_BYTES)


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
        return _read_floats(src, dims_zyx, stored, path, where)
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


def _slabs(
    src: VoxelSource,
    dims_zyx: tuple[int, int, int],
    stored: np.dtype[Any],
    path: Path,
    where: str,
) -> Iterator[tuple[int, int, NDArray[Any]]]:
    """Yield the stored voxels slab by slab: ``(z0, z1, slab)``, native byte order.

    The slabs (about :data:`_IO_CHUNK` bytes of whole planes) share one buffer: each is valid
    until the next is asked for. The source is finished (:meth:`VoxelSource.finish`) after the
    last one; the caller must exhaust the iterator.
    """
    native = stored.newbyteorder("=")
    swap = stored.byteorder not in ("=", "|") and stored != native
    n_bytes = dims_zyx[0] * dims_zyx[1] * dims_zyx[2] * stored.itemsize
    src.check_claim(n_bytes, path, where)
    plane = max(1, dims_zyx[1] * dims_zyx[2] * stored.itemsize)
    z_step = max(1, _IO_CHUNK // plane)
    buf = np.empty((min(z_step, dims_zyx[0]), dims_zyx[1], dims_zyx[2]), stored)
    done = 0
    for z0 in range(0, dims_zyx[0], z_step):
        z1 = min(z0 + z_step, dims_zyx[0])
        part = buf[: z1 - z0]
        mv = part.data.cast("B")
        got = src.fill(mv)
        if got != len(mv):
            raise CorruptFileError(
                f"{path}: {where} is truncated: expected {n_bytes} voxel bytes, got {done + got}"
            )
        done += got
        yield z0, z1, (part.byteswap(inplace=True).view(native) if swap else part)
    src.finish()


def _read_floats(
    src: VoxelSource,
    dims_zyx: tuple[int, int, int],
    stored: np.dtype[Any],
    path: Path,
    where: str,
) -> NDArray[Any]:
    """Read floats of another size (float64, float16) into float32, slab by slab."""
    out = memory.empty(dims_zyx, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for z0, z1, part in _slabs(src, dims_zyx, stored, path, where):
            out[z0:z1] = part
    return out


def _read_ints(
    src: VoxelSource,
    dims_zyx: tuple[int, int, int],
    stored: np.dtype[Any],
    path: Path,
    where: str,
    etype: str,
) -> NDArray[Any]:
    """Read integers of another size than int16 into int16, slab by slab (float32 if need be).

    The result is int16 while every value read fits; the first slab that does not turns it
    into float32 (the planes already read are widened, then int16 is dropped). Values beyond
    float32's exact integers are refused once all the data is read (a truncated file is named
    as such first), as :func:`to_ct_dtype` does.
    """
    out: NDArray[Any] | None = memory.empty(dims_zyx, np.int16)
    wide: NDArray[Any] | None = None  # float32, once a value leaves int16
    lo = hi = 0
    seen = False
    for z0, z1, part in _slabs(src, dims_zyx, stored, path, where):
        if part.dtype.itemsize == 1:  # bool, uint8, int8: always int16
            assert out is not None
            out[z0:z1] = part
            continue
        p_lo, p_hi = int(part.min()), int(part.max())
        lo, hi = (min(lo, p_lo), max(hi, p_hi)) if seen else (p_lo, p_hi)
        seen = True
        if out is not None and (p_lo < -32768 or p_hi > 32767):
            wide = memory.empty(dims_zyx, np.float32)
            step = max(1, _IO_CHUNK // max(1, dims_zyx[1] * dims_zyx[2] * 4))
            for a in range(0, z0, step):
                wide[a : min(a + step, z0)] = out[a : min(a + step, z0)]
            out = None
        if wide is not None:
            if max(abs(lo), abs(hi)) <= _EXACT_FLOAT32_INT:  # else refused below
                wide[z0:z1] = part
        else:
            assert out is not None
            out[z0:z1] = part
    if seen and max(abs(lo), abs(hi)) > _EXACT_FLOAT32_INT:
        raise InvalidScanError(
            f"{path}: {etype} values {lo}..{hi} fit neither int16 nor exactly float32 "
            f"(|value| <= {_EXACT_FLOAT32_INT})"
        )
    result = wide if wide is not None else out
    assert result is not None
    return result


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
    if out.dtype.kind == "f" and not _all_finite(out):
        bad = _count_non_finite(out)
        raise InvalidScanError(
            f"{path}: {etype} volume holds {bad} NaN or Inf voxel(s) (or values beyond float32); "
            "voxels must be finite"
        )


def _pieces(arr: NDArray[Any]) -> Iterator[NDArray[Any]]:
    """Yield ``arr`` in pieces of about :data:`_FINITE_CHUNK` bytes (views, along axis 0)."""
    if arr.ndim == 0 or arr.nbytes <= _FINITE_CHUNK:
        yield arr
        return
    row = max(1, arr[0].nbytes)
    step = max(1, _FINITE_CHUNK // row)
    for a in range(0, arr.shape[0], step):
        yield arr[a : a + step]


def _all_finite(arr: NDArray[Any]) -> bool:
    """Tell whether a float array holds no NaN or Inf, without a volume-sized temporary.

    Pieces of about a megabyte stay in the CPU cache; about 10 ms for 256**3 float32.
    """
    if arr.dtype.kind != "f":
        return True
    buf: NDArray[np.bool_] | None = None
    for piece in _pieces(arr):
        if buf is None or buf.shape != piece.shape:
            buf = np.empty(piece.shape, np.bool_)
        np.isfinite(piece, out=buf)
        if not buf.all():
            return False
    return True


def _count_non_finite(arr: NDArray[Any]) -> int:
    """Count the NaN and Inf values of a float array (piece by piece)."""
    return sum(int(piece.size - np.count_nonzero(np.isfinite(piece))) for piece in _pieces(arr))


def read_voxels(
    src: VoxelSource,
    dims_zyx: tuple[int, int, int],
    stored: np.dtype[Any],
    path: Path,
    where: str,
    etype: str,
) -> NDArray[Any]:
    """Read the voxels and convert them to ctflow's CT dtype, refusing NaN and Inf.

    :func:`read_stored`, then :func:`to_ct_dtype` and :func:`check_finite`, without a second
    volume: stored types of another size than the result (uint8, int32, float64, ...) are
    converted slab by slab into the result as they are read; uint16 is read whole and becomes
    an int16 view of it when its values fit.

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
    native = stored.newbyteorder("=")
    if native.kind in "iub" and native.itemsize != 2:
        out = _read_ints(src, dims_zyx, stored, path, where, etype)  # one volume + a slab
    elif native.kind == "f" and native.itemsize != 4:
        out = _read_floats(src, dims_zyx, stored, path, where)
    else:  # int16, float32: read in place; uint16: a view when it fits int16
        out = to_ct_dtype(read_stored(src, dims_zyx, stored, path, where), path, etype)
    check_finite(out, path, etype)
    return out


def to_ct_dtype(arr: NDArray[Any], path: Path, etype: str) -> NDArray[Any]:
    """Convert voxels to ctflow's CT dtype: int16 when integers fit, else float32.

    int16 and float32 arrays are returned as they are (no copy), and uint16 whose values all
    fit int16 as an int16 view of the same memory; other integers become int16 when every value
    fits, else float32 when that is exact (``|v| <= 2**24``); floats become float32.

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
            if arr.dtype.itemsize == 2 and arr.dtype.isnative:  # uint16: same bytes
                return arr.view(np.int16)
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
