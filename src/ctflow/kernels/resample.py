"""numba kernels for separable resampling of a (z, y, x) volume (loops only, no validation).

The caller (:mod:`ctflow.ops.resample`) describes the resampling with per-axis *tap tables*:
for an output index ``k`` along an axis, ``idx[k, t]`` is a source index (already inside the
source, padding applied) and ``w[k, t]`` its float32 weight, for ``t < taps`` (1 tap for nearest,
2 for linear, 4 for cubic B-spline). ``inside[k]`` (float32) is the weight of the source signal
against the constant ``cval`` for ``padding="constant"`` (1 inside the source, falling to 0
outside); the value of output voxel ``(k, j, i)`` is::

    v = sum_{a, b, c} wz[k, a] * wy[j, b] * wx[i, c] * src[iz[k, a], iy[j, b], ix[i, c]]
    w = inside_z[k] * inside_y[j] * inside_x[i]
    out = v * w + cval * (1 - w)          # only when ``blend`` is true

Interpolating kernels compute in float32, whatever the source dtype. With ``round_out`` true the
value is rounded half away from zero and clipped to ``[lo, hi]`` before it is stored (integer
outputs). Every kernel fills only output slices ``z0 <= k < z1``, so callers can split the work
across threads; a voxel's value does not depend on the split.

:func:`resample_separable` is the general kernel: it resamples each needed source slice in x
then y into a small cache of float32 planes (each source slice once), then blends planes along
z. Index tables are unsigned (``uint64``), which spares numba's negative-index test in the
gathers.

:func:`resample_nearest` gathers (order 0, dtype preserved). :func:`bspline_prefilter` turns
samples into cubic B-spline coefficients in place (mirror boundary, as scipy/ITK), and
:func:`gaussian_axis` smooths one axis in place (anti-aliasing before downsampling).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "ROW_GROUP",
    "bspline_prefilter",
    "gaussian_axis",
    "resample_nearest",
    "resample_separable",
]


@numba.njit(nogil=True, cache=True, inline="always")
def _round_clip(v, lo, hi):
    """Round half away from zero and clip to ``[lo, hi]`` (float64 result, integral)."""
    w = np.float64(v)
    if w >= 0.0:
        w = np.floor(w + 0.5)
    else:
        w = -np.floor(0.5 - w)
    if w < lo:
        w = lo
    elif w > hi:
        w = hi
    return w


#: float32 holds every integer and every half-integer of magnitude below ``2**22``
_EXACT_F32 = 4194304.0


@numba.njit(nogil=True, cache=True, inline="always")
def _round_clip_f32(o, acc, lo, hi):
    """``o[i] = _round_clip(acc[i], lo, hi)`` for float32 ``acc``, integral ``|lo|, |hi| <= 2**22``.

    Clip first (the bounds are integers: same result), then truncate and step by the
    fraction, all exact in float32 for ``|v| <= 2**22``: compares and selects only, so the
    loop vectorises (``floor`` with a sign branch does not). A NaN
    stores whatever the integer conversion makes of it, as ``_round_clip``.
    """
    half = np.float32(0.5)
    for i in range(o.shape[0]):
        v = min(max(acc[i], lo), hi)
        k = np.int32(v)
        f = v - np.float32(k)
        o[i] = k + np.int32(f >= half) - np.int32(f <= -half)


@numba.njit(nogil=True, cache=True)
def resample_nearest(src, out, iz, iy, ix, inz, iny, inx, cval, round_out, lo, hi, z0, z1):
    """Nearest-neighbour gather into output slices ``z0 <= k < z1``.

    ``iz``/``iy``/``ix`` are 1-D source indices; ``inz``/``iny``/``inx`` are 1 where the sample
    is inside the source and 0 where ``cval`` is stored (all ones unless padding is constant).
    """
    ny = out.shape[1]
    nx = out.shape[2]
    for k in range(z0, z1):
        for j in range(ny):
            o = out[k, j]
            if inz[k] == 0 or iny[j] == 0:
                for i in range(nx):
                    o[i] = cval
                continue
            row = src[iz[k], iy[j]]
            if round_out:
                for i in range(nx):
                    if inx[i] == 0:
                        o[i] = cval
                    else:
                        o[i] = _round_clip(row[ix[i]], lo, hi)
            else:
                for i in range(nx):
                    if inx[i] == 0:
                        o[i] = cval
                    else:
                        o[i] = row[ix[i]]


@numba.njit(nogil=True, cache=True)
def _x_pass(src, s, tmp, row_used, xi, xw):
    """Resample every used row of source slice ``s`` along x into ``tmp`` (Y, nx) float32."""
    nx = tmp.shape[1]
    tx = xi.shape[1]
    for y in range(src.shape[1]):
        if not row_used[y]:
            continue
        row = src[s, y]
        t_row = tmp[y]
        if tx == 2:
            for i in range(nx):
                t_row[i] = xw[i, 0] * np.float32(row[xi[i, 0]]) + xw[i, 1] * np.float32(
                    row[xi[i, 1]]
                )
        else:
            for i in range(nx):
                v = np.float32(0.0)
                for t in range(tx):
                    v += xw[i, t] * np.float32(row[xi[i, t]])
                t_row[i] = v


@numba.njit(nogil=True, cache=True)
def _y_pass(tmp, plane, yi, yw):
    """Blend rows of ``tmp`` (Y, nx) along y into ``plane`` (ny, nx)."""
    ny = plane.shape[0]
    nx = plane.shape[1]
    ty = yi.shape[1]
    for j in range(ny):
        p = plane[j]
        w0 = yw[j, 0]
        r0 = tmp[yi[j, 0]]
        if ty == 2 and yw[j, 1] != 0:
            w1 = yw[j, 1]
            r1 = tmp[yi[j, 1]]
            for i in range(nx):
                p[i] = w0 * r0[i] + w1 * r1[i]
            continue
        for i in range(nx):
            p[i] = w0 * r0[i]
        for t in range(1, ty):
            w = yw[j, t]
            if w == 0:
                continue
            r = tmp[yi[j, t]]
            for i in range(nx):
                p[i] += w * r[i]


@numba.njit(nogil=True, cache=True)
def _store_row(o, acc, wzy, inx, blend, cval, round_out, lo, hi):
    """Write one output row from the float32 accumulator (blend with cval, round, clip)."""
    nx = o.shape[0]
    if blend:
        c = np.float32(cval)
        for i in range(nx):
            w = wzy * inx[i]
            acc[i] = acc[i] * w + c * (np.float32(1.0) - w)
    if round_out and lo >= -_EXACT_F32 and hi <= _EXACT_F32:
        _round_clip_f32(o, acc, np.float32(lo), np.float32(hi))
    elif round_out:
        for i in range(nx):
            o[i] = _round_clip(acc[i], lo, hi)
    else:
        for i in range(nx):
            o[i] = acc[i]


@numba.njit(nogil=True, cache=True)
def resample_separable(
    src, out, zi, zw, yi, yw, xi, xw, inz, iny, inx, blend, cval, round_out, lo, hi, z0, z1
):
    """Separable resampling (any number of taps) into output slices ``z0 <= k < z1``.

    Source slices are resampled in x then y once each into a small cache of float32 planes;
    an output slice is the z-weighted sum of the cached planes of its taps.
    """
    ny = out.shape[1]
    nx = out.shape[2]
    tz = zi.shape[1]
    n_rows = src.shape[1]
    row_used = np.zeros(n_rows, np.bool_)
    for j in range(ny):
        for t in range(yi.shape[1]):
            if yw[j, t] != 0:
                row_used[yi[j, t]] = True
    n_cache = 2 * tz
    planes = np.empty((n_cache, ny, nx), np.float32)
    slot_src = np.full(n_cache, -1, np.int64)
    slot_age = np.zeros(n_cache, np.int64)
    tmp = np.zeros((n_rows, nx), np.float32)
    acc = np.empty(nx, np.float32)
    slots = np.full(tz, -1, np.int64)
    clock = 0
    for k in range(z0, z1):
        for t in range(tz):
            slots[t] = -1
        for t in range(tz):
            if zw[k, t] == 0:
                continue
            s = np.int64(zi[k, t])
            found = -1
            for c in range(n_cache):
                if slot_src[c] == s:
                    found = c
                    break
            if found < 0:
                best_age = clock + 1
                for c in range(n_cache):
                    busy = False
                    for u in range(t):
                        if slots[u] == c:
                            busy = True
                    if not busy and slot_age[c] < best_age:
                        best_age = slot_age[c]
                        found = c
                _x_pass(src, s, tmp, row_used, xi, xw)
                _y_pass(tmp, planes[found], yi, yw)
                slot_src[found] = s
            clock += 1
            slot_age[found] = clock
            slots[t] = found
        for j in range(ny):
            first = True
            for t in range(tz):
                if slots[t] < 0:
                    continue
                w = zw[k, t]
                p = planes[slots[t], j]
                if first:
                    for i in range(nx):
                        acc[i] = w * p[i]
                    first = False
                else:
                    for i in range(nx):
                        acc[i] += w * p[i]
            if first:  # every z weight is 0 (cannot happen with valid tables)
                acc[:] = 0
            _store_row(out[k, j], acc, inz[k] * iny[j], inx, blend, cval, round_out, lo, hi)


#: Rows of a contiguous-axis filter processed together (transposed into a small block so the
#: recursion / convolution is vectorised over them).
ROW_GROUP = 16


@numba.njit(nogil=True, cache=True)
def _prefilter_block(blk, z, horizon):
    """B-spline recursion along axis 0 of ``blk`` (n, m) float32, vectorised over axis 1."""
    n = blk.shape[0]
    m = blk.shape[1]
    gain = (1.0 - z) * (1.0 - 1.0 / z)
    zf = np.float32(z)
    g = np.float32(gain)
    # causal initialisation (mirror boundary)
    if n <= horizon:
        zn = z ** (n - 1)
        iz = 1.0 / z
        z2n = zn * zn * iz
        for q in range(m):
            s = np.float64(blk[0, q]) + zn * np.float64(blk[n - 1, q])
            zk = z
            z2 = z2n
            for k in range(1, n - 1):
                s += (zk + z2) * np.float64(blk[k, q])
                zk *= z
                z2 *= iz
            blk[0, q] = np.float32(s / (1.0 - zn * zn)) * g
    else:
        for q in range(m):
            s = np.float64(blk[0, q])
            zk = z
            for k in range(1, horizon):
                s += zk * np.float64(blk[k, q])
                zk *= z
            blk[0, q] = np.float32(s) * g
    for k in range(1, n):
        for q in range(m):
            blk[k, q] = blk[k, q] * g + zf * blk[k - 1, q]
    # anti-causal initialisation and recursion
    a = np.float32(z / (z * z - 1.0))
    for q in range(m):
        blk[n - 1, q] = a * (blk[n - 1, q] + zf * blk[n - 2, q])
    for k in range(n - 2, -1, -1):
        for q in range(m):
            blk[k, q] = zf * (blk[k + 1, q] - blk[k, q])


@numba.njit(nogil=True, cache=True)
def bspline_prefilter(c, pole, horizon):
    """Cubic B-spline coefficients along the middle axis of ``c`` (outer, n, inner), in place.

    Causal then anti-causal recursive filtering with ``pole`` (``sqrt(3) - 2``) and mirror
    (whole-sample symmetric) boundaries, as Unser / scipy / ITK; the causal initial value sums
    ``horizon`` terms (exact when ``n <= horizon``). Vectorised over the ``inner`` axis, or over
    groups of :data:`ROW_GROUP` rows when ``inner`` is small (the contiguous x axis).
    """
    n = c.shape[1]
    inner = c.shape[2]
    if n < 2:
        return
    if inner >= ROW_GROUP:
        for o in range(c.shape[0]):
            _prefilter_block(c[o], pole, horizon)
        return
    buf = np.empty((n, ROW_GROUP * inner), np.float32)
    for o0 in range(0, c.shape[0], ROW_GROUP):
        o1 = min(o0 + ROW_GROUP, c.shape[0])
        for o in range(o0, o1):
            for k in range(n):
                for q in range(inner):
                    buf[k, (o - o0) * inner + q] = c[o, k, q]
        _prefilter_block(buf[:, : (o1 - o0) * inner], pole, horizon)
        for o in range(o0, o1):
            for k in range(n):
                for q in range(inner):
                    c[o, k, q] = buf[k, (o - o0) * inner + q]


@numba.njit(nogil=True, cache=True)
def _gauss_ring(blk, weights, ring):
    """Convolve axis 0 of ``blk`` (n, m) in place with mirrored ends, row by row.

    The original values of the last ``2r + 1`` rows are kept in ``ring`` (2r + 1, m); the
    arithmetic is vectorised over whole rows.
    """
    n = blk.shape[0]
    n_w = weights.shape[0]
    r = (n_w - 1) // 2
    period = 2 * (n - 1)
    for k in range(n):
        ring[k % n_w] = blk[k]
        out = blk[k]
        out[:] = 0
        for t in range(n_w):
            mm = k + t - r
            if n == 1:
                mm = 0
            else:
                mm = mm % period
                if mm > n - 1:
                    mm = period - mm
            w = weights[t]
            # rows <= k were overwritten: their originals are in the ring (mm >= k - 2r)
            row = ring[mm % n_w] if mm <= k else blk[mm]
            for q in range(out.shape[0]):
                out[q] += w * row[q]


@numba.njit(nogil=True, cache=True)
def gaussian_axis(c, weights):
    """Convolve the middle axis of ``c`` (outer, n, inner) float32 in place with ``weights``.

    ``weights`` (2r + 1,) is centred; samples beyond the ends are mirrored without repeating
    the edge (numpy "reflect", scipy "mirror"). Wide ``inner``: whole rows, with the originals
    of the last ``2r + 1`` rows kept in a ring buffer; small ``inner`` (the contiguous x axis):
    one mirrored, padded line at a time. No volume-sized temporary either way.
    """
    n = c.shape[1]
    inner = c.shape[2]
    r = (weights.shape[0] - 1) // 2
    if inner >= ROW_GROUP:
        ring = np.empty((2 * r + 1, inner), np.float32)
        for o in range(c.shape[0]):
            _gauss_ring(c[o], weights, ring)
        return
    # small inner (the contiguous x axis): one padded line at a time, vectorised along it
    line = np.empty(n + 2 * r, np.float32)
    acc = np.empty(n, np.float32)
    period = 2 * (n - 1)
    for o in range(c.shape[0]):
        for q in range(inner):
            for k in range(n):
                line[k + r] = c[o, k, q]
            for k in range(r):  # mirrored ends
                for kk in (k, n + r + k):
                    m = 0
                    if n > 1:
                        m = (kk - r) % period
                        if m > n - 1:
                            m = period - m
                    line[kk] = line[m + r]
            acc[:] = 0
            for t in range(weights.shape[0]):
                w = weights[t]
                for k in range(n):
                    acc[k] += w * line[k + t]
            for k in range(n):
                c[o, k, q] = acc[k]
