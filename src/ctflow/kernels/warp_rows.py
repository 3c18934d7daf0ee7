"""numba kernels of the warp's source indices, one output row at a time (loops only).

An output row's frame points ``P o`` get the displacement ``D`` of
:mod:`ctflow.kernels.warp_field` and go through ``Q`` to source indices, which the sampling loops
of :mod:`ctflow.kernels.warp` then read. No displacement field is ever stored: ``D`` is evaluated
exactly at every voxel, one output row at a time, into a row of source indices:

* the row runs along a single frame axis (``P[:, 2]`` has one non-zero entry: the frame is
  the output grid, possibly flipped, permuted, cropped or rescaled — the usual case, the
  elastic stage last in the chain): the B-spline is separable along the row. The 4 x 4
  control planes across the row are contracted once per row into a line of coefficients; the
  weights along the row are computed once per call when they repeat (``P`` diagonal); each
  voxel then costs 12 products;
* the row crosses the grid obliquely (a rotation between the frame and the output): while it
  stays in one grid cell, ``D`` along it is a polynomial of degree 9 in ``x``, built once per
  cell crossed (:func:`~ctflow.kernels.warp_field._segment`, ~2000 products) and evaluated by
  Horner's rule (27 products per voxel); when cells are shorter than :data:`MIN_SEGMENT` voxels
  along the row, each voxel sums its 64 control points instead.

Geometry and displacements are float64 scalars (exactness of the affine cases, sub-1e-6 voxel
agreement with ITK); coefficient arrays and contracted lines are float32; no array larger than
a row or the (padded) control grid is allocated.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ctflow.kernels.warp_field import (
    PAD,
    _cell,
    _displacement,
    _padded,
    _row_line,
    _segment,
    _weights,
)

__all__ = ["MIN_SEGMENT", "row_axis"]

#: ``|P[a, 2]| * n_x / grid_step[a]`` below this counts as 0 when looking for the row's frame
#: axis (rotations by multiples of 90 degrees leave ~1e-16 in the matrices).
_ALIGN_TOL = 1e-9

#: The general path builds a segment polynomial when segments are this long on average (in
#: voxels) at least; shorter ones (control points closer than this) sum 64 points per voxel.
MIN_SEGMENT = 8.0


@numba.njit(nogil=True, cache=True)
def row_axis(p, grid_step, nxo):
    """Return the frame axis an output row runs along (``P[:, 2]`` non-zero there only), or -1."""
    small = np.empty(3, dtype=np.bool_)
    for a in range(3):
        small[a] = abs(p[a, 2]) * max(nxo, 1) / grid_step[a] < _ALIGN_TOL
    if small[0] and small[1]:
        return 2
    if small[0] and small[2]:
        return 1
    if small[1] and small[2]:
        return 0
    return -1


@numba.njit(nogil=True, cache=True)
def _workspace(nxo):
    """Return the scratch of one call: :func:`_segment`'s arrays and the row weight tables."""
    g = np.zeros((3, 4, 4))
    e = np.zeros((3, 4, 4, 4))
    f = np.zeros((3, 4, 7))
    poly = np.zeros((3, 10))
    cells = np.zeros(6, dtype=np.int64)
    wtab = np.zeros((4, nxo))
    ktab = np.zeros(nxo, dtype=np.int64)
    return (g, e, f, poly, cells), wtab, ktab


@numba.njit(nogil=True, cache=True)
def _row_sources(p, q, cp, axis, order, go, gs, z, y, sbuf, scratch):
    """Fill ``sbuf`` (3, nx) with the source indices of output row ``(z, y)``."""
    line, ws, wtab, ktab, last = scratch
    nxo = sbuf.shape[1]
    b0 = p[0, 0] * z + p[0, 1] * y + p[0, 3]  # frame point of x = 0
    b1 = p[1, 0] * z + p[1, 1] * y + p[1, 3]
    b2 = p[2, 0] * z + p[2, 1] * y + p[2, 3]
    e0 = p[0, 2]
    e1 = p[1, 2]
    e2 = p[2, 2]
    if axis < 0:
        _general_row(cp, order, go, gs, b0, b1, b2, e0, e1, e2, sbuf, q, ws)
        return
    # the row runs along frame axis ``axis``: the two others are constant along it
    a0 = 1 if axis == 0 else 0
    a1 = 1 if axis == 2 else 2
    base = (b0, b1, b2)
    inside = _row_line(cp, (base[a0] - go[a0]) / gs[a0], (base[a1] - go[a1]) / gs[a1], line)
    if inside:
        u_start = (base[axis] - go[axis]) / gs[axis]
        if u_start != last[0]:  # weights along the row (the same on every row when P is diagonal)
            last[0] = u_start
            u_step = (e0 if axis == 0 else (e1 if axis == 1 else e2)) / gs[axis]
            n2 = cp.shape[3] - 2 * PAD
            for x in range(nxo):
                k, t = _cell(u_start + u_step * x, n2)
                if k < 0:  # outside the support along the row: weights 0
                    ktab[x] = 0
                    for m in range(4):
                        wtab[m, x] = 0.0
                else:
                    ktab[x] = k
                    w0, w1, w2, w3 = _weights(t)
                    wtab[0, x] = w0
                    wtab[1, x] = w1
                    wtab[2, x] = w2
                    wtab[3, x] = w3
        for x in range(nxo):
            k = ktab[x]
            w0 = wtab[0, x]
            w1 = wtab[1, x]
            w2 = wtab[2, x]
            w3 = wtab[3, x]
            f0 = (
                b0
                + e0 * x
                + (
                    w0 * line[0, k]
                    + w1 * line[0, k + 1]
                    + w2 * line[0, k + 2]
                    + w3 * line[0, k + 3]
                )
            )
            f1 = (
                b1
                + e1 * x
                + (
                    w0 * line[1, k]
                    + w1 * line[1, k + 1]
                    + w2 * line[1, k + 2]
                    + w3 * line[1, k + 3]
                )
            )
            f2 = (
                b2
                + e2 * x
                + (
                    w0 * line[2, k]
                    + w1 * line[2, k + 1]
                    + w2 * line[2, k + 2]
                    + w3 * line[2, k + 3]
                )
            )
            sbuf[0, x] = q[0, 0] * f0 + q[0, 1] * f1 + q[0, 2] * f2 + q[0, 3]
            sbuf[1, x] = q[1, 0] * f0 + q[1, 1] * f1 + q[1, 2] * f2 + q[1, 3]
            sbuf[2, x] = q[2, 0] * f0 + q[2, 1] * f1 + q[2, 2] * f2 + q[2, 3]
        return
    for x in range(nxo):
        f0 = b0 + e0 * x
        f1 = b1 + e1 * x
        f2 = b2 + e2 * x
        sbuf[0, x] = q[0, 0] * f0 + q[0, 1] * f1 + q[0, 2] * f2 + q[0, 3]
        sbuf[1, x] = q[1, 0] * f0 + q[1, 1] * f1 + q[1, 2] * f2 + q[1, 3]
        sbuf[2, x] = q[2, 0] * f0 + q[2, 1] * f1 + q[2, 2] * f2 + q[2, 3]


@numba.njit(nogil=True, cache=True)
def _general_row(cp, order, go, gs, b0, b1, b2, e0, e1, e2, sbuf, q, ws):
    """Fill the sources of a row crossing the grid obliquely: a polynomial per grid cell.

    ``cp``'s array axes 1..3 are the frame axes ``order``.
    """
    nxo = sbuf.shape[1]
    r0 = 1.0 / gs[0]
    r1 = 1.0 / gs[1]
    r2 = 1.0 / gs[2]
    beta = np.empty(3)
    for m in range(3):
        a = order[m]
        v = (e0 if a == 0 else (e1 if a == 1 else e2)) / gs[a]
        beta[m] = 0.0 if abs(v) * max(nxo, 1) < _ALIGN_TOL else v
    fastest = max(abs(beta[0]), abs(beta[1]), abs(beta[2]))
    direct = fastest * MIN_SEGMENT > 1.0
    poly = ws[3]
    u = np.empty(3)  # grid coordinates, frame order
    up = np.empty(3)  # the same in cp's order
    c0 = c1 = c2 = math.nan
    x_start = 0
    degree = 0
    for x in range(nxo):
        f0 = b0 + e0 * x
        f1 = b1 + e1 * x
        f2 = b2 + e2 * x
        u[0] = (f0 - go[0]) * r0
        u[1] = (f1 - go[1]) * r1
        u[2] = (f2 - go[2]) * r2
        if direct:
            d0, d1, d2 = _displacement(cp, u[order[0]], u[order[1]], u[order[2]])
        else:
            k0 = math.floor(u[0])
            k1 = math.floor(u[1])
            k2 = math.floor(u[2])
            if k0 != c0 or k1 != c1 or k2 != c2:  # a new cell: a new polynomial
                c0, c1, c2 = k0, k1, k2
                x_start = x
                for m in range(3):
                    up[m] = u[order[m]]
                degree = _segment(cp, up, beta, ws)
            tau = float(x - x_start)
            d0 = poly[0, degree]
            d1 = poly[1, degree]
            d2 = poly[2, degree]
            for d in range(degree - 1, -1, -1):
                d0 = d0 * tau + poly[0, d]
                d1 = d1 * tau + poly[1, d]
                d2 = d2 * tau + poly[2, d]
        f0 += d0
        f1 += d1
        f2 += d2
        sbuf[0, x] = q[0, 0] * f0 + q[0, 1] * f1 + q[0, 2] * f2 + q[0, 3]
        sbuf[1, x] = q[1, 0] * f0 + q[1, 1] * f1 + q[1, 2] * f2 + q[1, 3]
        sbuf[2, x] = q[2, 0] * f0 + q[2, 1] * f1 + q[2, 2] * f2 + q[2, 3]


@numba.njit(nogil=True, cache=True)
def _prepare(p, coef, grid_step, nxo):
    """Return the row axis, the frame axes of ``cp``'s axes 1..3, ``cp`` and the scratch."""
    axis = row_axis(p, grid_step, nxo)
    order = np.empty(3, dtype=np.int64)
    if axis < 0:  # by increasing |beta|: the slowest-varying axis is contracted first
        speed = np.empty(3)
        for a in range(3):
            speed[a] = abs(p[a, 2]) / grid_step[a]
        order[:] = np.argsort(speed, kind="mergesort")
    else:
        order[0] = 1 if axis == 0 else 0
        order[1] = 1 if axis == 2 else 2
        order[2] = axis
    cp = _padded(coef, order[0], order[1], order[2])
    line = np.zeros((3, cp.shape[3]), dtype=np.float32)
    ws, wtab, ktab = _workspace(nxo)
    last = np.full(1, np.nan)
    return axis, order, cp, (line, ws, wtab, ktab, last)
