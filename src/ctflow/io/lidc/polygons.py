"""Filling one LIDC annotation's contours: pylidc's polygon rules on the native grid.

Each contour is a closed polygon of pixel positions on one slice, filled by the even-odd rule
at pixel centres; the pixels the outline passes through are in or out (``edges``), and holes
(``inclusion=False`` contours) are removed after every inclusion is drawn. The rules are
described in :mod:`~ctflow.io.lidc.masks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ctflow.io.lidc.contours import _Contour


def _outline(rc: NDArray[np.int64]) -> NDArray[np.int64]:
    """Return every pixel centre on the closed polygon's edges (the points and between them)."""
    d: NDArray[np.int64] = np.roll(rc, -1, axis=0) - rc
    # lattice steps per edge (numpy types gcd and maximum of arrays as Any)
    n: NDArray[np.int64] = np.maximum(np.gcd(np.abs(d[:, 0]), np.abs(d[:, 1])), 1)
    t = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    step: NDArray[np.int64] = np.repeat(d // n[:, None], n, axis=0)
    points: NDArray[np.int64] = np.repeat(rc, n, axis=0)
    return points + step * t[:, None]


def _fill(rc: NDArray[np.int64], edges_in: bool) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Fill a closed polygon of pixel positions by the even-odd rule on its box.

    Returns the box's first (row, col) and the filled box. Each pixel row is a scanline; an
    edge crosses row ``r`` when its ends lie on different sides (``r0 > r`` differs from
    ``r1 > r``: half-open, so a vertex on the line counts once); a pixel is inside when an odd
    number of crossings lie left of it. Pixels on the outline are then set to ``edges_in``.
    """
    lo = rc.min(axis=0)
    n_rows, n_cols = (rc.max(axis=0) - lo + 1).tolist()
    p0 = (rc - lo).astype(np.float64)
    p1 = np.roll(p0, -1, axis=0)
    rows = np.arange(n_rows, dtype=np.float64)[:, None]
    ri, ei = np.nonzero((p0[None, :, 0] > rows) != (p1[None, :, 0] > rows))
    r0, c0, r1, c1 = p0[ei, 0], p0[ei, 1], p1[ei, 0], p1[ei, 1]
    x = c0 + (ri - r0) * (c1 - c0) / (r1 - r0)
    toggles = np.zeros((n_rows, n_cols + 1), np.int32)  # +1 at the first column right of x
    np.add.at(toggles, (ri, np.floor(x).astype(np.int64) + 1), 1)
    inside = (np.cumsum(toggles, axis=1)[:, :n_cols] & 1).astype(bool)
    on = _outline(rc) - lo
    inside[on[:, 0], on[:, 1]] = edges_in
    return lo, inside


def _annotation_box(
    contours: Sequence[_Contour], ks: Sequence[int], edges: str
) -> tuple[tuple[int, int, int], NDArray[np.bool_]]:
    """Rasterise one annotation's contours (slice ``ks[i]`` each) into its box of points."""
    points = np.concatenate(
        [np.column_stack([np.full(len(c.rc), k), c.rc]) for c, k in zip(contours, ks, strict=True)]
    )
    lo = points.min(axis=0)
    mask = np.zeros(points.max(axis=0) - lo + 1, dtype=bool)
    include = edges == "include"
    for adding in (True, False):  # holes come off after every inclusion is drawn
        for c, k in zip(contours, ks, strict=True):
            if c.inclusion != adding:
                continue
            (r, col), filled = _fill(c.rc, include if adding else not include)
            part = mask[k - lo[0], r - lo[1] : r - lo[1] + filled.shape[0]]
            part = part[:, col - lo[2] : col - lo[2] + filled.shape[1]]
            if adding:
                part |= filled
            else:
                part &= ~filled
    return (int(lo[0]), int(lo[1]), int(lo[2])), mask
