"""numba kernels of the one-pass geometric resampling: affine, elastic, affine (loops only).

Every output voxel ``o = (z, y, x)`` takes the source at the continuous index ``s``::

    p = P[:, :3] @ o + P[:, 3]          output index -> frame point (mm), P is 3x4 float64
    p = p + D(p)                        the elastic stage, when coefficients are given
    s = Q[:, :3] @ p + Q[:, 3]          frame point -> source index, Q is 3x4 float64

``D`` is a uniform cubic B-spline displacement field (mm, components along the frame axes
0, 1, 2): control point ``(i, j, k)`` sits at ``grid_origin + (i, j, k) * grid_step`` and
carries ``coef[:, i, j, k]``; with ``u = (p - grid_origin) / grid_step``::

    D(p) = sum_{i, j, k} B(u_0 - i) B(u_1 - j) B(u_2 - k) coef[:, i, j, k]

over the 4 x 4 x 4 control points around ``p`` (``B`` the cubic B-spline, support ``(-2, 2)``).
Control points outside the grid count as zero coefficients: the field fades to 0 over the two
control spacings beyond the grid, and is 0 further out. (ITK's ``BSplineTransform`` instead
returns 0 as soon as any of the 64 control points is missing; both agree wherever the support
is complete, which :func:`ctflow.ops.warp.random_elastic_field` ensures on the whole volume.)

Sampling follows :mod:`ctflow.kernels.affine` exactly: a source is inside when it lies in ``[-0.5, n
- 0.5)`` on every axis (``cval`` elsewhere); trilinear sampling clamps a source within half a voxel
of the edge onto the edge voxels' centres; nearest takes ``floor(s + 0.5 + 1e-9)`` (ITK's rule,
robust to a tie computed a hair below .5, as :mod:`ctflow.kernels.affine`); integer outputs of the
linear kernel are rounded half away from zero. Only output planes ``z0 <= z < z1`` are written, so
callers split the work across threads. Without coefficients (``coef`` of zero size) the kernels
*are* :func:`~ctflow.kernels.affine.affine_linear` / :func:`~ctflow.kernels.affine.affine_nearest`
with ``M = Q o P``.

No displacement field is ever stored: ``D`` is evaluated exactly at every voxel, one output row
at a time, into a row of source indices that the sampling loop then reads:

* the row runs along a single frame axis (``P[:, 2]`` has one non-zero entry: the frame is
  the output grid, possibly flipped, permuted, cropped or rescaled — the usual case, the
  elastic stage last in the chain): the B-spline is separable along the row. The 4 x 4
  control planes across the row are contracted once per row into a line of coefficients; the
  weights along the row are computed once per call when they repeat (``P`` diagonal); each
  voxel then costs 12 products;
* the row crosses the grid obliquely (a rotation between the frame and the output): while it
  stays in one grid cell, ``D`` along it is a polynomial of degree 9 in ``x``, built once per
  cell crossed (:func:`_segment`, ~2000 products) and evaluated by Horner's rule (27 products
  per voxel); when cells are shorter than :data:`MIN_SEGMENT` voxels along the row, each voxel
  sums its 64 control points instead.

Geometry and displacements are float64 scalars (exactness of the affine cases, sub-1e-6 voxel
agreement with ITK); coefficient arrays and contracted lines are float32; no array larger than
a row or the (padded) control grid is allocated.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ctflow.kernels.affine import affine_linear, affine_nearest

__all__ = [
    "MIN_SEGMENT",
    "PAD",
    "bspline_displacement",
    "compose",
    "row_axis",
    "warp_linear",
    "warp_nearest",
]

#: Zero control points added around the grid on each side: a point with any control point of
#: the grid in its support reads only the padded array (indices ``floor(u) - 1 .. + 2``).
PAD = 3

#: ``|P[a, 2]| * n_x / grid_step[a]`` below this counts as 0 when looking for the row's frame
#: axis (rotations by multiples of 90 degrees leave ~1e-16 in the matrices).
_ALIGN_TOL = 1e-9
_HALF = 0.5 + 1e-9  # the nearest rounding of ctflow.kernels.affine

_SIXTH = 1.0 / 6.0


@numba.njit(nogil=True, cache=True)
def _weights(t):
    """Cubic B-spline weights of the control points ``k-1, k, k+1, k+2`` at ``u = k + t``."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    w3 = t3 * _SIXTH
    w0 = s * s * s * _SIXTH
    w1 = 0.5 * t3 - t2 + 2.0 / 3.0
    return w0, w1, 1.0 - w0 - w1 - w3, w3


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
def _padded(coef, a0, a1, a2):
    """Coefficients with :data:`PAD` zeros around, frame axes ``a0, a1, a2`` as array axes 1..3.

    The component axis (0) keeps the frame order: ``out[c]`` is the displacement along frame
    axis ``c`` whatever the permutation.
    """
    n = coef.shape[1:]
    n0, n1, n2 = n[a0], n[a1], n[a2]
    out = np.zeros((3, n0 + 2 * PAD, n1 + 2 * PAD, n2 + 2 * PAD), dtype=np.float32)
    idx = np.empty(3, dtype=np.int64)
    for i in range(n0):
        idx[a0] = i
        for j in range(n1):
            idx[a1] = j
            for k in range(n2):
                idx[a2] = k
                for c in range(3):
                    out[c, i + PAD, j + PAD, k + PAD] = coef[c, idx[0], idx[1], idx[2]]
    return out


@numba.njit(nogil=True, cache=True)
def _cell(u, n):
    """Return the padded index of the first of the 4 control points around ``u`` (-1: none)."""
    f = math.floor(u)
    if not (-2.0 <= f <= n):  # also catches NaN
        return -1, 0.0
    return int(f) - 1 + PAD, u - f


@numba.njit(nogil=True, cache=True)
def _displacement(cp, u0, u1, u2):
    """``D`` at grid coordinates ``(u0, u1, u2)`` from padded coefficients (64 control points)."""
    n0 = cp.shape[1] - 2 * PAD
    n1 = cp.shape[2] - 2 * PAD
    n2 = cp.shape[3] - 2 * PAD
    i0, t0 = _cell(u0, n0)
    i1, t1 = _cell(u1, n1)
    i2, t2 = _cell(u2, n2)
    if i0 < 0 or i1 < 0 or i2 < 0:
        return 0.0, 0.0, 0.0
    w0 = _weights(t0)
    w1 = _weights(t1)
    x0, x1, x2, x3 = _weights(t2)
    d0 = 0.0
    d1 = 0.0
    d2 = 0.0
    for i in range(4):
        for j in range(4):
            w = w0[i] * w1[j]
            r = i0 + i
            s = i1 + j
            d0 += w * (
                x0 * cp[0, r, s, i2]
                + x1 * cp[0, r, s, i2 + 1]
                + x2 * cp[0, r, s, i2 + 2]
                + x3 * cp[0, r, s, i2 + 3]
            )
            d1 += w * (
                x0 * cp[1, r, s, i2]
                + x1 * cp[1, r, s, i2 + 1]
                + x2 * cp[1, r, s, i2 + 2]
                + x3 * cp[1, r, s, i2 + 3]
            )
            d2 += w * (
                x0 * cp[2, r, s, i2]
                + x1 * cp[2, r, s, i2 + 1]
                + x2 * cp[2, r, s, i2 + 2]
                + x3 * cp[2, r, s, i2 + 3]
            )
    return d0, d1, d2


@numba.njit(nogil=True, cache=True)
def bspline_displacement(coef, grid_origin, grid_step, points):
    """Return ``D`` (float64, mm, frame axes) at ``points`` (n, 3) frame positions (mm)."""
    n = points.shape[0]
    out = np.zeros((n, 3), dtype=np.float64)
    if coef.size == 0:
        return out
    cp = _padded(coef, 0, 1, 2)
    for k in range(n):
        d = _displacement(
            cp,
            (points[k, 0] - grid_origin[0]) / grid_step[0],
            (points[k, 1] - grid_origin[1]) / grid_step[1],
            (points[k, 2] - grid_origin[2]) / grid_step[2],
        )
        out[k, 0] = d[0]
        out[k, 1] = d[1]
        out[k, 2] = d[2]
    return out


@numba.njit(nogil=True, cache=True)
def _row_line(cp, u0, u1, line):
    """Contract the 4 x 4 control planes around ``(u0, u1)`` into ``line`` (3, n2 + 2 PAD).

    Return False (``line`` untouched) when the row is outside the grid's support.
    """
    i0, t0 = _cell(u0, cp.shape[1] - 2 * PAD)
    i1, t1 = _cell(u1, cp.shape[2] - 2 * PAD)
    if i0 < 0 or i1 < 0:
        return False
    w0 = _weights(t0)
    w1 = _weights(t1)
    m = line.shape[1]
    line[:, :] = 0.0
    for i in range(4):
        for j in range(4):
            w = np.float32(w0[i] * w1[j])
            for c in range(3):
                for k in range(m):
                    line[c, k] += w * cp[c, i0 + i, i1 + j, k]
    return True


#: Power-basis coefficients of the four cubic B-spline weights: ``w_m(t) = sum_d W[m, d] t^d``.
_W = np.array(
    [
        [1.0 / 6.0, -0.5, 0.5, -1.0 / 6.0],
        [2.0 / 3.0, 0.0, -1.0, 0.5],
        [1.0 / 6.0, 0.5, 0.5, -0.5],
        [0.0, 0.0, 0.0, 1.0 / 6.0],
    ]
)

#: The general path builds a segment polynomial when segments are this long on average (in
#: voxels) at least; shorter ones (control points closer than this) sum 64 points per voxel.
MIN_SEGMENT = 8.0


@numba.njit(nogil=True, cache=True)
def _segment(cp, u, beta, ws):
    """Fill ``ws[3]`` (3, 10) with ``D`` along a row from grid point ``u`` on: a polynomial.

    While the row stays in the grid cell of ``u``, ``D`` at ``u + beta * tau`` is a polynomial
    in ``tau`` (a product of three cubics per control point; an axis with ``beta = 0`` adds
    degree 0). It is built by contracting the control points one array axis at a time, weight
    polynomials times coefficients; ``cp``'s axes are ordered by increasing ``|beta|`` so the
    first contraction (the one over all 64 points) has the lowest degree. Return the degree.
    """
    poly = ws[3]
    poly[:] = 0.0
    n = cp.shape
    start = ws[4][:3]
    deg = ws[4][3:]
    g = ws[0]  # (3, 4, 4): array axis, weight m, power of tau
    for a in range(3):
        k, t = _cell(u[a], n[a + 1] - 2 * PAD)
        if k < 0:
            return 0
        start[a] = k
        b = beta[a]
        deg[a] = 0 if b == 0.0 else 3
        for m in range(4):
            c0, c1, c2, c3 = _W[m, 0], _W[m, 1], _W[m, 2], _W[m, 3]
            g[a, m, 0] = c0 + t * (c1 + t * (c2 + t * c3))
            g[a, m, 1] = (c1 + t * (2.0 * c2 + 3.0 * c3 * t)) * b
            g[a, m, 2] = (c2 + 3.0 * c3 * t) * b * b
            g[a, m, 3] = c3 * b * b * b
    e = ws[1]  # (3, 4, 4, 4): array axis 1 contracted
    f = ws[2]  # (3, 4, 7): array axes 1 and 2 contracted
    s0, s1, s2 = start[0], start[1], start[2]
    d0, d1, d2 = deg[0], deg[1], deg[2]
    for c in range(3):
        for j in range(4):
            for k in range(4):
                for d in range(d0 + 1):
                    v = 0.0
                    for i in range(4):
                        v += g[0, i, d] * cp[c, s0 + i, s1 + j, s2 + k]
                    e[c, j, k, d] = v
        for k in range(4):
            for d in range(d0 + d1 + 1):
                f[c, k, d] = 0.0
            for j in range(4):
                for d in range(d0 + 1):
                    v = e[c, j, k, d]
                    for d2_ in range(d1 + 1):
                        f[c, k, d + d2_] += v * g[1, j, d2_]
        for k in range(4):
            for d in range(d0 + d1 + 1):
                v = f[c, k, d]
                for d2_ in range(d2 + 1):
                    poly[c, d + d2_] += v * g[2, k, d2_]
    return d0 + d1 + d2


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
                # helper (even
                # inline="always") measured random_affine 0.25 -> 0.28 s, random_elastic
                # 0.38 -> 0.57 s (2026-12-05)
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
