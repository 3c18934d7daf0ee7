"""numba kernels for lung segmentation: run-length labelling, body extent, hole filling, boxes.

Everything here works on **runs**: maximal intervals ``[start, end)`` along ``x`` of voxels with
``HU < threshold`` in one row ``(z, y)``. A CT slice has far fewer runs than voxels, so
connected-component labelling over runs (union-find on overlapping runs of neighbouring rows)
is cheaper than voxel labelling and needs no label volume. Runs of all rows are stored flat,
row after row (``row = z * ny + y``): the runs of row ``r`` are
``starts[row_ptr[r]:row_ptr[r + 1]]`` / ``ends[...]``.

Connectivity: two runs of neighbouring rows (same slice, ``y +- 1``; or same ``y``, ``z +- 1``)
are connected when they share an ``x`` (face connectivity: 4 in a slice, 6 in 3-D) — the same as
``scipy.ndimage.label``'s default structure. Union-find links the larger root under the smaller,
so a component's root is its first run.

Kernels take ``[z0, z1)`` (or ``[y0, y1)``) ranges so callers can split work across threads; the
ranges given to concurrent calls must not overlap. No validation happens here. The kernels of
the 3-D closing are in :mod:`ctflow.kernels.closing` (re-exported here).
"""

from __future__ import annotations

import numba
import numpy as np

# the closing kernels moved to ctflow.kernels.closing; still importable from here
from ctflow.kernels.closing import (
    closing_outside,
    closing_seed,
    closing_signed,
    coarse_count,
    edt_sq_x,
    edt_sq_y,
    edt_sq_z,
    paint_closing,
)

__all__ = [
    "body_span",
    "closing_outside",
    "closing_seed",
    "closing_signed",
    "coarse_count",
    "edt_sq_x",
    "edt_sq_y",
    "edt_sq_z",
    "fill_holes_slices",
    "label_runs",
    "mask_bbox",
    "paint_closing",
    "paint_runs",
    "run_stats",
    "runs_count",
    "runs_fill",
    "union_slices",
    "union_z",
]

_BIG = 1.0e30


# -- run extraction -------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def runs_count(image, threshold, z0, z1, counts):
    """``counts[z * ny + y]`` = number of runs with ``image < threshold`` in row ``(z, y)``."""
    ny = image.shape[1]
    nx = image.shape[2]
    for z in range(z0, z1):
        for y in range(ny):
            row = image[z, y]
            c = 1 if row[0] < threshold else 0
            for x in range(1, nx):
                c += (row[x] < threshold) > (row[x - 1] < threshold)  # NaN: not air
            counts[z * ny + y] = c


@numba.njit(nogil=True, cache=True)
def runs_fill(image, threshold, gas_hu, z0, z1, row_ptr, starts, ends, n_gas):
    """Write the runs of rows in slices ``[z0, z1)``; ``n_gas`` counts voxels ``< gas_hu``."""
    ny = image.shape[1]
    nx = image.shape[2]
    for z in range(z0, z1):
        for y in range(ny):
            row = image[z, y]
            k = row_ptr[z * ny + y]
            x = 0
            while x < nx:
                if row[x] < threshold:
                    s = x
                    g = 0
                    while x < nx and row[x] < threshold:
                        g += row[x] < gas_hu
                        x += 1
                    starts[k] = s
                    ends[k] = x
                    n_gas[k] = g
                    k += 1
                else:
                    x += 1


# -- union-find -----------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _find(parent, i):
    """Return the root of ``i`` (path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(nogil=True, cache=True)
def _union(parent, a, b):
    """Link the roots of ``a`` and ``b``, the larger under the smaller."""
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@numba.njit(nogil=True, cache=True)
def _union_rows(parent, starts, ends, a0, a1, b0, b1, w, skip):
    """Union the connected runs of rows ``[a0, a1)`` and ``[b0, b1)`` (each sorted by x).

    Runs ``i`` and ``j`` connect when ``[starts[i] - w, ends[i] + w)`` meets ``[starts[j],
    ends[j])``: ``w = 0`` is face connectivity, ``w = 1`` adds the diagonals. Runs flagged in
    ``skip`` (when ``skip`` is not empty) are left alone.
    """
    check = skip.shape[0] > 0
    j0 = b0
    for i in range(a0, a1):
        if check and skip[i] != 0:
            continue
        lo = starts[i] - w
        hi = ends[i] + w
        while j0 < b1 and ends[j0] <= lo:
            j0 += 1
        j = j0
        while j < b1 and starts[j] < hi:
            if not check or skip[j] == 0:
                _union(parent, i, j)
            j += 1


@numba.njit(nogil=True, cache=True)
def union_slices(row_ptr, starts, ends, ny, nx, z0, z1, parent, outside):
    """In-slice (2-D) labelling of slices ``[z0, z1)``; flag components touching the y/x border.

    ``parent`` is initialised here for the runs of those slices. ``outside[i]`` becomes 1 for every
    run whose 2-D component touches the in-plane border of its slice (air outside the body).
    """
    r0 = row_ptr[z0 * ny]
    r1 = row_ptr[z1 * ny]
    for i in range(r0, r1):
        parent[i] = i
        outside[i] = 0
    empty = np.zeros(0, np.uint8)
    for z in range(z0, z1):
        for y in range(1, ny):
            r = z * ny + y
            _union_rows(
                parent,
                starts,
                ends,
                row_ptr[r - 1],
                row_ptr[r],
                row_ptr[r],
                row_ptr[r + 1],
                0,
                empty,
            )
    for z in range(z0, z1):
        for y in range(ny):
            r = z * ny + y
            for i in range(row_ptr[r], row_ptr[r + 1]):
                if y == 0 or y == ny - 1 or starts[i] == 0 or ends[i] == nx:
                    outside[_find(parent, i)] = 1
    for i in range(r0, r1):
        outside[i] = outside[_find(parent, i)]


@numba.njit(nogil=True, cache=True)
def union_z(row_ptr, starts, ends, ny, z0, z1, parent, outside):
    """Union runs of slice ``z - 1`` and ``z`` (same y) for ``z0 <= z < z1``, skipping outside runs.

    Concurrent calls are safe when each covers its own slab and ``z0`` is the slab's first slice
    plus one (the unions across slab boundaries are done afterwards by single calls).
    """
    for z in range(max(z0, 1), z1):
        for y in range(ny):
            ra = (z - 1) * ny + y
            rb = z * ny + y
            _union_rows(
                parent,
                starts,
                ends,
                row_ptr[ra],
                row_ptr[ra + 1],
                row_ptr[rb],
                row_ptr[rb + 1],
                0,
                outside,
            )


@numba.njit(nogil=True, cache=True)
def label_runs(parent, labels):
    """Compact component labels ``0..n-1`` (in order of first run); returns ``n``."""
    n = 0
    for i in range(parent.shape[0]):
        r = _find(parent, i)
        if r == i:
            labels[i] = n
            n += 1
        else:
            labels[i] = labels[r]
    return n


# -- body (largest tissue region) per slice -------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def body_span(row_ptr, starts, ends, ny, nx, z0, z1, max_runs, lo, hi):
    """Per row, x-extent ``[lo, hi)`` of the slice's largest 2-D tissue component (the body).

    Tissue runs are the gaps between air runs; they are labelled in 2-D with 8-connectivity (the
    complement of 4-connected air). Rows the body does not reach get ``lo = hi = -1``.
    ``max_runs`` bounds the number of tissue runs of one slice.
    """
    ts = np.empty(max_runs, np.int32)
    te = np.empty(max_runs, np.int32)
    par = np.empty(max_runs, np.int32)
    area = np.empty(max_runs, np.int64)
    tptr = np.empty(ny + 1, np.int64)
    empty = np.zeros(0, np.uint8)
    for z in range(z0, z1):
        k = 0
        for y in range(ny):
            r = z * ny + y
            tptr[y] = k
            prev = 0
            for i in range(row_ptr[r], row_ptr[r + 1]):
                if starts[i] > prev:
                    ts[k] = prev
                    te[k] = starts[i]
                    k += 1
                prev = ends[i]
            if prev < nx:
                ts[k] = prev
                te[k] = nx
                k += 1
        tptr[ny] = k
        for i in range(k):
            par[i] = i
            area[i] = 0
        for y in range(1, ny):
            _union_rows(par, ts, te, tptr[y - 1], tptr[y], tptr[y], tptr[y + 1], 1, empty)
        best = -1
        best_area = 0
        for i in range(k):
            root = _find(par, i)
            area[root] += te[i] - ts[i]
        for i in range(k):
            if par[i] == i and area[i] > best_area:
                best_area = area[i]
                best = i
        for y in range(ny):
            r = z * ny + y
            lo[r] = -1
            hi[r] = -1
            for i in range(tptr[y], tptr[y + 1]):
                if best >= 0 and _find(par, i) == best:
                    if lo[r] < 0:
                        lo[r] = ts[i]
                    hi[r] = te[i]


# -- component statistics and painting ------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def run_stats(row_ptr, starts, ends, n_gas, labels, ny, lo, hi, hz, hy, hx, n_labels):
    """Per label: voxels, gas voxels, voxels inside the body span, height range, bounding box.

    Height (mm along the patient's superior axis, up to a constant) of a run is
    ``hz * z + hy * y + hx * x_mid``. Returns ``(vol, gas, inside, hmin, hmax, box)`` with
    ``box[label] = (z0, z1, y0, y1, x0, x1)`` (half-open).
    """
    vol = np.zeros(n_labels, np.int64)
    gas = np.zeros(n_labels, np.int64)
    inside = np.zeros(n_labels, np.int64)
    hmin = np.full(n_labels, _BIG)
    hmax = np.full(n_labels, -_BIG)
    box = np.empty((n_labels, 6), np.int64)
    for i in range(n_labels):
        for j in range(3):
            box[i, 2 * j] = 1 << 40
            box[i, 2 * j + 1] = -1
    n_rows = row_ptr.shape[0] - 1
    for r in range(n_rows):
        z = r // ny
        y = r - z * ny
        for i in range(row_ptr[r], row_ptr[r + 1]):
            lab = labels[i]
            s = starts[i]
            e = ends[i]
            n = e - s
            vol[lab] += n
            gas[lab] += n_gas[i]
            if lo[r] >= 0 and s >= lo[r] and e <= hi[r]:
                inside[lab] += n
            h = hz * z + hy * y + hx * 0.5 * (s + e - 1)
            if h < hmin[lab]:
                hmin[lab] = h
            if h > hmax[lab]:
                hmax[lab] = h
            b = box[lab]
            b[0] = min(b[0], z)
            b[1] = max(b[1], z + 1)
            b[2] = min(b[2], y)
            b[3] = max(b[3], y + 1)
            b[4] = min(b[4], s)
            b[5] = max(b[5], e)
    return vol, gas, inside, hmin, hmax, box


@numba.njit(nogil=True, cache=True)
def paint_runs(mask, row_ptr, starts, ends, labels, keep, z0, z1):
    """Set ``mask[z, y, s:e] = 1`` for runs of slices ``[z0, z1)`` whose label is kept."""
    ny = mask.shape[1]
    for z in range(z0, z1):
        for y in range(ny):
            r = z * ny + y
            for i in range(row_ptr[r], row_ptr[r + 1]):
                if keep[labels[i]]:
                    for x in range(starts[i], ends[i]):
                        mask[z, y, x] = 1


# -- per-slice hole filling -----------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def fill_holes_slices(mask, z0, z1, y0, y1, x0, x1, max_area):
    """Fill, in each slice ``z`` of ``[z0, z1)``, the 2-D holes of ``mask[z, y0:y1, x0:x1]``.

    A hole is a 4-connected background region of the box that does not touch the box border;
    holes larger than ``max_area`` voxels are left open (``max_area < 0``: no limit). Same result
    as ``scipy.ndimage.binary_fill_holes`` per slice when the box holds the whole mask.
    """
    ny = y1 - y0
    nx = x1 - x0
    cap = ny * (nx // 2 + 1)
    bs = np.empty(cap, np.int32)
    be = np.empty(cap, np.int32)
    par = np.empty(cap, np.int32)
    area = np.empty(cap, np.int64)
    border = np.empty(cap, np.uint8)
    bptr = np.empty(ny + 1, np.int64)
    empty = np.zeros(0, np.uint8)
    for z in range(z0, z1):
        k = 0
        for yy in range(ny):
            bptr[yy] = k
            row = mask[z, y0 + yy]
            x = 0
            while x < nx:
                if row[x0 + x] == 0:
                    s = x
                    while x < nx and row[x0 + x] == 0:
                        x += 1
                    bs[k] = s
                    be[k] = x
                    k += 1
                else:
                    x += 1
        bptr[ny] = k
        for i in range(k):
            par[i] = i
            area[i] = 0
            border[i] = 0
        for yy in range(1, ny):
            _union_rows(par, bs, be, bptr[yy - 1], bptr[yy], bptr[yy], bptr[yy + 1], 0, empty)
        for yy in range(ny):
            for i in range(bptr[yy], bptr[yy + 1]):
                root = _find(par, i)
                area[root] += be[i] - bs[i]
                if yy == 0 or yy == ny - 1 or bs[i] == 0 or be[i] == nx:
                    border[root] = 1
        for yy in range(ny):
            row = mask[z, y0 + yy]
            for i in range(bptr[yy], bptr[yy + 1]):
                root = _find(par, i)
                if border[root] == 0 and (max_area < 0 or area[root] <= max_area):
                    for x in range(bs[i], be[i]):
                        row[x0 + x] = 1


# -- bounding box ---------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def mask_bbox(mask, z0, z1):
    """Half-open box ``(z0, z1, y0, y1, x0, x1)`` of nonzero voxels in slices ``[z0, z1)``.

    An empty range gives ``z0 > z1`` (start > stop) in every axis.
    """
    ny = mask.shape[1]
    nx = mask.shape[2]
    bz0 = 1 << 40
    by0 = 1 << 40
    bx0 = 1 << 40
    bz1 = -1
    by1 = -1
    bx1 = -1
    for z in range(z0, z1):
        for y in range(ny):
            row = mask[z, y]
            first = -1
            for x in range(nx):
                if row[x] != 0:
                    first = x
                    break
            if first < 0:
                continue
            last = first
            for x in range(nx - 1, first, -1):
                if row[x] != 0:
                    last = x
                    break
            bz0 = min(bz0, z)
            bz1 = max(bz1, z + 1)
            by0 = min(by0, y)
            by1 = max(by1, y + 1)
            bx0 = min(bx0, first)
            bx1 = max(bx1, last + 1)
    return np.array([bz0, bz1, by0, by1, bx0, bx1], np.int64)
