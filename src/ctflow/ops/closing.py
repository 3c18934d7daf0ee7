"""The 3-D closing of the lung components, computed on a coarse grid of blocks.

:func:`coarse_closing` is step 4 of :func:`ctflow.ops.lungs.segment_lungs`: it adds to the lung
mask its closing by a ball of ``radius`` mm, which takes in juxta-pleural nodules and the
notches of vessels entering the lung. The closing is computed exactly (two Euclidean distance
transforms, :mod:`ctflow.kernels.closing`) on a grid of blocks of about
:data:`CLOSING_GRID_MM`, from the blocks that are at least half lung; the signed distance
``sqrt(d) - radius`` is interpolated (trilinear) back to the fine grid, so the added voxels follow
the closed surface to well under a block, and voxels are only ever added. The block grid
extends ``radius`` beyond the volume, which counts as background: a lung cut by the first or
last slice is closed as if capped there (no plug between the apex and the border, no erosion).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.geometry import Geometry
from ctflow.kernels import closing as _k
from ctflow.threads import run_ranges

__all__ = ["CLOSING_GRID_MM", "coarse_closing", "over_ranges"]

#: Spacing (mm) of the grid on which the closing is computed (at most; finer for small radii).
CLOSING_GRID_MM = 2.0


def over_ranges(
    fn: Callable[[int, int], Any], lo: int, hi: int, n_threads: int
) -> list[tuple[int, int]]:
    """Run ``fn(a, b)`` over parts of ``[lo, hi)``, two parts per thread.

    Parameters
    ----------
    fn : callable
        ``fn(a, b)`` for one part (a ``nogil`` kernel call, say).
    lo, hi : int
        The range to cut.
    n_threads : int
        Threads to run the parts on.

    Returns
    -------
    list of (int, int)
        The parts used, in order.

    Examples
    --------
    >>> seen = []
    >>> over_ranges(lambda a, b: seen.append((a, b)), 5, 9, 1)
    [(5, 9)]
    """
    parts = run_ranges(lambda a, b: fn(a + lo, b + lo), hi - lo, n_threads, per_thread=2)
    return [(a + lo, b + lo) for a, b, _ in parts]


def coarse_closing(
    mask: NDArray[np.uint8],
    row_ptr: NDArray[np.int64],
    starts: NDArray[np.int32],
    ends: NDArray[np.int32],
    labels: NDArray[np.int32],
    keep: NDArray[np.uint8],
    lo_box: NDArray[np.int64],
    hi_box: NDArray[np.int64],
    geometry: Geometry,
    radius: float,
    n_threads: int,
) -> NDArray[np.int64]:
    """Add to ``mask`` the 3-D closing (ball of ``radius`` mm) of the kept components.

    Parameters
    ----------
    mask : ndarray (z, y, x) uint8
        The painted kept components; closed in place (voxels are only set to 1).
    row_ptr, starts, ends, labels : ndarray
        The runs of the air-like voxels and their component labels, as in
        :mod:`ctflow.kernels.lungs`.
    keep : ndarray (n_labels,) uint8
        1 for the components to close.
    lo_box, hi_box : ndarray of 3 int64
        Half-open voxel box (z, y, x) of the kept components.
    geometry : Geometry
        Geometry of ``mask`` (its spacing sets the block size and the distances).
    radius : float
        Radius of the ball, mm (> 0).
    n_threads : int
        Threads to split the kernels over.

    Returns
    -------
    ndarray of 3 int64
        The block size (fine voxels per block along z, y, x); the closed set stays within
        ``[lo_box - f - 1, hi_box + f + 1)``.

    Examples
    --------
    A 6 mm gap between two slabs is bridged by a 5 mm closing:

    >>> from ctflow.kernels.lungs import label_runs, runs_count, runs_fill
    >>> air = np.zeros((12, 12, 12), np.int16)
    >>> air[2:10, 2:10, 2:5] = -900
    >>> air[2:10, 2:10, 7:10] = -900
    >>> counts = np.empty(144, np.int64)
    >>> runs_count(air, -320, 0, 12, counts)
    >>> row_ptr = np.concatenate([[0], np.cumsum(counts)])
    >>> n = int(row_ptr[-1])
    >>> starts, ends, gas = (np.empty(n, np.int32) for _ in range(3))
    >>> runs_fill(air, -320, -950, 0, 12, row_ptr, starts, ends, gas)
    >>> mask = (air < -320).astype(np.uint8)
    >>> f = coarse_closing(mask, row_ptr, starts, ends, np.zeros(n, np.int32),
    ...                    np.ones(1, np.uint8), np.array([2, 2, 2]), np.array([10, 10, 10]),
    ...                    Geometry((1.0, 1.0, 1.0)), 5.0, 1)
    >>> int(mask[5, 5, 6]), int(mask[0, 0, 0])
    (1, 0)
    """
    shape = np.asarray(mask.shape, np.int64)
    sp = geometry.spacing
    target = min(CLOSING_GRID_MM, radius / 2.0)
    f = np.maximum(1, np.floor(target / sp + 0.5)).astype(np.int64)
    cs = f * sp
    margin = (np.ceil(radius / cs).astype(np.int64) + 2) * f
    o = lo_box - margin
    e = hi_box + margin
    cshape = tuple(int(v) for v in -(-(e - o) // f))
    oz, oy, ox = (int(v) for v in o)
    fz, fy, fx = (int(v) for v in f)

    counts = np.zeros(cshape, np.int32)
    nz, ny = mask.shape[:2]

    def count(a: int, b: int) -> None:  # block rows a..b as fine slices, clipped to the volume
        z0, z1 = max(oz + a * fz, 0), min(oz + b * fz, nz)
        if z1 > z0:
            _k.coarse_count(
                row_ptr, starts, ends, labels, keep, ny, oz, oy, ox, fz, fy, fx, z0, z1, counts
            )

    over_ranges(count, 0, cshape[0], n_threads)
    # voxels of each block that lie inside the volume (blocks may hang over the border)
    n_in = []
    for a in range(3):
        first = o[a] + np.arange(cshape[a]) * f[a]
        n_in.append(np.clip(np.minimum(first + f[a], shape[a]) - np.maximum(first, 0), 0, None))

    def edt(d: NDArray[np.float32]) -> None:
        over_ranges(lambda a, b: _k.edt_sq_x(d, float(cs[2]), a, b), 0, cshape[0], n_threads)
        over_ranges(lambda a, b: _k.edt_sq_y(d, float(cs[1]), a, b), 0, cshape[0], n_threads)
        over_ranges(lambda a, b: _k.edt_sq_z(d, float(cs[0]), a, b), 0, cshape[1], n_threads)

    # 0 on blocks at least half lung, far elsewhere; squared distance to them (the dilation)
    d = np.empty(cshape, np.float32)
    n_z, n_y, n_x = n_in
    seed = _k.closing_seed
    over_ranges(lambda a, b: seed(counts, n_z, n_y, n_x, d, a, b), 0, cshape[0], n_threads)
    edt(d)
    r2 = np.float32(radius * radius)
    # the dilated set's outside
    over_ranges(lambda a, b: _k.closing_outside(d, r2, a, b), 0, cshape[0], n_threads)
    edt(d)
    # signed distance to the closed surface; a quarter block of safety: interpolation then never
    # bulges past a convex lung surface
    off = np.float32(radius + 0.25 * float(cs.min()))
    over_ranges(lambda a, b: _k.closing_signed(d, off, a, b), 0, cshape[0], n_threads)
    paint = _k.paint_closing
    over_ranges(lambda a, b: paint(mask, d, oz, oy, ox, fz, fy, fx, a, b), 0, nz, n_threads)
    return f
