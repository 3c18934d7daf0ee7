"""numba kernels for the 3-D closing of the lung mask on a coarse grid (loops only, no validation).

:func:`ctflow.ops.closing.coarse_closing` closes the kept lung components with a ball in four
steps, each a kernel here taking a ``[z0, z1)`` (or ``[y0, y1)``) range so calls can be split
across threads:

1. :func:`coarse_count` counts, per block of ``(fz, fy, fx)`` fine voxels, the voxels of the kept
   runs (the run-length form of :mod:`ctflow.kernels.lungs`).
2. :func:`closing_seed` marks the blocks that are at least half lung (0) and the others far
   (``1e30``); :func:`edt_sq_x`, :func:`edt_sq_y` and :func:`edt_sq_z` turn that into the exact
   squared Euclidean distance to the marked blocks (Felzenszwalb & Huttenlocher's lower
   envelope of parabolas, one axis at a time, in millimetres).
3. :func:`closing_outside` keeps the outside of the dilation (distance above the radius) as the
   new features, and the same distance transform gives the distance to it;
   :func:`closing_signed` turns that into ``sqrt(d) - offset``, positive inside the closing.
4. :func:`paint_closing` interpolates that signed field back to the fine grid (trilinear) and
   sets the fine voxels where it is positive.

Distances equal to or above ``1e30`` mean "no feature".
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "FAR",
    "closing_outside",
    "closing_seed",
    "closing_signed",
    "coarse_count",
    "edt_sq_x",
    "edt_sq_y",
    "edt_sq_z",
    "paint_closing",
]

#: Squared distance of a point with no feature; inputs at or above it are "no feature".
FAR = 1.0e30


# -- block counts ---------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def coarse_count(row_ptr, starts, ends, labels, keep, ny, oz, oy, ox, fz, fy, fx, z0, z1, out):
    """Count voxels of kept runs per block: ``out[(z - oz) // fz, (y - oy) // fy, (x - ox) // fx]``.

    Only fine slices ``[z0, z1)`` are read (concurrent calls must cover whole block rows).
    ``oz, oy, ox`` may be negative (the block grid may extend beyond the volume); voxels outside
    the grid are ignored.
    """
    cz, cy, cx = out.shape
    for r in range(z0 * ny, z1 * ny):
        z = r // ny
        y = r - z * ny
        if z < oz or y < oy:
            continue
        bz = (z - oz) // fz
        by = (y - oy) // fy
        if bz >= cz or by >= cy:
            continue
        for i in range(row_ptr[r], row_ptr[r + 1]):
            if keep[labels[i]]:
                s = max(starts[i], ox)
                e = min(ends[i], ox + cx * fx)
                x = s
                while x < e:
                    bx = (x - ox) // fx
                    stop = min(e, ox + (bx + 1) * fx)
                    out[bz, by, bx] += stop - x
                    x = stop


# -- squared Euclidean distance transform (Felzenszwalb & Huttenlocher) ---------------------------
@numba.njit(nogil=True, cache=True)
def _edt_line(f, n, w, v, zb, out):
    """1-D squared distance transform of ``f[:n]`` (spacing ``w``; ``>= 1e30`` = no feature)."""
    w2 = w * w
    k = -1
    for q in range(n):
        fq = f[q]
        if fq >= FAR:
            continue
        if k < 0:
            k = 0
            v[0] = q
            zb[0] = -FAR
            zb[1] = FAR
            continue
        p = v[k]
        s = ((fq + w2 * q * q) - (f[p] + w2 * p * p)) / (2.0 * w2 * (q - p))
        while s <= zb[k]:
            k -= 1
            p = v[k]
            s = ((fq + w2 * q * q) - (f[p] + w2 * p * p)) / (2.0 * w2 * (q - p))
        k += 1
        v[k] = q
        zb[k] = s
        zb[k + 1] = FAR
    if k < 0:
        for p in range(n):
            out[p] = FAR
        return
    j = 0
    for p in range(n):
        while zb[j + 1] < p:
            j += 1
        d = p - v[j]
        out[p] = w2 * d * d + f[v[j]]


@numba.njit(nogil=True, cache=True)
def edt_sq_x(d, w, z0, z1):
    """In place, along x (last axis), for slices ``[z0, z1)``; ``d`` holds 0 / ``>= 1e30``."""
    nx = d.shape[2]
    f = np.empty(nx, np.float64)
    out = np.empty(nx, np.float64)
    v = np.empty(nx, np.int64)
    zb = np.empty(nx + 1, np.float64)
    for z in range(z0, z1):
        for y in range(d.shape[1]):
            for x in range(nx):
                f[x] = d[z, y, x]
            _edt_line(f, nx, w, v, zb, out)
            for x in range(nx):
                d[z, y, x] = out[x]


@numba.njit(nogil=True, cache=True)
def edt_sq_y(d, w, z0, z1):
    """In place, along y, for slices ``[z0, z1)``."""
    ny = d.shape[1]
    f = np.empty(ny, np.float64)
    out = np.empty(ny, np.float64)
    v = np.empty(ny, np.int64)
    zb = np.empty(ny + 1, np.float64)
    for z in range(z0, z1):
        for x in range(d.shape[2]):
            for y in range(ny):
                f[y] = d[z, y, x]
            _edt_line(f, ny, w, v, zb, out)
            for y in range(ny):
                d[z, y, x] = out[y]


@numba.njit(nogil=True, cache=True)
def edt_sq_z(d, w, y0, y1):
    """In place, along z, for rows ``[y0, y1)``."""
    nz = d.shape[0]
    f = np.empty(nz, np.float64)
    out = np.empty(nz, np.float64)
    v = np.empty(nz, np.int64)
    zb = np.empty(nz + 1, np.float64)
    for y in range(y0, y1):
        for x in range(d.shape[2]):
            for z in range(nz):
                f[z] = d[z, y, x]
            _edt_line(f, nz, w, v, zb, out)
            for z in range(nz):
                d[z, y, x] = out[z]


# -- the closing's distance fields ----------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def closing_seed(counts, n_z, n_y, n_x, d, z0, z1):
    """Seed the first distance transform: 0 on blocks at least half lung, else ``1e30``.

    A block is at least half lung when ``2 * counts >= nb > 0``, ``nb = n_z * n_y * n_x`` being
    its voxels inside the volume. Writes block slices ``[z0, z1)`` of ``d``.
    """
    big = np.float32(FAR)
    for z in range(z0, z1):
        for y in range(d.shape[1]):
            nzy = n_z[z] * n_y[y]
            for x in range(d.shape[2]):
                nb = nzy * n_x[x]
                d[z, y, x] = 0.0 if nb > 0 and 2 * np.int64(counts[z, y, x]) >= nb else big


@numba.njit(nogil=True, cache=True)
def closing_outside(d, r2, z0, z1):
    """Seed the second distance transform with the outside of the dilation, in place.

    ``d`` becomes ``1e30`` where ``d <= r2`` (within the dilation by the ball) and 0 elsewhere,
    for slices ``[z0, z1)``.
    """
    big = np.float32(FAR)
    for z in range(z0, z1):
        for y in range(d.shape[1]):
            for x in range(d.shape[2]):
                d[z, y, x] = big if d[z, y, x] <= r2 else 0.0


@numba.njit(nogil=True, cache=True)
def closing_signed(d, offset, z0, z1):
    """Turn squared distances into the signed field ``sqrt(d) - offset`` in place (float32).

    Written for slices ``[z0, z1)``; positive values lie inside the closing.
    """
    for z in range(z0, z1):
        for y in range(d.shape[1]):
            for x in range(d.shape[2]):
                d[z, y, x] = np.float32(np.sqrt(d[z, y, x])) - offset


# -- back to the fine grid ------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _axis_weights(n, o, f, nc):
    """For fine indices ``0..n-1``: coarse cell index and weight of its upper node.

    Coarse node ``i`` sits at fine coordinate ``o + i * f + (f - 1) / 2``. Fine voxels before the
    first node or after the last one get cell ``-1``.
    """
    cell = np.empty(n, np.int64)
    t = np.empty(n, np.float32)
    for v in range(n):
        u = (v - o - 0.5 * (f - 1)) / f
        i = int(np.floor(u))
        if i < 0 or i + 1 > nc - 1:
            cell[v] = -1
            t[v] = 0.0
        else:
            cell[v] = i
            t[v] = u - i
    return cell, t


@numba.njit(nogil=True, cache=True)
def paint_closing(mask, g, oz, oy, ox, fz, fy, fx, z0, z1):
    """Set fine voxels where the trilinear interpolation of coarse field ``g`` is ``> 0``.

    ``g`` holds, at the block centres of a grid with origin ``(oz, oy, ox)`` (fine voxels, may
    be negative) and block size ``(fz, fy, fx)``, a signed value (> 0 inside the closed set).
    Cells whose 8 corners are all > 0 are painted whole, cells with none > 0 are skipped; only
    fine slices ``[z0, z1)`` are touched.
    """
    nz, ny, nx = mask.shape
    cz, cy, cx = g.shape
    zc, zt = _axis_weights(nz, oz, fz, cz)
    yc, yt = _axis_weights(ny, oy, fy, cy)
    xc, xt = _axis_weights(nx, ox, fx, cx)
    for z in range(z0, z1):
        i = zc[z]
        if i < 0:
            continue
        tz = zt[z]
        for y in range(ny):
            j = yc[y]
            if j < 0:
                continue
            ty = yt[y]
            row = mask[z, y]
            x = 0
            while x < nx:
                k = xc[x]
                if k < 0:
                    x += 1
                    continue
                g000 = g[i, j, k]
                g001 = g[i, j, k + 1]
                g010 = g[i, j + 1, k]
                g011 = g[i, j + 1, k + 1]
                g100 = g[i + 1, j, k]
                g101 = g[i + 1, j, k + 1]
                g110 = g[i + 1, j + 1, k]
                g111 = g[i + 1, j + 1, k + 1]
                hi_all = min(
                    min(min(g000, g001), min(g010, g011)), min(min(g100, g101), min(g110, g111))
                )
                lo_all = max(
                    max(max(g000, g001), max(g010, g011)), max(max(g100, g101), max(g110, g111))
                )
                # interpolate along z and y once for this cell row, then along x per voxel
                a0 = (g000 * (1 - tz) + g100 * tz) * (1 - ty) + (g010 * (1 - tz) + g110 * tz) * ty
                a1 = (g001 * (1 - tz) + g101 * tz) * (1 - ty) + (g011 * (1 - tz) + g111 * tz) * ty
                while x < nx and xc[x] == k:
                    if hi_all > 0:
                        row[x] = 1
                    elif lo_all > 0:
                        tx = xt[x]
                        if a0 * (1 - tx) + a1 * tx > 0:
                            row[x] = 1
                    x += 1
