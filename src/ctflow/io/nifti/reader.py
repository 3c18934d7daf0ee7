"""Read a NIfTI-1 or NIfTI-2 volume into a :class:`~ctflow.io.scan.Scan`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.io.nifti.geometry import _EPS64, _geometry
from ctflow.io.nifti.header import (
    _OTHER_DATATYPES,
    _VECTOR_INTENTS,
    NIFTI_DATATYPES,
    _fixed,
    _Header,
    _open_stream,
    _read_header,
)
from ctflow.io.scan import Scan
from ctflow.io.voxels import (
    _IO_CHUNK,
    VoxelSource,
    as_source_path,
    check_finite,
    max_voxels_bytes,
    open_regular,
    read_stored,
    read_voxels,
    skip_bytes,
)

__all__ = ["read_nifti"]


def _rescale(stored: NDArray[Any], slope: float, inter: float) -> NDArray[Any]:
    """Compute ``stored * slope + inter`` as ITK does; int16 when integral and in range."""
    if stored.dtype.kind in "iu" and slope.is_integer() and inter.is_integer():
        lo, hi = int(stored.min()), int(stored.max())
        ends = (lo * int(slope) + int(inter), hi * int(slope) + int(inter))
        if min(ends) >= -32768 and max(ends) <= 32767:
            out16 = np.empty(stored.shape, np.int16)
            step = max(1, _IO_CHUNK // max(1, stored[0].size * 8))
            for z0 in range(0, stored.shape[0], step):
                part = stored[z0 : z0 + step].astype(np.int64)
                part *= int(slope)
                part += int(inter)
                out16[z0 : z0 + step] = part
            return out16
    out = np.empty(stored.shape, np.float32)
    step = max(1, _IO_CHUNK // max(1, stored[0].size * 8))
    with np.errstate(over="ignore", invalid="ignore"):
        for z0 in range(0, stored.shape[0], step):
            wide = stored[z0 : z0 + step].astype(np.float32).astype(np.float64)
            np.multiply(wide, slope, out=wide)
            np.add(wide, inter, out=wide)
            out[z0 : z0 + step] = wide
    return out


def read_nifti(path: str | os.PathLike[str]) -> Scan:
    """Read a NIfTI-1 or NIfTI-2 volume (``.nii`` or gzip-compressed ``.nii.gz``).

    The rules (geometry as ITK reads it, scaling, voxel types) are in the package docstring of
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
        Missing file, a FIFO/socket/device instead of a file, not a NIfTI file, truncated
        header or data, data longer than the header says, corrupt gzip stream.
    InvalidParameterError
        ``path`` cannot name a file (NUL byte, over-long name).
    InvalidScanError
        ``pixdim`` <= 0 or non-finite, dims <= 0, no usable orientation, NaN/Inf voxels,
        integer values beyond float32's exact range, a claimed volume over
        :data:`~ctflow.io.voxels.MAX_VOXELS_BYTES`.
    UnsupportedFormatError
        Not 3-D (time series, vector or 2-D images), complex/RGB/binary datatypes, Analyze
        7.5 files and ``.hdr``/``.img`` pairs.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.nifti import write_nifti
    >>> arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> p = write_nifti(f"{tempfile.mkdtemp()}/a.nii", arr, Geometry((2.0, 1.0, 0.5)))
    >>> scan = read_nifti(p)
    >>> bool((scan.images == arr).all()), scan.geometry.spacing.tolist(), scan.info["transform"]
    (True, [2.0, 1.0, 0.5], 'sform (sform_code 1, qform_code 1)')
    """
    p = as_source_path(path, "read_nifti")
    fh, file_size = open_regular(p, "NIfTI file")
    try:
        with fh:
            src, gz = _open_stream(fh, p, file_size)
            h = _read_header(src, p, gz)
            return _read_body(fh, src, gz, h, p, file_size)
    except CTFlowError:
        raise
    except MemoryError:
        raise InvalidScanError(f"{p}: not enough memory for the voxels") from None
    except OSError as exc:
        raise CorruptFileError(f"{p}: cannot read the NIfTI file ({exc})") from exc


def _read_body(
    fh: BinaryIO, src: VoxelSource, gz: bool, h: _Header, p: Path, file_size: int
) -> Scan:
    """Check the header's sizes and type, then read, scale and convert the voxels."""
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
    limit = max_voxels_bytes()
    if n_bytes > limit:
        raise InvalidScanError(
            f"{p}: header claims {dim[1]}x{dim[2]}x{dim[3]} {info['datatype']} voxels = "
            f"{n_bytes} bytes; refusing volumes larger than MAX_VOXELS_BYTES = {limit}"
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
    slope = _fixed(float(h["scl_slope"]))
    if abs(slope) < _EPS64:
        slope = 1.0
    inter = _fixed(float(h["scl_inter"]))
    rescale = abs(slope) > _EPS64 and (abs(slope - 1.0) > _EPS64 or abs(inter) > _EPS64)
    info.update({"scl_slope": slope, "scl_inter": inter, "rescaled": rescale})
    if rescale:
        images = _rescale(read_stored(src, dims_zyx, stored, p, where), slope, inter)
        check_finite(images, p, etype)
    else:  # converted as it is read: one volume, not the stored one and the result
        images = read_voxels(src, dims_zyx, stored, p, where, etype)
    return Scan(images, geometry, str(p), info)
