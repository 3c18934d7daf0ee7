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
import numpy as np

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
def _part_within(m, z, y, nz, ny, nx, a, b, lo, edge, tol):
    """Return the part of ``[a, b)`` of output row ``(z, y)`` within the source.

    Within: the source coordinate lies in ``[lo, n - edge - tol]`` on every axis (``n`` the
    axis' size); empty when that interval is.
    """
    for axis in range(3):
        n = nz if axis == 0 else (ny if axis == 1 else nx)
        s0 = m[axis, 0] * z + m[axis, 1] * y + m[axis, 3]
        ra, rb = inside_range(s0, m[axis, 2], lo, n - edge - tol, b)
        a = max(a, ra)
        b = min(b, rb)
    if b < a:
        b = a
    return a, b


@numba.njit(nogil=True, cache=True)
def _row_range(m, z, y, nz, ny, nx, nxo):
    """Return the inside ``[a, b)`` of output row ``(z, y)`` on all three source axes.

    Inside: the voxels' extent, where ``floor(s + _HALF)`` lies in ``[0, n - 1]``.
    """
    return _part_within(m, z, y, nz, ny, nx, 0, nxo, -0.5, 0.5, 2e-9)


@numba.njit(nogil=True, cache=True)
def _store(out, z, y, x, v, round_out):
    """Store one value (rounded half away from zero for integer outputs)."""
    if round_out:
        out[z, y, x] = math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)
    else:
        out[z, y, x] = v


@numba.njit(nogil=True, cache=True)
def _core_range(m, z, y, nz, ny, nx, a, b):
    """Return the part of ``[a, b)`` of row ``(z, y)`` whose 8 taps need no clamping.

    There every source coordinate lies in ``[0, n - 1 - 1e-6]``, so ``floor`` and ``floor + 1``
    are both inside; empty when an axis has a single voxel (the interval is empty).
    """
    return _part_within(m, z, y, nz, ny, nx, a, b, 0.0, 1.0, 1e-6)


@numba.njit(nogil=True, cache=True)
def _linear_clamped(src, out, m, z, y, x0, x1, round_out):
    """Trilinear samples of output row ``(z, y)``, ``x0 <= x < x1``, taps clamped to the edge."""
    nz, ny, nx = src.shape
    pz = m[0, 0] * z + m[0, 1] * y + m[0, 3]
    py = m[1, 0] * z + m[1, 1] * y + m[1, 3]
    px = m[2, 0] * z + m[2, 1] * y + m[2, 3]
    for x in range(x0, x1):
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


@numba.njit(nogil=True, cache=True, inline="always")
def _trilinear(flat, fz, fy, fx, sy, sz):
    """Return the trilinear sample at a source position whose 8 taps are all inside.

    The taps are read at unsigned flat indices (numba tests signed ones for wrap-around).
    """
    iz = int(fz)
    iy = int(fy)
    ix = int(fx)
    wz = fz - iz
    wy = fy - iy
    wx = fx - ix
    k = np.uint64(iz) * sz + np.uint64(iy) * sy + np.uint64(ix)
    one = np.uint64(1)
    c00 = flat[k] * (1.0 - wx) + flat[k + one] * wx
    c01 = flat[k + sy] * (1.0 - wx) + flat[k + sy + one] * wx
    c10 = flat[k + sz] * (1.0 - wx) + flat[k + sz + one] * wx
    c11 = flat[k + sz + sy] * (1.0 - wx) + flat[k + sz + sy + one] * wx
    c0 = c00 * (1.0 - wy) + c01 * wy
    c1 = c10 * (1.0 - wy) + c11 * wy
    return c0 * (1.0 - wz) + c1 * wz


@numba.njit(nogil=True, cache=True)
def _linear_core(flat, o, m, z, y, c, d, sy, sz):
    """Trilinear samples into ``o[c:d]`` (output row ``(z, y)``), no clamping.

    The source position advances by the matrix column per voxel (no multiply, no conversion
    of ``x``), two voxels per step (their int/float conversions overlap; docs/ops-notes.md);
    all 8 taps are inside (:func:`_core_range`).
    """
    dz = m[0, 2]
    dy = m[1, 2]
    dx = m[2, 2]
    fz = m[0, 0] * z + m[0, 1] * y + m[0, 3] + dz * c
    fy = m[1, 0] * z + m[1, 1] * y + m[1, 3] + dy * c
    fx = m[2, 0] * z + m[2, 1] * y + m[2, 3] + dx * c
    x = c
    while x + 1 < d:
        v0 = _trilinear(flat, fz, fy, fx, sy, sz)
        v1 = _trilinear(flat, fz + dz, fy + dy, fx + dx, sy, sz)
        o[x] = v0
        o[x + 1] = v1
        fz += 2.0 * dz
        fy += 2.0 * dy
        fx += 2.0 * dx
        x += 2
    if x < d:
        o[x] = _trilinear(flat, fz, fy, fx, sy, sz)


@numba.njit(nogil=True, cache=True)
def affine_linear(src, out, m, cval, z0, z1, round_out):
    """Trilinear resampling of ``src`` into ``out[z0:z1]`` through ``m`` (see the module).

    Each output row has up to three parts: outside the source (``cval``), within half a voxel
    of its edge (taps clamped, :func:`_linear_clamped`) and the core, where the 8 taps are
    read from flat unsigned indices as the position advances (:func:`_linear_core`, faster than the
    clamped loop: docs/ops-notes.md; the two agree to float rounding). Integer
    outputs take the core's values from a float64 row, rounded half away from zero.
    """
    nz, ny, nx = src.shape
    _, nyo, nxo = out.shape
    flat = src.ravel()
    sy = np.uint64(nx)
    sz = np.uint64(ny * nx)
    row = np.empty(nxo if round_out else 0, np.float64)
    for z in range(z0, z1):
        for y in range(nyo):
            a, b = _row_range(m, z, y, nz, ny, nx, nxo)
            for x in range(0, a):
                out[z, y, x] = cval
            for x in range(b, nxo):
                out[z, y, x] = cval
            if a >= b:
                continue
            c, d = _core_range(m, z, y, nz, ny, nx, a, b)
            _linear_clamped(src, out, m, z, y, a, c, round_out)
            if round_out:
                _linear_core(flat, row, m, z, y, c, d, sy, sz)
                for x in range(c, d):
                    _store(out, z, y, x, row[x], True)
            else:
                _linear_core(flat, out[z, y], m, z, y, c, d, sy, sz)
            _linear_clamped(src, out, m, z, y, max(c, d), b, round_out)


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
