"""Write a (Z, Y, X) volume as a single-file NIfTI-1, with the header ITK writes."""

from __future__ import annotations

import math
import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry, direction_to_sitk
from ctflow.io.nifti.header import _N1, NIFTI_DATATYPES
from ctflow.io.voxels import _IO_CHUNK

__all__ = ["write_nifti"]


_WRITE_DATATYPES = {v: k for k, v in NIFTI_DATATYPES.items()}


_COMPRESSION_LEVEL = 1


def _quaternion(r: NDArray[np.float64]) -> tuple[float, float, float]:
    """Return (b, c, d) of the unit quaternion (a >= 0) of a proper rotation matrix."""
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
    """Return the 352 bytes ITK writes before the voxels: the header and no extensions."""
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
    """Yield the little-endian C-order bytes of ``arr`` in slabs (no copy when laid out so)."""
    if arr.flags.c_contiguous and arr.dtype == le:
        yield arr.data.cast("B")
        return
    step = max(1, _IO_CHUNK // max(1, arr.shape[1] * arr.shape[2] * le.itemsize))
    for z0 in range(0, arr.shape[0], step):
        yield np.ascontiguousarray(arr[z0 : z0 + step], dtype=le).data.cast("B")
