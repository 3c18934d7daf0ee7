"""MetaImage (``.mhd`` + ``.raw``/``.zraw``, single-file ``.mha``) reader and writer in pure numpy.

MetaImage is ITK's own format and the one LUNA16 ships. A file is a short text header of
``Key = Value`` lines followed by (``ElementDataFile = LOCAL``, ``.mha``) or pointing to
(``.mhd``) the raw voxel bytes, x fastest, then y, then z. This module reads and writes it
without SimpleITK: voxels go straight from the file into a preallocated numpy array
(``readinto`` / ``zlib`` both release the GIL, so scans load in parallel on threads).

Geometry
--------
ITK writes ``TransformMatrix`` as its direction matrix in *column-major* order (the 3 numbers of
voxel axis x first, then y, then z) and reads it back the same way, so SimpleITK's row-major
direction tuple is the transpose of the header's numbers. ``ElementSpacing``, ``Offset`` and
``DimSize`` are (x, y, z); ctflow's :class:`~ctflow.geometry.Geometry` is (z, y, x). The
direction, spacing and origin of a scan read here are exactly what SimpleITK reports for the
same file, reordered to (z, y, x).

Voxel types
-----------
Integer files become int16 when all values fit (``MET_SHORT`` little-endian is read in place,
no conversion), otherwise float32 when that is exact (|v| <= 2**24), otherwise
:class:`~ctflow.errors.InvalidScanError`. Float files become float32; NaN or Inf voxels are
refused. The writer stores any of int8/16/32/64, uint8/16/32/64, float32/64 and bool (as
``MET_UCHAR``) little-endian, with the keys in the order ITK writes them, atomically (temporary
names in the target folder, then :func:`os.replace`).

Examples
--------
>>> import numpy as np, tempfile
>>> from ctflow.geometry import Geometry
>>> g = Geometry((2.5, 0.7, 0.7), (-300.0, -180.0, -170.0))
>>> p = write_metaimage(f"{tempfile.mkdtemp()}/scan.mhd", np.zeros((3, 4, 5), np.int16), g)
>>> scan = read_metaimage(p)
>>> scan.shape, scan.images.dtype.name, scan.geometry.origin.tolist()
((3, 4, 5), 'int16', [-300.0, -180.0, -170.0])
"""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry, direction_from_sitk, direction_to_sitk
from ctflow.io.scan import Scan

__all__ = [
    "HEADER_MAX_BYTES",
    "MAX_VOXELS_BYTES",
    "MET_TYPES",
    "read_metaimage",
    "write_metaimage",
]

#: Largest voxel payload (bytes, as stored) a header may claim; larger claims are refused
#: before anything is allocated (a corrupt or hostile header cannot exhaust memory).
MAX_VOXELS_BYTES = 4 * 1024**3

#: A MetaImage header longer than this is taken for a non-MetaImage file.
HEADER_MAX_BYTES = 1024 * 1024

#: MetaIO element types and their numpy codes (sizes as in MetaIO's ``MET_ValueTypeSize``).
MET_TYPES: dict[str, str] = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG": "i4",
    "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}

# numpy code -> the MET type ITK writes for it
_WRITE_TYPES: dict[str, str] = {
    "i1": "MET_CHAR",
    "u1": "MET_UCHAR",
    "i2": "MET_SHORT",
    "u2": "MET_USHORT",
    "i4": "MET_INT",
    "u4": "MET_UINT",
    "i8": "MET_LONG_LONG",
    "u8": "MET_ULONG_LONG",
    "f4": "MET_FLOAT",
    "f8": "MET_DOUBLE",
}

_KNOWN_KEYS = {
    "objecttype",
    "objectsubtype",
    "ndims",
    "dimsize",
    "elementspacing",
    "elementsize",
    "offset",
    "origin",
    "position",
    "transformmatrix",
    "rotation",
    "orientation",
    "centerofrotation",
    "anatomicalorientation",
    "elementtype",
    "elementdatafile",
    "binarydata",
    "binarydatabyteordermsb",
    "elementbyteordermsb",
    "compresseddata",
    "compresseddatasize",
    "headersize",
    "elementnumberofchannels",
}

_EXACT_FLOAT32_INT = 2**24  # integers up to this magnitude are exact in float32
_IO_CHUNK = 16 * 1024 * 1024  # bytes per read/compress step for streamed (converted) data
_COMPRESSION_LEVEL = 1


# -- header parsing ----------------------------------------------------------------------------
class _Header:
    """Parsed ``Key = Value`` pairs (keys case-insensitive) of one MetaImage header."""

    def __init__(self, path: Path, fields: dict[str, tuple[str, str]], data_offset: int) -> None:
        self.path = path
        self.fields = fields  # lower-case key -> (key as written, value)
        self.data_offset = data_offset  # first byte after the header

    def get(self, *keys: str) -> tuple[str, str] | None:
        for key in keys:
            if key.lower() in self.fields:
                return self.fields[key.lower()]
        return None

    def require(self, *keys: str) -> tuple[str, str]:
        found = self.get(*keys)
        if found is None:
            names = " or ".join(keys)
            raise InvalidScanError(f"{self.path}: MetaImage header has no {names} line")
        return found

    def ints(self, key: str, value: str, n: int) -> list[int]:
        try:
            vals = [int(v) for v in value.split()]
        except ValueError:
            vals = []
        if len(vals) != n:
            raise InvalidScanError(f"{self.path}: {key} must be {n} integers; got {value!r}")
        return vals

    def floats(self, key: str, value: str, n: int) -> NDArray[np.float64]:
        try:
            arr = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            arr = np.empty(0)
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise InvalidScanError(f"{self.path}: {key} must be {n} finite numbers; got {value!r}")
        return arr

    def flag(self, keys: tuple[str, ...], default: bool) -> bool:
        found = self.get(*keys)
        if found is None:
            return default
        key, value = found
        v = value.strip().lower()
        if v in ("true", "1", "yes"):
            return True
        if v in ("false", "0", "no"):
            return False
        raise InvalidScanError(f"{self.path}: {key} must be True or False; got {value!r}")


def read_header_bytes(path: Path, file_kind: str, header_kind: str) -> tuple[bytes, bool]:
    """The first :data:`HEADER_MAX_BYTES` of a text-header file, and whether more follow.

    Errors name the file: missing, a folder (``not a <file_kind>``) or unreadable
    (``cannot read the <header_kind>``).
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


def _read_header(path: Path) -> _Header:
    buf, more = read_header_bytes(path, "MetaImage header file", "MetaImage header")
    if not buf:
        raise CorruptFileError(f"{path}: empty file; expected a MetaImage text header")
    fields: dict[str, tuple[str, str]] = {}
    pos = 0
    lineno = 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        end = len(buf) if nl < 0 else nl + 1
        raw = buf[pos:end]
        pos = end
        lineno += 1
        if nl < 0 and more:
            raise CorruptFileError(
                f"{path}: not a MetaImage file: no ElementDataFile line in the first "
                f"{HEADER_MAX_BYTES} bytes"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        line = line.rstrip("\r\n")
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in line):
            raise CorruptFileError(
                f"{path}: not a MetaImage text header (line {lineno} holds binary bytes)"
            )
        if not line.strip():
            continue
        if "=" not in line:
            raise CorruptFileError(
                f"{path}: not a MetaImage header: line {lineno} is not 'Key = Value'; "
                f"got {line[:60]!r}"
            )
        key, value = (s.strip() for s in line.split("=", 1))
        if not key:
            raise CorruptFileError(f"{path}: line {lineno} of the MetaImage header has no key")
        fields[key.lower()] = (key, value)
        if key.lower() == "elementdatafile":
            return _Header(path, fields, end)
    if not _KNOWN_KEYS.intersection(fields):
        raise UnsupportedFormatError(
            f"{path}: not a MetaImage header (none of NDims, DimSize, ElementType, "
            "ElementDataFile ... found)"
        )
    raise InvalidScanError(f"{path}: MetaImage header has no ElementDataFile line")


# -- voxel data sources (shared by the MetaImage, NIfTI and NRRD readers) ----------------------
class VoxelSource(Protocol):
    """Where voxel bytes come from: a plain file or a compressed stream."""

    def fill(self, mv: memoryview) -> int:
        """Write bytes into ``mv``; return how many (fewer than ``len(mv)`` only at the end)."""
        ...

    def finish(self) -> None:
        """Check that the data ended where the header said (compressed streams)."""
        ...


class FileSource:
    """Raw bytes read straight into the caller's buffers (``readinto``, GIL released)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def fill(self, mv: memoryview) -> int:
        pos = 0
        while pos < len(mv):
            n = self.fh.readinto(mv[pos:])  # type: ignore[attr-defined]
            if not n:
                break
            pos += n
        return pos

    def finish(self) -> None:
        return None


class ZlibSource:
    """zlib or gzip stream inflated chunk by chunk into the caller's buffers.

    ``zlib`` inflates with the GIL released, so several scans decompress in parallel on threads.
    With ``multi_member=True`` concatenated gzip members are read as one stream (as ``gzip``
    and zlib's ``gzread`` do).
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
        if self.left <= 0:
            return b""
        data = self.fh.read(min(_IO_CHUNK, self.left))
        self.left -= len(data)
        if not data:
            self.left = 0
        return data

    def _next_input(self) -> bytes:
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
    """Read and drop ``n`` bytes from ``src`` (a gap before the voxels)."""
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


# -- reading -----------------------------------------------------------------------------------
def read_stored(
    src: VoxelSource,
    dims_zyx: tuple[int, int, int],
    stored: np.dtype[Any],
    path: Path,
    where: str,
) -> NDArray[Any]:
    """The stored voxels in native byte order (float64 files come back as float32, slab-wise).

    Raises :class:`~ctflow.errors.CorruptFileError` when the data is shorter (or, for
    compressed streams, longer) than ``dims_zyx`` x ``stored.itemsize``.
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
    """Refuse float volumes holding NaN or Inf (typed error naming the file)."""
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
    """Stored voxels converted to ctflow's CT dtype (:func:`to_ct_dtype`), finite-checked."""
    out = to_ct_dtype(read_stored(src, dims_zyx, stored, path, where), path, etype)
    check_finite(out, path, etype)
    return out


def to_ct_dtype(arr: NDArray[Any], path: Path, etype: str) -> NDArray[Any]:
    """int16 when integer values fit (no copy for int16), else float32 when exact; float32.

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


def read_metaimage(path: str | os.PathLike[str]) -> Scan:
    """Read a MetaImage scan (``.mhd`` + ``.raw``/``.zraw``, or single-file ``.mha``).

    Parameters
    ----------
    path : path
        The header file (``.mhd``) or the single-file image (``.mha``).

    Returns
    -------
    Scan
        ``images`` (Z, Y, X): int16 for integer data that fits (``MET_SHORT`` without a
        copy), float32 otherwise; ``geometry`` in (z, y, x) LPS mm exactly as SimpleITK reports
        it for the file; ``source`` the path; ``info`` with ``format``, ``element_type``,
        ``data_file``, ``compressed``, ``byte_order_msb`` and ``anatomical_orientation``.

    Raises
    ------
    CorruptFileError
        Missing file or data file, not a text header, data shorter or longer than the header
        says, corrupt zlib stream.
    InvalidScanError
        Missing header keys, NDims != 3, sizes <= 0, bad spacing/origin/direction, NaN/Inf
        voxels, a claimed volume larger than :data:`MAX_VOXELS_BYTES`.
    UnsupportedFormatError
        Unknown ``ElementType``, several channels, ASCII data, slice-list data files, or a
        text file that is not a MetaImage header.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> p = write_metaimage(f"{tempfile.mkdtemp()}/a.mha", arr, Geometry((2.0, 1.0, 0.5)))
    >>> scan = read_metaimage(p)
    >>> bool((scan.images == arr).all()), scan.geometry.spacing.tolist()
    (True, [2.0, 1.0, 0.5])
    """
    p = Path(path)
    hdr = _read_header(p)

    obj = hdr.get("ObjectType")
    if obj is not None and obj[1].strip().lower() != "image":
        raise UnsupportedFormatError(f"{p}: ObjectType must be Image for a scan; got {obj[1]!r}")
    key, value = hdr.require("NDims")
    ndims = hdr.ints(key, value, 1)[0]
    if ndims != 3:
        raise InvalidScanError(f"{p}: NDims must be 3 (a 3-D volume); got {ndims}")
    key, value = hdr.require("DimSize")
    dims_xyz = hdr.ints(key, value, 3)
    if min(dims_xyz) <= 0:
        raise InvalidScanError(f"{p}: DimSize must be 3 positive integers (x y z); got {value!r}")
    key, value = hdr.require("ElementSpacing", "ElementSize")
    spacing_xyz = hdr.floats(key, value, 3)
    if np.any(spacing_xyz <= 0):
        raise InvalidScanError(
            f"{p}: {key} must be 3 positive numbers (x y z) in mm; got {value!r}"
        )
    found = hdr.get("Offset", "Origin", "Position")
    origin_xyz = np.zeros(3) if found is None else hdr.floats(found[0], found[1], 3)
    found = hdr.get("TransformMatrix", "Rotation", "Orientation")
    if found is None:
        direction = np.eye(3)
    else:
        cols = hdr.floats(found[0], found[1], 9).reshape(3, 3)
        # ITK writes column j (world vector of voxel axis j) as the j-th triple
        direction = direction_from_sitk(tuple(cols.T.ravel()))

    key, value = hdr.require("ElementType")
    etype = value.strip().upper()
    if etype not in MET_TYPES:
        raise UnsupportedFormatError(
            f"{p}: ElementType must be one of {', '.join(MET_TYPES)}; got {value!r}"
        )
    found = hdr.get("ElementNumberOfChannels")
    if found is not None and hdr.ints(found[0], found[1], 1)[0] != 1:
        raise UnsupportedFormatError(
            f"{p}: ElementNumberOfChannels must be 1 (a scalar CT volume); got {found[1]!r}"
        )
    if not hdr.flag(("BinaryData",), True):
        raise UnsupportedFormatError(f"{p}: BinaryData = False (ASCII voxels) is not supported")
    msb = hdr.flag(("BinaryDataByteOrderMSB", "ElementByteOrderMSB"), False)
    compressed = hdr.flag(("CompressedData",), False)
    comp_size: int | None = None
    found = hdr.get("CompressedDataSize")
    if compressed and found is not None:
        comp_size = hdr.ints(found[0], found[1], 1)[0]
        if comp_size <= 0:
            raise InvalidScanError(f"{p}: CompressedDataSize must be positive; got {found[1]!r}")
    header_size = 0
    found = hdr.get("HeaderSize")
    if found is not None:
        header_size = hdr.ints(found[0], found[1], 1)[0]
        if header_size < -1:
            raise InvalidScanError(f"{p}: HeaderSize must be -1 or >= 0; got {found[1]!r}")
    anatomical = hdr.get("AnatomicalOrientation")

    try:
        geometry = Geometry(spacing_xyz[::-1], origin_xyz[::-1], direction)
    except InvalidScanError as exc:
        raise InvalidScanError(f"{p}: {exc}") from None

    stored = np.dtype(MET_TYPES[etype]).newbyteorder(">" if msb else "<")
    dims_zyx = (dims_xyz[2], dims_xyz[1], dims_xyz[0])
    n_bytes = dims_xyz[0] * dims_xyz[1] * dims_xyz[2] * stored.itemsize
    limit = MAX_VOXELS_BYTES
    if n_bytes > limit:
        raise InvalidScanError(
            f"{p}: header claims {dims_xyz[0]}x{dims_xyz[1]}x{dims_xyz[2]} {etype} voxels = "
            f"{n_bytes} bytes; refusing volumes larger than MAX_VOXELS_BYTES = {limit}"
        )

    _, data_name = hdr.require("ElementDataFile")
    data_name = data_name.strip()
    if data_name.upper() == "LOCAL":
        data_path, start = p, hdr.data_offset
    else:
        if data_name.upper().startswith("LIST") or "%" in data_name or not data_name:
            raise UnsupportedFormatError(
                f"{p}: ElementDataFile must name one data file or LOCAL; got {data_name!r} "
                "(slice lists and file patterns are not supported)"
            )
        data_path = Path(data_name)
        if not data_path.is_absolute():
            data_path = p.parent / data_path
        start = 0
        try:
            exists = data_path.is_file()
        except (OSError, ValueError):
            exists = False
        if not exists:
            raise CorruptFileError(
                f"{p}: its data file {data_path} (ElementDataFile) does not exist"
            )
    where = "the data after the header" if data_path == p else f"data file {data_path.name}"
    try:
        file_size = data_path.stat().st_size
        if header_size > 0:
            start = header_size
        if compressed:
            avail = file_size - start
            n_in = avail if comp_size is None else comp_size
            if avail != n_in:
                raise CorruptFileError(
                    f"{p}: {where} holds {max(avail, 0)} compressed bytes but CompressedDataSize "
                    f"says {n_in} ({'truncated file' if avail < n_in else 'sizes disagree'})"
                )
        else:
            avail = file_size - start
            if header_size == -1:
                start = file_size - n_bytes
                ok = avail >= n_bytes
            else:
                ok = avail == n_bytes
            if not ok:
                what = "truncated file" if avail < n_bytes else "sizes disagree"
                raise CorruptFileError(
                    f"{p}: {where} holds {max(avail, 0)} bytes of voxel data but the header "
                    f"(DimSize {' '.join(map(str, dims_xyz))}, {etype}) needs {n_bytes}: "
                    f"expected {n_bytes} bytes, got {max(avail, 0)} ({what})"
                )
        with open(data_path, "rb", buffering=0) as fh:
            fh.seek(start)
            src: VoxelSource
            if compressed:
                src = ZlibSource(fh, n_in, p, data_path, what="the header's DimSize x ElementType")
            else:
                src = FileSource(fh)
            images = read_voxels(src, dims_zyx, stored, p, where, etype)
    except CTFlowError:
        raise
    except MemoryError:
        raise InvalidScanError(f"{p}: not enough memory for {n_bytes} bytes of voxels") from None
    except OSError as exc:
        raise CorruptFileError(f"{p}: cannot read {where} ({exc})") from exc
    info: dict[str, Any] = {
        "format": "mhd",
        "reader": "ctflow.io.metaimage",
        "element_type": etype,
        "data_file": str(data_path),
        "compressed": compressed,
        "byte_order_msb": msb,
        "anatomical_orientation": None if anatomical is None else anatomical[1],
    }
    return Scan(images, geometry, str(path), info)


# -- writing -----------------------------------------------------------------------------------
def _fmt(values: Any) -> str:
    # ITK prints with 17 significant digits; "+ 0.0" turns -0.0 into 0
    return " ".join(f"{float(v) + 0.0:.17g}" for v in np.asarray(values, np.float64).ravel())


def _anatomical_orientation(direction_sitk: NDArray[np.float64]) -> str:
    """ITK's 3-letter code: for each voxel axis, the side it starts from (LPS world)."""
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    code = ""
    for j in range(3):
        col = direction_sitk[:, j]
        i = int(np.argmax(np.abs(col)))
        code += letters[i][0 if col[i] >= 0 else 1]
    return code


def _chunks(arr: NDArray[Any], le: np.dtype[Any]) -> Iterator[memoryview]:
    """Little-endian bytes of ``arr`` (C order) in slabs; no copy when already laid out so."""
    if arr.flags.c_contiguous and arr.dtype == le:
        yield arr.data.cast("B")
        return
    plane = max(1, arr.shape[1] * arr.shape[2] * le.itemsize)
    z_step = max(1, _IO_CHUNK // plane)
    for z0 in range(0, arr.shape[0], z_step):
        part = np.ascontiguousarray(arr[z0 : z0 + z_step], dtype=le)
        yield part.data.cast("B")


def _write_data(fh: BinaryIO, arr: NDArray[Any], le: np.dtype[Any], compress: bool) -> int:
    """Write the voxels (zlib-compressed when asked); return the number of bytes written."""
    n = 0
    if not compress:
        for mv in _chunks(arr, le):
            fh.write(mv)
            n += len(mv)
        return n
    comp = zlib.compressobj(_COMPRESSION_LEVEL)
    for mv in _chunks(arr, le):
        for k in range(0, len(mv), _IO_CHUNK):
            out = comp.compress(mv[k : k + _IO_CHUNK])
            fh.write(out)
            n += len(out)
    out = comp.flush()
    fh.write(out)
    return n + len(out)


def _header_text(
    shape_zyx: tuple[int, ...],
    geometry: Geometry,
    etype: str,
    data_file: str,
    compressed_size: int | None,
) -> str:
    d_sitk = np.asarray(direction_to_sitk(geometry.direction), np.float64).reshape(3, 3)
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compressed_size is not None}",
    ]
    if compressed_size is not None:
        lines.append(f"CompressedDataSize = {compressed_size}")
    lines += [
        f"TransformMatrix = {_fmt(d_sitk.T)}",
        f"Offset = {_fmt(geometry.origin[::-1])}",
        "CenterOfRotation = 0 0 0",
        f"AnatomicalOrientation = {_anatomical_orientation(d_sitk)}",
        f"ElementSpacing = {_fmt(geometry.spacing[::-1])}",
        f"DimSize = {shape_zyx[2]} {shape_zyx[1]} {shape_zyx[0]}",
        f"ElementType = {etype}",
        f"ElementDataFile = {data_file}",
    ]
    return "\n".join(lines) + "\n"


def write_metaimage(
    path: str | os.PathLike[str],
    images: NDArray[Any],
    geometry: Geometry,
    *,
    compress: bool = False,
) -> Path:
    """Write a (Z, Y, X) volume as MetaImage: ``.mhd`` + ``.raw``/``.zraw``, or one ``.mha``.

    The header has the keys in the order ITK writes them, numbers with 17 significant digits
    (round trips exactly), little-endian data. Files are first written under temporary names
    in the target folder and then renamed (data file first, header last), so a crash never
    leaves a header pointing at half-written data.

    Parameters
    ----------
    path : path
        Target ``*.mhd`` (data goes beside it as ``<stem>.raw``, or ``<stem>.zraw`` when
        compressed) or ``*.mha`` (single file, ``ElementDataFile = LOCAL``).
    images : ndarray (Z, Y, X)
        int8/16/32/64, uint8/16/32/64, float32/64 or bool (written as ``MET_UCHAR``).
    geometry : Geometry
        Spacing, origin and direction in (z, y, x).
    compress : bool
        zlib-compress the voxels (``CompressedData = True``), as SimpleITK's
        ``useCompression=True``.

    Returns
    -------
    pathlib.Path
        The header (``.mhd``) or image (``.mha``) path.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> d = tempfile.mkdtemp()
    >>> p = write_metaimage(f"{d}/s.mhd", np.ones((2, 3, 4), np.int16), Geometry((1, 1, 1)),
    ...                     compress=True)
    >>> sorted(f.name for f in p.parent.iterdir())
    ['s.mhd', 's.zraw']
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".mhd", ".mha"):
        raise InvalidParameterError(
            f"write_metaimage: path must end with .mhd or .mha; got {str(path)!r}"
        )
    if not isinstance(geometry, Geometry):
        raise InvalidParameterError(
            f"write_metaimage: geometry must be a ctflow Geometry; got {type(geometry).__name__}"
        )
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.size == 0:
        raise InvalidParameterError(
            f"write_metaimage: images must be a non-empty (Z, Y, X) array; got shape {arr.shape}"
        )
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    code = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    if code not in _WRITE_TYPES:
        raise InvalidParameterError(
            f"write_metaimage: images dtype must be one of int8/16/32/64, uint8/16/32/64, "
            f"float32/64 or bool; got {arr.dtype}"
        )
    etype = _WRITE_TYPES[code]
    le = np.dtype(code).newbyteorder("<")
    if not p.parent.is_dir():
        raise InvalidParameterError(f"write_metaimage: folder {p.parent} does not exist")

    token = uuid.uuid4().hex[:12]
    temps: list[Path] = []

    def temp_for(final: Path) -> Path:
        t = final.with_name(f".{final.name}.{token}.tmp")
        temps.append(t)
        return t

    try:
        if suffix == ".mhd":
            data_final = p.with_suffix(".zraw" if compress else ".raw")
            data_tmp = temp_for(data_final)
            with open(data_tmp, "wb") as fh:
                n = _write_data(fh, arr, le, compress)
            text = _header_text(
                arr.shape, geometry, etype, data_final.name, n if compress else None
            )
            hdr_tmp = temp_for(p)
            hdr_tmp.write_text(text, encoding="utf-8")
            os.replace(data_tmp, data_final)
            os.replace(hdr_tmp, p)
        else:
            out_tmp = temp_for(p)
            if compress:
                comp_tmp = temp_for(p.with_suffix(".zraw"))
                with open(comp_tmp, "w+b") as cf:
                    n = _write_data(cf, arr, le, True)
                    cf.seek(0)
                    with open(out_tmp, "wb") as fh:
                        fh.write(_header_text(arr.shape, geometry, etype, "LOCAL", n).encode())
                        while block := cf.read(_IO_CHUNK):
                            fh.write(block)
            else:
                with open(out_tmp, "wb") as fh:
                    fh.write(_header_text(arr.shape, geometry, etype, "LOCAL", None).encode())
                    _write_data(fh, arr, le, False)
            os.replace(out_tmp, p)
    finally:
        for t in temps:
            if t.exists():
                t.unlink()
    return p
