"""numba kernels for sliding-window intensity projections (loops only, no validation).

The volume comes as a C-ordered ``(outer, n, inner)`` array whose middle axis is the projection
axis (axial: ``(1, z, y*x)``, coronal: ``(z, y, x)``, sagittal: ``(z*y, x, 1)``). Output slice
``k`` reduces the input rows ``k * stride + start + t`` for ``t < depth``; rows outside
``[0, n)`` are mirrored back without repeating the edge (numpy's ``np.pad(mode="reflect")``),
which only happens when the caller pads (``start < 0`` or windows past the end).

Reductions: :func:`xip_max`, :func:`xip_min`, :func:`xip_mean` (float32 sum divided by
``depth``) and :func:`xip_median` (sort of each window; for an even ``depth`` the mean of the
two middle values). NaN voxels are not treated specially.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["CHUNK", "reflect_index", "window_rows", "xip_max", "xip_mean", "xip_median", "xip_min"]

#: Voxels of a slice reduced together (keeps the running result in cache on big slices).
CHUNK = 4096


@numba.njit(nogil=True, cache=True)
def reflect_index(i, n):
    """Mirror index ``i`` into ``[0, n)`` without repeating the edge (period ``2 * (n - 1)``)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    r = i % period  # Python semantics in numba: r >= 0
    return r if r < n else period - r


@numba.njit(nogil=True, cache=True)
def window_rows(k, n, depth, stride, start):
    """Input rows of output slice ``k`` (mirrored into ``[0, n)``)."""
    rows = np.empty(depth, np.int64)
    base = k * stride + start
    for t in range(depth):
        rows[t] = reflect_index(base + t, n)
    return rows


@numba.njit(nogil=True, cache=True)
def xip_max(src, out, depth, stride, start):
    """Sliding maximum along axis 1 of ``src`` (outer, n, inner) into ``out`` (outer, K, inner)."""
    n = src.shape[1]
    inner = src.shape[2]
    for k in range(out.shape[1]):
        rows = window_rows(k, n, depth, stride, start)
        for o in range(src.shape[0]):
            if inner == 1:  # projection along the contiguous axis: scalar reduction
                m = src[o, rows[0], 0]
                for t in range(1, depth):
                    m = max(m, src[o, rows[t], 0])
                out[o, k, 0] = m
                continue
            for q0 in range(0, inner, CHUNK):
                q1 = min(q0 + CHUNK, inner)
                acc = out[o, k, q0:q1]
                acc[:] = src[o, rows[0], q0:q1]
                for t in range(1, depth):
                    row = src[o, rows[t], q0:q1]
                    for q in range(acc.shape[0]):
                        acc[q] = max(acc[q], row[q])


@numba.njit(nogil=True, cache=True)
def xip_min(src, out, depth, stride, start):
    """Sliding minimum along axis 1 of ``src`` (outer, n, inner) into ``out`` (outer, K, inner)."""
    n = src.shape[1]
    inner = src.shape[2]
    for k in range(out.shape[1]):
        rows = window_rows(k, n, depth, stride, start)
        for o in range(src.shape[0]):
            if inner == 1:
                m = src[o, rows[0], 0]
                for t in range(1, depth):
                    m = min(m, src[o, rows[t], 0])
                out[o, k, 0] = m
                continue
            for q0 in range(0, inner, CHUNK):
                q1 = min(q0 + CHUNK, inner)
                acc = out[o, k, q0:q1]
                acc[:] = src[o, rows[0], q0:q1]
                for t in range(1, depth):
                    row = src[o, rows[t], q0:q1]
                    for q in range(acc.shape[0]):
                        acc[q] = min(acc[q], row[q])


@numba.njit(nogil=True, cache=True)
def xip_mean(src, out, depth, stride, start):
    """Sliding mean along axis 1 (float32 ``out``): float32 sum of the window / ``depth``."""
    n = src.shape[1]
    inner = src.shape[2]
    d = np.float32(depth)
    for k in range(out.shape[1]):
        rows = window_rows(k, n, depth, stride, start)
        for o in range(src.shape[0]):
            if inner == 1:
                acc = np.float32(0.0)
                for t in range(depth):
                    acc += np.float32(src[o, rows[t], 0])
                out[o, k, 0] = acc / d
                continue
            for q0 in range(0, inner, CHUNK):
                q1 = min(q0 + CHUNK, inner)
                acc = out[o, k, q0:q1]
                row = src[o, rows[0], q0:q1]
                for q in range(acc.shape[0]):
                    acc[q] = np.float32(row[q])
                for t in range(1, depth):
                    row = src[o, rows[t], q0:q1]
                    for q in range(acc.shape[0]):
                        acc[q] += np.float32(row[q])
                for q in range(acc.shape[0]):
                    acc[q] = acc[q] / d


@numba.njit(nogil=True, cache=True)
def xip_median(src, out, depth, stride, start):
    """Sliding median along axis 1 (float32 ``out``); even ``depth``: mean of the two middles."""
    n = src.shape[1]
    buf = np.empty(depth, np.float64)
    half = depth // 2
    for k in range(out.shape[1]):
        rows = window_rows(k, n, depth, stride, start)
        for o in range(src.shape[0]):
            for q in range(src.shape[2]):
                for t in range(depth):
                    buf[t] = src[o, rows[t], q]
                if depth <= 32:  # insertion sort: short windows, often nearly sorted
                    for t in range(1, depth):
                        v = buf[t]
                        u = t - 1
                        while u >= 0 and buf[u] > v:
                            buf[u + 1] = buf[u]
                            u -= 1
                        buf[u + 1] = v
                else:
                    buf.sort()
                if depth % 2 == 1:
                    out[o, k, q] = buf[half]
                else:
                    out[o, k, q] = 0.5 * (buf[half - 1] + buf[half])
