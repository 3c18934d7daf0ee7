"""Parse the fixed binary header of a NIfTI-1 or NIfTI-2 file, plain or gzip-compressed.

The version and byte order are recognised from ``sizeof_hdr`` (348 or 540, either endianness)
and gzip from the content (not the name); Analyze 7.5 files and ``.hdr``/``.img`` pairs are
refused by their magic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ctflow.errors import CorruptFileError, UnsupportedFormatError
from ctflow.io.voxels import FileSource, VoxelSource, ZlibSource

__all__ = ["NIFTI_DATATYPES"]


#: NIfTI datatype code -> numpy type code, for the scalar types ctflow reads.
NIFTI_DATATYPES: dict[int, str] = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
    1024: "i8",
    1280: "u8",
}
_OTHER_DATATYPES = {
    1: "binary",
    32: "complex64",
    128: "RGB24",
    1536: "float128",
    1792: "complex128",
    2048: "complex256",
    2304: "RGBA32",
}


_N1 = np.dtype(
    [
        ("sizeof_hdr", "i4"),
        ("data_type", "S10"),
        ("db_name", "S18"),
        ("extents", "i4"),
        ("session_error", "i2"),
        ("regular", "S1"),
        ("dim_info", "u1"),
        ("dim", "i2", (8,)),
        ("intent_p", "f4", (3,)),
        ("intent_code", "i2"),
        ("datatype", "i2"),
        ("bitpix", "i2"),
        ("slice_start", "i2"),
        ("pixdim", "f4", (8,)),
        ("vox_offset", "f4"),
        ("scl_slope", "f4"),
        ("scl_inter", "f4"),
        ("slice_end", "i2"),
        ("slice_code", "u1"),
        ("xyzt_units", "u1"),
        ("cal_max", "f4"),
        ("cal_min", "f4"),
        ("slice_duration", "f4"),
        ("toffset", "f4"),
        ("glmax", "i4"),
        ("glmin", "i4"),
        ("descrip", "S80"),
        ("aux_file", "S24"),
        ("qform_code", "i2"),
        ("sform_code", "i2"),
        ("quatern", "f4", (3,)),
        ("qoffset", "f4", (3,)),
        ("srow", "f4", (3, 4)),
        ("intent_name", "S16"),
        ("magic", "S4"),
    ]
)
_N2 = np.dtype(
    [
        ("sizeof_hdr", "i4"),
        ("magic", "S8"),
        ("datatype", "i2"),
        ("bitpix", "i2"),
        ("dim", "i8", (8,)),
        ("intent_p", "f8", (3,)),
        ("pixdim", "f8", (8,)),
        ("vox_offset", "i8"),
        ("scl_slope", "f8"),
        ("scl_inter", "f8"),
        ("cal_max", "f8"),
        ("cal_min", "f8"),
        ("slice_duration", "f8"),
        ("toffset", "f8"),
        ("slice_start", "i8"),
        ("slice_end", "i8"),
        ("descrip", "S80"),
        ("aux_file", "S24"),
        ("qform_code", "i4"),
        ("sform_code", "i4"),
        ("quatern", "f8", (3,)),
        ("qoffset", "f8", (3,)),
        ("srow", "f8", (3, 4)),
        ("slice_code", "i4"),
        ("xyzt_units", "i4"),
        ("intent_code", "i4"),
        ("intent_name", "S16"),
        ("dim_info", "u1"),
        ("unused_str", "S15"),
    ]
)
assert _N1.itemsize == 348 and _N2.itemsize == 540

_VECTOR_INTENTS = {1004: "GENMATRIX", 1005: "SYMMATRIX", 1007: "VECTOR"}


@dataclass
class _Header:
    """The fields of one NIfTI header (native byte order), its version, byte order and size."""

    version: int  # 1 or 2
    fields: Any  # numpy record (native byte order)
    byteorder: str  # "<" or ">"
    size: int  # 348 or 540

    def __getitem__(self, key: str) -> Any:
        """Return a header field by name (``h["dim"]``)."""
        return self.fields[key]


def _open_stream(fh: BinaryIO, path: Path, file_size: int) -> tuple[VoxelSource, bool]:
    """Return a source of the file's bytes (inflated when it is gzip) and whether it is gzip."""
    head = fh.read(2)
    fh.seek(0)
    if head == b"\x1f\x8b":
        what = "the header's dim x datatype"
        return ZlibSource(fh, file_size, path, path, multi_member=True, what=what), True
    return FileSource(fh), False


def _read_header(src: VoxelSource, path: Path, gz: bool) -> _Header:
    """Read and check the NIfTI-1 or NIfTI-2 header at the start of ``src``."""
    first = bytearray(4)
    if src.fill(memoryview(first)) != 4:
        raise CorruptFileError(f"{path}: not a NIfTI file (shorter than a NIfTI header)")
    versions = {348: (1, _N1), 540: (2, _N2)}
    for order in ("<", ">"):
        size = int(np.frombuffer(bytes(first), np.dtype(f"{order}i4"))[0])
        if size in versions:
            break
    else:
        kind = "gzip file" if gz else "file"
        raise CorruptFileError(
            f"{path}: not a NIfTI {kind} (sizeof_hdr must be 348 or 540; the first 4 bytes are "
            f"{bytes(first)!r})"
        )
    version, dtype = versions[size]
    raw = bytearray(size)
    raw[:4] = first
    if src.fill(memoryview(raw)[4:]) != size - 4:
        raise CorruptFileError(f"{path}: truncated NIfTI-{version} header (file too short)")
    rec = np.frombuffer(bytes(raw), dtype.newbyteorder(order))[0]
    fields = np.array(rec, dtype=rec.dtype).astype(dtype)[()]  # native byte order
    magic = bytes(raw[344:348]) if version == 1 else bytes(raw[4:12])
    if version == 1:
        if magic == b"ni1\x00":
            raise UnsupportedFormatError(
                f"{path}: a NIfTI-1 .hdr/.img pair header (magic 'ni1'); ctflow reads single-"
                "file .nii/.nii.gz (use fmt='sitk' for pairs)"
            )
        if magic != b"n+1\x00":
            raise UnsupportedFormatError(
                f"{path}: no NIfTI magic 'n+1' (got {magic!r}): an Analyze 7.5 file or not a "
                "NIfTI file; ctflow reads NIfTI-1/2 (use fmt='sitk' for Analyze)"
            )
    elif not magic.startswith(b"n+2\x00"):
        raise UnsupportedFormatError(
            f"{path}: no NIfTI-2 magic 'n+2' (got {magic!r}); ctflow reads single-file NIfTI"
        )
    return _Header(version, fields, order, size)


def _fixed(x: float) -> float:
    """Return ``x``, or 0 when it is not finite (niftilib's ``FIXED_FLOAT``)."""
    return x if math.isfinite(x) else 0.0
