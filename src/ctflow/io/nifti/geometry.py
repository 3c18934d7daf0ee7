"""Choose and convert a NIfTI file's orientation matrix as ITK 5.4's ``NiftiImageIO`` does.

The rules (qform or sform, spacing from ``pixdim``, RAS to LPS, units) are in the package
docstring of :mod:`ctflow.io.nifti`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidScanError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.nifti.header import _fixed, _Header

_UNITS_TO_MM = {1: 1e3, 2: 1.0, 3: 1e-3}  # xyzt_units & 7: metre, mm, micron
_UNIT_NAMES = {0: "unknown (taken as mm)", 1: "m", 2: "mm", 3: "um"}
_EPS64 = float(np.finfo(np.float64).eps)
_EPS32 = float(np.finfo(np.float32).eps)


def _quatern_to_mat(h: _Header, ftype: type) -> NDArray[Any]:
    """Return the 4x4 qform matrix (quaternion, offsets, ``pixdim``, ``qfac``) as niftilib does."""
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
    """Tell whether ``m`` is a finite, invertible 4x4 affine (ITK's test)."""
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
    """Tell whether the normalised columns of ``m[:3, :3]`` are orthonormal (within 1e-4)."""
    r = m[:3, :3].copy()
    norms = np.sqrt((r * r).sum(axis=0))
    if np.any(norms == 0):
        return False
    r = r / norms
    return bool(np.all(np.abs(r @ r.T - np.eye(3, dtype=r.dtype)) <= 1e-4))


def _roughly_equal(s: NDArray[Any], q: NDArray[Any]) -> bool:
    """Compare sform and qform element-wise: ITK's first test (1e-5, offsets 1e-7)."""
    d = np.abs(s - q)
    return bool(np.all(d[:3, :3] <= 1e-5) and d[:, 3].sum() <= 1e-7 and d[3, :].sum() <= 1e-7)


def _very_similar(s: NDArray[Any], q: NDArray[Any]) -> bool:
    """Compare singular values, rotations, offsets and bottom rows: ITK's second test (1e-4)."""
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
    """Return the 4x4 RAS matrix ITK uses (None: no orientation) and which one it is."""
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
    """Return the LPS geometry of the file; note units, matrix and warnings in ``info``."""
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
