"""numba kernels of the one-pass geometric resampling: affine, elastic, affine (loops only).

Every output voxel ``o = (z, y, x)`` takes the source at the continuous index ``s``::

    p = P[:, :3] @ o + P[:, 3]          output index -> frame point (mm), P is 3x4 float64
    p = p + D(p)                        the elastic stage, when coefficients are given
    s = Q[:, :3] @ p + Q[:, 3]          frame point -> source index, Q is 3x4 float64

``D`` is the uniform cubic B-spline displacement field of :mod:`ctflow.kernels.warp_field`; the
source indices ``s`` are computed one output row at a time by :mod:`ctflow.kernels.warp_rows`,
which also tells how that stays fast (no displacement field is ever stored). The public names of
both modules are importable from here too.

Sampling follows :mod:`ctflow.kernels.affine` exactly: a source is inside when it lies in ``[-0.5, n
- 0.5)`` on every axis (``cval`` elsewhere); trilinear sampling clamps a source within half a voxel
of the edge onto the edge voxels' centres; nearest takes ``floor(s + 0.5 + 1e-9)`` (ITK's rule,
robust to a tie computed a hair below .5, as :mod:`ctflow.kernels.affine`); integer outputs of the
linear kernel are rounded half away from zero. Only output planes ``z0 <= z < z1`` are written, so
callers split the work across threads. Without coefficients (``coef`` of zero size) the kernels
*are* :func:`~ctflow.kernels.affine.affine_linear` / :func:`~ctflow.kernels.affine.affine_nearest`
with ``M = Q o P``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ctflow.kernels.affine import affine_linear, affine_nearest
from ctflow.kernels.warp_field import PAD, bspline_displacement
from ctflow.kernels.warp_rows import MIN_SEGMENT, _prepare, _row_sources, row_axis

__all__ = [
    "MIN_SEGMENT",
    "PAD",
    "bspline_displacement",
    "compose",
    "row_axis",
    "warp_linear",
    "warp_nearest",
]

_HALF = 0.5 + 1e-9  # the nearest rounding of ctflow.kernels.affine


@numba.njit(nogil=True, cache=True)
def compose(p, q):
    """Return the 3x4 ``M = Q o P`` (``M o = Q (P o)``)."""
    m = np.empty((3, 4), dtype=np.float64)
    for a in range(3):
        for b in range(4):
            v = q[a, 3] if b == 3 else 0.0
            for k in range(3):
                v += q[a, k] * p[k, b]
            m[a, b] = v
    return m


@numba.njit(nogil=True, cache=True)
def _store(out, z, y, x, v, round_out):
    """Store one value (rounded half away from zero for integer outputs)."""
    if round_out:  # branch-free: the sign of random data is unpredictable
        out[z, y, x] = math.copysign(math.floor(abs(v) + 0.5), v)
    else:
        out[z, y, x] = v


@numba.njit(nogil=True, cache=True)
def warp_linear(src, out, p, q, coef, grid_origin, grid_step, cval, z0, z1, round_out):
    """Trilinear resampling of ``src`` into ``out[z0:z1]`` through ``Q o (id + D) o P``.

    See the module for the conventions; ``coef`` of zero size skips the elastic stage.
    """
    if coef.size == 0:
        affine_linear(src, out, compose(p, q), cval, z0, z1, round_out)
        return
    nz, ny, nx = src.shape
    _, nyo, nxo = out.shape
    axis, order, cp, scratch = _prepare(p, coef, grid_step, nxo)
    sbuf = np.empty((3, nxo), dtype=np.float64)
    hz = nz - 0.5 - 2e-9  # floor(s + _HALF) in [0, n - 1]: the voxels' extent
    hy = ny - 0.5 - 2e-9
    hx = nx - 0.5 - 2e-9
    for z in range(z0, z1):
        for y in range(nyo):
            _row_sources(p, q, cp, axis, order, grid_origin, grid_step, z, y, sbuf, scratch)
            for x in range(nxo):
                sz = sbuf[0, x]
                sy = sbuf[1, x]
                sx = sbuf[2, x]
                if not (-0.5 <= sz <= hz and -0.5 <= sy <= hy and -0.5 <= sx <= hx):
                    out[z, y, x] = cval
                    continue
                # the clamped gather of affine (_linear_clamped), written out: a shared njit
                # helper (even inline="always") was slower (docs/ops-notes.md, "Warps")
                fz = min(max(sz, 0.0), nz - 1.0)  # the edge within half a voxel
                fy = min(max(sy, 0.0), ny - 1.0)
                fx = min(max(sx, 0.0), nx - 1.0)
                iz = min(int(fz), nz - 2) if nz > 1 else 0
                iy = min(int(fy), ny - 2) if ny > 1 else 0
                ix = min(int(fx), nx - 2) if nx > 1 else 0
                wz = fz - iz if nz > 1 else 0.0
                wy = fy - iy if ny > 1 else 0.0
                wx = fx - ix if nx > 1 else 0.0
                jz = iz + 1 if nz > 1 else iz
                jy = iy + 1 if ny > 1 else iy
                jx = ix + 1 if nx > 1 else ix
                c00 = src[iz, iy, ix] * (1.0 - wx) + src[iz, iy, jx] * wx
                c01 = src[iz, jy, ix] * (1.0 - wx) + src[iz, jy, jx] * wx
                c10 = src[jz, iy, ix] * (1.0 - wx) + src[jz, iy, jx] * wx
                c11 = src[jz, jy, ix] * (1.0 - wx) + src[jz, jy, jx] * wx
                c0 = c00 * (1.0 - wy) + c01 * wy
                c1 = c10 * (1.0 - wy) + c11 * wy
                _store(out, z, y, x, c0 * (1.0 - wz) + c1 * wz, round_out)


@numba.njit(nogil=True, cache=True)
def warp_nearest(src, out, p, q, coef, grid_origin, grid_step, cval, z0, z1):
    """Nearest-neighbour resampling of ``src`` into ``out[z0:z1]`` through ``Q o (id + D) o P``.

    ``cval`` must already be of ``out``'s dtype; values are copied, never mixed.
    """
    if coef.size == 0:
        affine_nearest(src, out, compose(p, q), cval, z0, z1)
        return
    nz, ny, nx = src.shape
    _, nyo, nxo = out.shape
    axis, order, cp, scratch = _prepare(p, coef, grid_step, nxo)
    sbuf = np.empty((3, nxo), dtype=np.float64)
    hz = nz - 0.5 - 2e-9
    hy = ny - 0.5 - 2e-9
    hx = nx - 0.5 - 2e-9
    for z in range(z0, z1):
        for y in range(nyo):
            _row_sources(p, q, cp, axis, order, grid_origin, grid_step, z, y, sbuf, scratch)
            for x in range(nxo):
                sz = sbuf[0, x]
                sy = sbuf[1, x]
                sx = sbuf[2, x]
                if not (-0.5 <= sz <= hz and -0.5 <= sy <= hy and -0.5 <= sx <= hx):
                    out[z, y, x] = cval
                    continue
                out[z, y, x] = src[
                    math.floor(sz + _HALF), math.floor(sy + _HALF), math.floor(sx + _HALF)
                ]
