"""NIfTI (``.nii``, ``.nii.gz``) reader and writer in numpy, with the geometry ITK reads.

A NIfTI file is a fixed binary header (NIfTI-1: 348 bytes, NIfTI-2: 540 bytes), optional
extensions, then the voxels from byte ``vox_offset`` on, x fastest. ``.nii.gz`` is the same
bytes gzip-compressed (recognised by content, not by name). Voxels go straight from the file
into a preallocated numpy array (``readinto`` or zlib inflate, both with the GIL released), so
scans load in parallel on threads.

Geometry (what SimpleITK reports for the same file)
----------------------------------------------------
NIfTI stores RAS+ world coordinates; ctflow (like ITK and DICOM) uses LPS, so the x and y rows
of the NIfTI matrix change sign. Which matrix is used follows ITK 5.4's ``NiftiImageIO``:

* ``qform_code`` and ``sform_code`` both 0: origin 0, identity direction, spacing ``pixdim``.
* otherwise the sform (``srow_x/y/z``) is used when it is an invertible affine whose normalised
  columns are orthonormal (1e-4) AND one of: ``qform_code`` is 0; ``sform_code`` is 1
  (scanner anatomical); the sform and the qform are "very similar" (same singular values,
  rotations, offsets within 1e-4). If none holds, the qform is used (quaternion ``quatern_b/c/d``,
  ``qoffset_x/y/z``, ``qfac = sign(pixdim[0])``); no usable matrix at all is an error.
* the direction is the chosen matrix's columns, normalised; the origin its last column; the
  spacing is ``pixdim[1:4]`` (NOT the sform's column lengths, as in ITK: a disagreement above
  1e-3 mm is reported in ``info["warnings"]``). ``xyzt_units`` metres / microns scale spacing
  and origin to mm.
* NIfTI-1 matrices are single precision (as in niftilib): world positions equal ITK's to float
  rounding. NIfTI-2 (which SimpleITK cannot read) follows the same rules in double precision.

ctflow is stricter than ITK on bad input: ``pixdim`` <= 0 (ITK silently uses 1 or ``|pixdim|``),
data longer than the header says, and NaN/Inf voxels are errors. Analyze 7.5 files and NIfTI
``.hdr``/``.img`` pairs are refused (read them with ``fmt="sitk"``).

Voxel values
------------
``scl_slope``/``scl_inter`` are applied as ITK does (a slope of 0 or non-finite means "none").
Integer data with integral slope and intercept stays int16 when the result fits (CT stored as
uint16 with intercept -1024 reads as int16 HU); otherwise the result is float32, computed like
ITK as ``float32(float64(float32(v)) * slope + inter)``. Without scaling, integer data becomes
int16 when it fits (int32 CT volumes included), float32 when exact, and float data float32.

Examples
--------
>>> import numpy as np, tempfile
>>> from ctflow.geometry import Geometry
>>> g = Geometry((2.5, 0.75, 0.75), (-300.0, -180.0, -170.0))
>>> p = write_nifti(f"{tempfile.mkdtemp()}/scan.nii.gz", np.zeros((3, 4, 5), np.int16), g)
>>> scan = read_nifti(p)
>>> scan.shape, scan.images.dtype.name, scan.geometry.origin.tolist()
((3, 4, 5), 'int16', [-300.0, -180.0, -170.0])
"""

from __future__ import annotations

import math
import os
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry, direction_from_sitk, direction_to_sitk
from ctflow.io.metaimage import (
    MAX_VOXELS_BYTES,
    FileSource,
    VoxelSource,
    ZlibSource,
    check_finite,
    read_stored,
    skip_bytes,
    to_ct_dtype,
)
from ctflow.io.scan import Scan

__all__ = ["NIFTI_DATATYPES", "read_nifti", "write_nifti"]

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
_WRITE_DATATYPES = {v: k for k, v in NIFTI_DATATYPES.items()}

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
_UNITS_TO_MM = {1: 1e3, 2: 1.0, 3: 1e-3}  # xyzt_units & 7: metre, mm, micron
_UNIT_NAMES = {0: "unknown (taken as mm)", 1: "m", 2: "mm", 3: "um"}
_EPS64 = float(np.finfo(np.float64).eps)
_EPS32 = float(np.finfo(np.float32).eps)
_SLAB_BYTES = 16 * 1024 * 1024
_COMPRESSION_LEVEL = 1


# -- header ------------------------------------------------------------------------------------
@dataclass
class _Header:
    version: int  # 1 or 2
    fields: Any  # numpy record (native byte order)
    byteorder: str  # "<" or ">"
    size: int  # 348 or 540

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def _open_stream(fh: BinaryIO, path: Path, file_size: int) -> tuple[VoxelSource, bool]:
    head = fh.read(2)
    fh.seek(0)
    if head == b"\x1f\x8b":
        what = "the header's dim x datatype"
        return ZlibSource(fh, file_size, path, path, multi_member=True, what=what), True
    return FileSource(fh), False


def _read_header(src: VoxelSource, path: Path, gz: bool) -> _Header:
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
    """niftilib's FIXED_FLOAT: non-finite header floats read as 0."""
    return x if math.isfinite(x) else 0.0


# -- geometry (ITK 5.4 NiftiImageIO rules) -----------------------------------------------------
def _quatern_to_mat(h: _Header, ftype: type) -> NDArray[Any]:
    b, c, d = (_fixed(float(v)) for v in h["quatern"])
    qx, qy, qz = (_fixed(float(v)) for v in h["qoffset"])
    dx, dy, dz = (float(v) for v in h["pixdim"][1:4])
    qfac = -1.0 if float(h["pixdim"][0]) < 0 else 1.0
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:  # 180 degree rotation: renormalise (b, c, d)
        a = 1.0 / math.sqrt(b * b + c * c + d * d)
        b, c, d = b * a, c * a, d * a
        a = 0.0
    else:
        a = math.sqrt(a)
    xd = dx if dx > 0 else 1.0
    yd = dy if dy > 0 else 1.0
    zd = dz if dz > 0 else 1.0
    if qfac < 0:
        zd = -zd
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    m = np.array(
        [
            [(aa + bb - cc - dd) * xd, 2 * (b * c - a * d) * yd, 2 * (b * d + a * c) * zd],
            [2 * (b * c + a * d) * xd, (aa + cc - bb - dd) * yd, 2 * (c * d - a * b) * zd],
            [2 * (b * d - a * c) * xd, 2 * (c * d + a * b) * yd, (aa + dd - cc - bb) * zd],
        ]
    )
    out: NDArray[Any] = np.zeros((4, 4), ftype)
    out[:3, :3] = m
    out[:3, 3] = (qx, qy, qz)
    out[3, 3] = 1
    return out


def _is_affine(m: NDArray[Any]) -> bool:
    m64 = m.astype(np.float64)
    if not np.all(np.isfinite(m64)):
        return False
    if abs(m64[3, 3] - 1.0) + float(np.abs(m64[3, :3]).sum()) > _EPS32:
        return False
    sv = np.linalg.svd(m64, compute_uv=False)
    if not (sv[0] > 0 and sv[-1] / sv[0] > _EPS64):
        return False
    inv4 = np.linalg.inv(m64)
    inv3 = np.linalg.inv(m64[:3, :3])
    t3 = -(inv3 @ m64[:3, 3])
    return bool(
        np.abs(inv4[:3, :3] - inv3).sum() <= 1e-2 and np.abs(inv4[:3, 3] - t3).sum() <= 1e-2
    )


def _orthonormal_columns(m: NDArray[Any]) -> bool:
    r = m[:3, :3].copy()
    norms = np.sqrt((r * r).sum(axis=0))
    if np.any(norms == 0):
        return False
    r = r / norms
    return bool(np.all(np.abs(r @ r.T - np.eye(3, dtype=r.dtype)) <= 1e-4))


def _roughly_equal(s: NDArray[Any], q: NDArray[Any]) -> bool:
    """ITK's first, element-wise test (3x3 within 1e-5, last column and row within 1e-7)."""
    d = np.abs(s - q)
    return bool(np.all(d[:3, :3] <= 1e-5) and d[:, 3].sum() <= 1e-7 and d[3, :].sum() <= 1e-7)


def _very_similar(s: NDArray[Any], q: NDArray[Any]) -> bool:
    """ITK's second test: same singular values, rotations (U), offsets, bottom rows (1e-4)."""
    us, ws, _ = np.linalg.svd(s[:3, :3])
    uq, wq, _ = np.linalg.svd(q[:3, :3])
    # singular vectors are defined up to sign, and LAPACK may pick different signs for two
    # nearly equal matrices: align them so that only a real rotation difference counts
    uq = uq * np.where((us * uq).sum(axis=0) < 0, -1, 1).astype(uq.dtype)
    try:
        candidate = us @ np.linalg.inv(uq)
    except np.linalg.LinAlgError:
        return False
    return bool(
        np.all(np.abs(ws - wq) <= 1e-4)
        and np.all(np.abs(candidate - np.eye(3)) <= 1e-4)
        and np.all(np.abs(s[:3, 3] - q[:3, 3]) <= 1e-4)
        and np.all(np.abs(s[3, :] - q[3, :]) <= 1e-4)
    )


def _choose_matrix(h: _Header, path: Path, warnings: list[str]) -> tuple[NDArray[Any] | None, str]:
    """The 4x4 RAS matrix ITK uses (None: no orientation) and which one it is."""
    qcode, scode = int(h["qform_code"]), int(h["sform_code"])
    qcode, scode = max(qcode, 0), max(scode, 0)
    if qcode == 0 and scode == 0:
        return None, "none (qform_code = sform_code = 0)"
    ftype = np.float32 if h.version == 1 else np.float64
    if qcode > 0:
        q = _quatern_to_mat(h, ftype)
    else:
        q = np.diag([*(float(v) for v in h["pixdim"][1:4]), 1.0]).astype(ftype)
    s = np.zeros((4, 4), ftype)
    if scode > 0:
        s[:3, :] = h["srow"]
        s[3, 3] = 1
    prefer_sform = _roughly_equal(s, q)
    # ITK looks deeper unless the matrices match and there is no sform
    if (not prefer_sform or scode != 0) and _is_affine(s) and _orthonormal_columns(s):
        lengths = np.sqrt((s[:3, :3].astype(np.float64) ** 2).sum(axis=0))
        pixdim = np.array([float(v) for v in h["pixdim"][1:4]])
        if np.any(np.abs(lengths - pixdim) > 1e-3):
            warnings.append(
                f"sform column lengths {lengths.round(6).tolist()} differ from pixdim "
                f"{pixdim.round(6).tolist()}; spacing is taken from pixdim (as ITK does)"
            )
        if (qcode == 0 and scode != 0) or scode == 1:
            prefer_sform = True
        elif qcode != 0 and scode != 0:
            prefer_sform = _very_similar(s, q)
    if prefer_sform:
        return s, f"sform (sform_code {scode}, qform_code {qcode})"
    if qcode != 0:
        return q, f"qform (qform_code {qcode}, sform_code {scode})"
    raise InvalidScanError(
        f"{path}: no usable orientation: qform_code is 0 and the sform (sform_code {scode}) is "
        "not an orthonormal affine (skewed, singular or non-finite srow_x/y/z)"
    )


def _geometry(h: _Header, path: Path, info: dict[str, Any]) -> Geometry:
    pixdim = [float(v) for v in h["pixdim"][1:4]]
    if not all(math.isfinite(v) and v > 0 for v in pixdim):
        raise InvalidScanError(
            f"{path}: pixdim[1:4] (voxel size x y z) must be 3 positive numbers in mm; got {pixdim}"
        )
    units = int(h["xyzt_units"]) & 7
    scale = _UNITS_TO_MM.get(units, 1.0)
    info["units"] = _UNIT_NAMES.get(units, f"code {units} (taken as mm)")
    matrix, which = _choose_matrix(h, path, info["warnings"])
    info["transform"] = which
    spacing_xyz = np.array(pixdim) * scale
    if matrix is None:
        origin_xyz = np.zeros(3)
        d_sitk = np.eye(3)
    else:
        m = matrix.astype(np.float64)
        flip = np.array([-1.0, -1.0, 1.0])  # RAS -> LPS
        origin_xyz = m[:3, 3] * flip * scale
        cols = m[:3, :3] * flip[:, None]
        norms = np.sqrt((cols * cols).sum(axis=0))
        d_sitk = cols / np.where(norms > 0, norms, 1.0)
    try:
        return Geometry(
            spacing_xyz[::-1], origin_xyz[::-1], direction_from_sitk(tuple(d_sitk.ravel()))
        )
    except InvalidScanError as exc:
        raise InvalidScanError(f"{path}: {exc}") from None


# -- voxels ------------------------------------------------------------------------------------
def _rescale(stored: NDArray[Any], slope: float, inter: float) -> NDArray[Any]:
    """``stored * slope + inter`` as ITK computes it; int16 when integral and in range."""
    if stored.dtype.kind in "iu" and slope.is_integer() and inter.is_integer():
        lo, hi = int(stored.min()), int(stored.max())
        ends = (lo * int(slope) + int(inter), hi * int(slope) + int(inter))
        if min(ends) >= -32768 and max(ends) <= 32767:
            out16 = np.empty(stored.shape, np.int16)
            step = max(1, _SLAB_BYTES // max(1, stored[0].size * 8))
            for z0 in range(0, stored.shape[0], step):
                part = stored[z0 : z0 + step].astype(np.int64)
                part *= int(slope)
                part += int(inter)
                out16[z0 : z0 + step] = part
            return out16
    out = np.empty(stored.shape, np.float32)
    step = max(1, _SLAB_BYTES // max(1, stored[0].size * 8))
    with np.errstate(over="ignore", invalid="ignore"):
        for z0 in range(0, stored.shape[0], step):
            wide = stored[z0 : z0 + step].astype(np.float32).astype(np.float64)
            np.multiply(wide, slope, out=wide)
            np.add(wide, inter, out=wide)
            out[z0 : z0 + step] = wide
    return out


def read_nifti(path: str | os.PathLike[str]) -> Scan:
    """Read a NIfTI-1 or NIfTI-2 volume (``.nii`` or gzip-compressed ``.nii.gz``).

    The rules (geometry as ITK reads it, scaling, voxel types) are in the module docstring of
    :mod:`ctflow.io.nifti`.

    Parameters
    ----------
    path : path
        The ``.nii`` or ``.nii.gz`` file (gzip is recognised by content).

    Returns
    -------
    Scan
        ``images`` (Z, Y, X) in stored orientation: int16 when values fit, float32 otherwise;
        ``geometry`` in (z, y, x) LPS mm equal to SimpleITK's for the file; ``info`` with
        ``format``, ``version``, ``datatype``, ``transform`` (which matrix was used),
        ``qform_code``, ``sform_code``, ``scl_slope``, ``scl_inter``, ``rescaled``, ``units``,
        ``compressed``, ``descrip`` and ``warnings``.

    Raises
    ------
    CorruptFileError
        Missing file, not a NIfTI file, truncated header or data, data longer than the header
        says, corrupt gzip stream.
    InvalidScanError
        ``pixdim`` <= 0 or non-finite, dims <= 0, no usable orientation, NaN/Inf voxels,
        integer values beyond float32's exact range, a claimed volume over
        ``MAX_VOXELS_BYTES``.
    UnsupportedFormatError
        Not 3-D (time series, vector or 2-D images), complex/RGB/binary datatypes, Analyze
        7.5 files and ``.hdr``/``.img`` pairs.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> p = write_nifti(f"{tempfile.mkdtemp()}/a.nii", arr, Geometry((2.0, 1.0, 0.5)))
    >>> scan = read_nifti(p)
    >>> bool((scan.images == arr).all()), scan.geometry.spacing.tolist(), scan.info["transform"]
    (True, [2.0, 1.0, 0.5], 'sform (sform_code 1, qform_code 1)')
    """
    p = Path(path)
    try:
        file_size = p.stat().st_size
        with open(p, "rb", buffering=0) as fh:
            src, gz = _open_stream(fh, p, file_size)
            h = _read_header(src, p, gz)
            return _read_body(fh, src, gz, h, p, file_size)
    except CTFlowError:
        raise
    except FileNotFoundError:
        raise CorruptFileError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise CorruptFileError(f"{p}: is a folder, not a NIfTI file") from None
    except MemoryError:
        raise InvalidScanError(f"{p}: not enough memory for the voxels") from None
    except OSError as exc:
        raise CorruptFileError(f"{p}: cannot read the NIfTI file ({exc})") from exc


def _read_body(
    fh: BinaryIO, src: VoxelSource, gz: bool, h: _Header, p: Path, file_size: int
) -> Scan:
    dim = [int(v) for v in h["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise CorruptFileError(f"{p}: dim[0] (number of dimensions) must be 1..7; got {ndim}")
    if any(v <= 0 for v in dim[1 : ndim + 1]):
        raise InvalidScanError(
            f"{p}: dim[1:{ndim + 1}] (sizes) must be positive; got {dim[1 : ndim + 1]}"
        )
    intent = int(h["intent_code"])
    if intent in _VECTOR_INTENTS:
        raise UnsupportedFormatError(
            f"{p}: intent {_VECTOR_INTENTS[intent]} (vector/matrix voxels) is not a scalar CT "
            "volume"
        )
    real = ndim
    while real > 3 and dim[real] == 1:
        real -= 1
    if real != 3:
        raise UnsupportedFormatError(
            f"{p}: expected a 3-D volume; got a {real}-D image (dim = {dim[: ndim + 1]})"
        )
    code = int(h["datatype"])
    if code not in NIFTI_DATATYPES:
        name = _OTHER_DATATYPES.get(code, "unknown")
        raise UnsupportedFormatError(
            f"{p}: datatype {code} ({name}) is not supported; ctflow reads scalar integer and "
            "float NIfTI volumes"
        )
    stored = np.dtype(NIFTI_DATATYPES[code]).newbyteorder("<" if h.byteorder == "<" else ">")
    etype = f"NIfTI {np.dtype(NIFTI_DATATYPES[code]).name}"
    info: dict[str, Any] = {
        "format": "nifti",
        "reader": "ctflow.io.nifti",
        "version": h.version,
        "datatype": np.dtype(NIFTI_DATATYPES[code]).name,
        "compressed": gz,
        "qform_code": int(h["qform_code"]),
        "sform_code": int(h["sform_code"]),
        "descrip": bytes(h["descrip"]).split(b"\0")[0].decode("latin-1").strip(),
        "warnings": [],
    }
    geometry = _geometry(h, p, info)
    dims_zyx = (dim[3], dim[2], dim[1])
    n_bytes = dim[1] * dim[2] * dim[3] * stored.itemsize
    if n_bytes > MAX_VOXELS_BYTES:
        raise InvalidScanError(
            f"{p}: header claims {dim[1]}x{dim[2]}x{dim[3]} {info['datatype']} voxels = "
            f"{n_bytes} bytes; refusing volumes larger than MAX_VOXELS_BYTES = {MAX_VOXELS_BYTES}"
        )
    raw_offset = float(h["vox_offset"])
    if not math.isfinite(raw_offset):
        raise CorruptFileError(f"{p}: vox_offset must be a finite number; got {raw_offset}")
    offset = max(int(raw_offset), h.size)  # niftilib: at least the header size
    where = "the data after the header"
    if gz:
        skip_bytes(src, offset - h.size, p, "the gzip stream")
    else:
        avail = file_size - offset
        if avail != n_bytes:
            what = "truncated file" if avail < n_bytes else "sizes disagree"
            raise CorruptFileError(
                f"{p}: {where} (from vox_offset {offset}) holds {max(avail, 0)} bytes but the "
                f"header (dim {dim[1]} {dim[2]} {dim[3]}, {info['datatype']}) needs {n_bytes}: "
                f"expected {n_bytes} bytes, got {max(avail, 0)} ({what})"
            )
        fh.seek(offset)
    stored_arr = read_stored(src, dims_zyx, stored, p, where)

    slope = _fixed(float(h["scl_slope"]))
    if abs(slope) < _EPS64:
        slope = 1.0
    inter = _fixed(float(h["scl_inter"]))
    rescale = abs(slope) > _EPS64 and (abs(slope - 1.0) > _EPS64 or abs(inter) > _EPS64)
    info.update({"scl_slope": slope, "scl_inter": inter, "rescaled": rescale})
    if rescale:
        images = _rescale(stored_arr, slope, inter)
    else:
        images = to_ct_dtype(stored_arr, p, etype)
    check_finite(images, p, etype)
    return Scan(images, geometry, str(p), info)


# -- writing -----------------------------------------------------------------------------------
def _quaternion(r: NDArray[np.float64]) -> tuple[float, float, float]:
    """(b, c, d) of the unit quaternion (a >= 0) of a proper rotation matrix."""
    r11, r12, r13 = r[0]
    r21, r22, r23 = r[1]
    r31, r32, r33 = r[2]
    trace = r11 + r22 + r33 + 1.0
    if trace > 0.5:
        a = 0.5 * math.sqrt(trace)
        b, c, d = 0.25 * (r32 - r23) / a, 0.25 * (r13 - r31) / a, 0.25 * (r21 - r12) / a
    else:
        xd, yd, zd = 1.0 + r11 - (r22 + r33), 1.0 + r22 - (r11 + r33), 1.0 + r33 - (r11 + r22)
        if xd > 1.0:
            b = 0.5 * math.sqrt(xd)
            c, d, a = 0.25 * (r12 + r21) / b, 0.25 * (r13 + r31) / b, 0.25 * (r32 - r23) / b
        elif yd > 1.0:
            c = 0.5 * math.sqrt(yd)
            b, d, a = 0.25 * (r12 + r21) / c, 0.25 * (r23 + r32) / c, 0.25 * (r13 - r31) / c
        else:
            d = 0.5 * math.sqrt(zd)
            b, c, a = 0.25 * (r13 + r31) / d, 0.25 * (r23 + r32) / d, 0.25 * (r21 - r12) / d
        if a < 0:
            b, c, d = -b, -c, -d
    return b, c, d


def _header_bytes(shape_zyx: tuple[int, ...], code: int, itemsize: int, g: Geometry) -> bytes:
    h = np.zeros((), _N1.newbyteorder("<"))
    h["sizeof_hdr"] = 348
    h["dim"] = [3, shape_zyx[2], shape_zyx[1], shape_zyx[0], 1, 1, 1, 1]
    h["datatype"] = code
    h["bitpix"] = 8 * itemsize
    h["vox_offset"] = 352
    h["scl_slope"] = 1.0
    h["scl_inter"] = 0.0
    h["xyzt_units"] = 2 | 8  # mm, s (as ITK writes)
    h["qform_code"] = 1  # scanner anatomical, as ITK writes
    h["sform_code"] = 1
    h["magic"] = b"n+1\x00"
    flip = np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
    d_ras = flip[:, None] * np.asarray(direction_to_sitk(g.direction)).reshape(3, 3)
    spacing_xyz = g.spacing[::-1]
    origin_ras = flip * g.origin[::-1]
    rot = d_ras.copy()
    qfac = 1.0
    if np.linalg.det(rot) < 0:
        qfac = -1.0
        rot[:, 2] = -rot[:, 2]
    h["pixdim"] = [qfac, *spacing_xyz, 1.0, 1.0, 1.0, 1.0]
    h["quatern"] = _quaternion(rot)
    h["qoffset"] = origin_ras
    srow = np.zeros((3, 4))
    srow[:, :3] = d_ras * spacing_xyz[None, :]
    srow[:, 3] = origin_ras
    h["srow"] = srow
    return h.tobytes() + b"\x00" * 4  # + the 4-byte extension flag: no extensions


def write_nifti(
    path: str | os.PathLike[str],
    images: NDArray[Any],
    geometry: Geometry,
) -> Path:
    """Write a (Z, Y, X) volume as a single-file NIfTI-1 (``.nii``, or gzip ``.nii.gz``).

    The header is what ITK writes: qform (quaternion) and sform both set with code 1 (scanner
    anatomical), ``xyzt_units`` mm, no scaling, little-endian voxels at offset 352. NIfTI holds
    geometry in single precision, so world positions round-trip to about 1e-5 mm relative
    (use ``.mhd`` for bit-exact geometry). The file is written under a temporary name in the
    target folder and renamed when complete.

    Parameters
    ----------
    path : path
        Target ``*.nii`` or ``*.nii.gz`` (gzip, compression level 1).
    images : ndarray (Z, Y, X)
        int8/16/32/64, uint8/16/32/64, float32/64 or bool (written as uint8).
    geometry : Geometry
        Spacing, origin and direction in (z, y, x), LPS mm (converted to NIfTI's RAS).

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> d = tempfile.mkdtemp()
    >>> write_nifti(f"{d}/m.nii.gz", np.ones((2, 3, 4), bool), Geometry((1, 1, 1))).name
    'm.nii.gz'
    """
    p = Path(path)
    name = p.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise InvalidParameterError(
            f"write_nifti: path must end with .nii or .nii.gz; got {str(path)!r}"
        )
    if not isinstance(geometry, Geometry):
        raise InvalidParameterError(
            f"write_nifti: geometry must be a ctflow Geometry; got {type(geometry).__name__}"
        )
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.size == 0:
        raise InvalidParameterError(
            f"write_nifti: images must be a non-empty (Z, Y, X) array; got shape {arr.shape}"
        )
    if max(arr.shape) > 32767:
        raise InvalidParameterError(
            f"write_nifti: NIfTI-1 sizes must be <= 32767 per axis; got {arr.shape}"
        )
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    key = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    if key not in _WRITE_DATATYPES:
        raise InvalidParameterError(
            "write_nifti: images dtype must be one of int8/16/32/64, uint8/16/32/64, "
            f"float32/64 or bool; got {arr.dtype}"
        )
    if not p.parent.is_dir():
        raise InvalidParameterError(f"write_nifti: folder {p.parent} does not exist")
    le = np.dtype(key).newbyteorder("<")
    header = _header_bytes(arr.shape, _WRITE_DATATYPES[key], le.itemsize, geometry)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if name.endswith(".gz"):
                comp = zlib.compressobj(_COMPRESSION_LEVEL, zlib.DEFLATED, 31)  # gzip wrapper
                fh.write(comp.compress(header))
                for mv in _slabs(arr, le):
                    fh.write(comp.compress(mv))
                fh.write(comp.flush())
            else:
                fh.write(header)
                for mv in _slabs(arr, le):
                    fh.write(mv)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def _slabs(arr: NDArray[Any], le: np.dtype[Any]) -> Iterator[memoryview]:
    """Little-endian C-order bytes of ``arr`` in slabs (no copy when already laid out so)."""
    if arr.flags.c_contiguous and arr.dtype == le:
        yield arr.data.cast("B")
        return
    step = max(1, _SLAB_BYTES // max(1, arr.shape[1] * arr.shape[2] * le.itemsize))
    for z0 in range(0, arr.shape[0], step):
        yield np.ascontiguousarray(arr[z0 : z0 + step], dtype=le).data.cast("B")
