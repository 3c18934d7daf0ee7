"""numba kernels for a separable 3-D Gaussian blur in float32 (loops only, no validation).

:func:`ctflow.ops.intensity_random.gaussian_blur` blurs a volume with three 1-D symmetric
kernels (``w[0]`` the centre tap, ``w[k]`` the taps at ``+-k``), borders repeating the edge
voxel (``mode="nearest"``), in two passes that can each be split across threads:

1. :func:`blur_xy` (a range ``[z0, z1)`` of planes): each plane is blurred along x (a row
   copied into an edge-padded buffer) into a plane buffer, then along y into ``out``.
2. :func:`blur_z` (a range ``[y0, y1)`` of rows): the slab ``out[:, y, :]`` is copied into a
   buffer and blurred along z back into ``out`` (in place, nothing full-size is allocated).

Sums are float32, taps folded in pairs (``w[k] * (left + right)``) in a fixed order, and the
inner loops run over x (contiguous, independent): they vectorise, and the result does not
depend on how the volume is split.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["blur_xy", "blur_z"]


@numba.njit(nogil=True, cache=True)
def _row_x(src_row, dst_row, pad, wx):
    """``dst_row = src_row`` blurred along its length by ``wx`` (edge repeated), float32."""
    nx = src_row.shape[0]
    r = wx.shape[0] - 1
    for x in range(nx):
        pad[r + x] = np.float32(src_row[x])
    first = pad[r]
    last = pad[r + nx - 1]
    for k in range(r):
        pad[k] = first
        pad[r + nx + k] = last
    w0 = wx[0]
    centre = pad[r : r + nx]
    for x in range(nx):
        dst_row[x] = w0 * centre[x]
    for k in range(1, r + 1):
        wk = wx[k]
        left = pad[r - k : r - k + nx]  # views: plain x indices, so the loop vectorises
        right = pad[r + k : r + k + nx]
        for x in range(nx):
            dst_row[x] += wk * (left[x] + right[x])


@numba.njit(nogil=True, cache=True)
def _fold(rows, dst_row, i, w):
    """``dst_row = sum_k w[k] * (rows[i - k] + rows[i + k])`` (row indices clamped), float32."""
    n = rows.shape[0]
    nx = dst_row.shape[0]
    centre = rows[i]
    w0 = w[0]
    for x in range(nx):
        dst_row[x] = w0 * centre[x]
    for k in range(1, w.shape[0]):
        a = rows[max(i - k, 0)]
        b = rows[min(i + k, n - 1)]
        wk = w[k]
        for x in range(nx):
            dst_row[x] += wk * (a[x] + b[x])


@numba.njit(nogil=True, cache=True)
def blur_xy(src, out, wy, wx, z0, z1):
    """Blur planes ``[z0, z1)`` of ``src`` along x then y into ``out`` (float32, same shape).

    ``src`` may be any real dtype (read as float32); ``wy``, ``wx`` are float32 half-kernels
    (length 1: no blur along that axis). ``src`` and ``out`` may be the same float32 array.
    """
    _, ny, nx = out.shape
    pad = np.empty(nx + 2 * (wx.shape[0] - 1), np.float32)
    plane = np.empty((ny, nx), np.float32)
    for z in range(z0, z1):
        if wy.shape[0] == 1:
            for y in range(ny):
                _row_x(src[z, y], out[z, y], pad, wx)
            continue
        for y in range(ny):
            _row_x(src[z, y], plane[y], pad, wx)
        for y in range(ny):
            _fold(plane, out[z, y], y, wy)


@numba.njit(nogil=True, cache=True)
def blur_z(out, wz, y0, y1):
    """Blur rows ``[y0, y1)`` of the float32 volume ``out`` along z, in place."""
    nz, _, nx = out.shape
    slab = np.empty((nz, nx), np.float32)
    for y in range(y0, y1):
        for z in range(nz):
            src = out[z, y]
            dst = slab[z]
            for x in range(nx):
                dst[x] = src[x]
        for z in range(nz):
            _fold(slab, out[z, y], z, wz)
