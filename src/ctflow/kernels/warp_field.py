"""numba kernels of the warp's B-spline displacement field ``D`` (loops only).

``D`` is a uniform cubic B-spline displacement field (mm, components along the frame axes
0, 1, 2): control point ``(i, j, k)`` sits at ``grid_origin + (i, j, k) * grid_step`` and
carries ``coef[:, i, j, k]``; with ``u = (p - grid_origin) / grid_step``::

    D(p) = sum_{i, j, k} B(u_0 - i) B(u_1 - j) B(u_2 - k) coef[:, i, j, k]

over the 4 x 4 x 4 control points around ``p`` (``B`` the cubic B-spline, support ``(-2, 2)``).
Control points outside the grid count as zero coefficients: the field fades to 0 over the two
control spacings beyond the grid, and is 0 further out. (ITK's ``BSplineTransform`` instead
returns 0 as soon as any of the 64 control points is missing; both agree wherever the support
is complete, which :func:`ctflow.ops.warp.random_elastic_field` ensures on the whole volume.)

:func:`bspline_displacement` evaluates ``D`` at given points. The row helpers :func:`_row_line`
(the 4 x 4 control planes around a row contracted into a line of coefficients) and
:func:`_segment` (``D`` along a row within one grid cell, as a polynomial) serve
:mod:`ctflow.kernels.warp_rows`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["PAD", "bspline_displacement"]

#: Zero control points added around the grid on each side: a point with any control point of
#: the grid in its support reads only the padded array (indices ``floor(u) - 1 .. + 2``).
PAD = 3

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
