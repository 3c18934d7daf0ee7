"""numba kernels that resample a volume through any affine map of voxel indices (loops only).

Every output voxel ``o = (z, y, x)`` takes the input at the continuous index::

    src = M[:, :3] @ o + M[:, 3]            (M is 3x4, float64)

trilinear (:func:`affine_linear`) or nearest (:func:`affine_nearest`, index
``floor(src + 0.5)``). A source is inside the volume when it lies in ``[-0.5, n - 0.5)`` on every
axis — the voxels' own extent, as ITK counts it — and gives ``cval`` elsewhere; trilinear
sampling clamps a source within half a voxel of the edge onto the edge voxels' centres (the edge
value). So a resampling onto the same grid is the identity, and a pure axis permutation or flip
is exact. Only output planes ``z0 <= z < z1`` are written, so callers split the work across
threads. For each output row the range of ``x`` whose source is inside is computed first
(``src`` is affine in ``x``), so the inner loop has no bounds test.
"""

from __future__ import annotations

import math

import numba

__all__ = ["affine_linear", "affine_nearest", "inside_range"]

#: ``floor(s + _HALF)``: ITK's nearest index ``floor(s + 0.5)``, robust to a tie computed a
#: hair below .5 (as :mod:`ctflow.ops.interpolation`)
_HALF = 0.5 + 1e-9


@numba.njit(nogil=True, cache=True)
def inside_range(s0, step, lo, hi, n):
    """Return the ``[a, b)`` range of ``x`` in ``[0, n)`` with ``lo <= s0 + step * x <= hi``."""
    a = 0
    b = n
    if step == 0.0:
        if s0 < lo or s0 > hi:
            return 0, 0
        return 0, n
    t_lo = (lo - s0) / step
    t_hi = (hi - s0) / step
    if step < 0.0:
        t_lo, t_hi = t_hi, t_lo
    first = math.ceil(t_lo - 1e-9)
    last = math.floor(t_hi + 1e-9)
    if first > a:
        a = min(n, int(first))
    if last + 1 < b:
        b = max(0, int(last) + 1)
    # rounding at the ends: step in until the arithmetic the loop uses agrees
    while a < b and not (lo <= s0 + step * a <= hi):
        a += 1
    while b > a and not (lo <= s0 + step * (b - 1) <= hi):
        b -= 1
    return a, b


@numba.njit(nogil=True, cache=True)
def _row_range(m, z, y, nz, ny, nx, nxo):
    """Return the inside ``[a, b)`` of output row ``(z, y)`` on all three source axes."""
    a = 0
    b = nxo
    for axis in range(3):
        n = nz if axis == 0 else (ny if axis == 1 else nx)
        s0 = m[axis, 0] * z + m[axis, 1] * y + m[axis, 3]
        lo, hi = -0.5, n - 0.5 - 2e-9  # floor(s + _HALF) in [0, n - 1]: the voxels' extent
        ra, rb = inside_range(s0, m[axis, 2], lo, hi, nxo)
        a = max(a, ra)
        b = min(b, rb)
    if b < a:
        b = a
    return a, b


@numba.njit(nogil=True, cache=True)
def _store(out, z, y, x, v, round_out):
    """Store one value (rounded half away from zero for integer outputs)."""
    if round_out:
        out[z, y, x] = math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)
    else:
        out[z, y, x] = v


@numba.njit(nogil=True, cache=True)
def affine_linear(src, out, m, cval, z0, z1, round_out):
    """Trilinear resampling of ``src`` into ``out[z0:z1]`` through ``m`` (see the module)."""
    nz, ny, nx = src.shape
    _, nyo, nxo = out.shape
    for z in range(z0, z1):
        for y in range(nyo):
            a, b = _row_range(m, z, y, nz, ny, nx, nxo)
            for x in range(0, a):
                out[z, y, x] = cval
            for x in range(b, nxo):
                out[z, y, x] = cval
            if a >= b:
                continue
            pz = m[0, 0] * z + m[0, 1] * y + m[0, 3]
            py = m[1, 0] * z + m[1, 1] * y + m[1, 3]
            px = m[2, 0] * z + m[2, 1] * y + m[2, 3]
            for x in range(a, b):
                fz = min(max(pz + m[0, 2] * x, 0.0), nz - 1.0)  # the edge within half a voxel
                fy = min(max(py + m[1, 2] * x, 0.0), ny - 1.0)
                fx = min(max(px + m[2, 2] * x, 0.0), nx - 1.0)
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
def affine_nearest(src, out, m, cval, z0, z1):
    """Nearest-neighbour resampling of ``src`` into ``out[z0:z1]`` through ``m``."""
    nz, ny, nx = src.shape
    _, nyo, nxo = out.shape
    for z in range(z0, z1):
        for y in range(nyo):
            a, b = _row_range(m, z, y, nz, ny, nx, nxo)
            for x in range(0, a):
                out[z, y, x] = cval
            for x in range(b, nxo):
                out[z, y, x] = cval
            pz = m[0, 0] * z + m[0, 1] * y + m[0, 3]
            py = m[1, 0] * z + m[1, 1] * y + m[1, 3]
            px = m[2, 0] * z + m[2, 1] * y + m[2, 3]
            for x in range(a, b):
                iz = math.floor(pz + m[0, 2] * x + _HALF)
                iy = math.floor(py + m[1, 2] * x + _HALF)
                ix = math.floor(px + m[2, 2] * x + _HALF)
                out[z, y, x] = src[iz, iy, ix]
