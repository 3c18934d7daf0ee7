"""Crop boxes in voxel space: where a crop may start, and cutting it out of a volume.

A crop of shape ``S`` starting at ``start`` covers voxels ``start .. start + S - 1`` (indices
``(z, y, x)``); it may start before the volume or end past it.

* :func:`nodule_voxel_boxes` gives the voxels a nodule occupies, :func:`start_range` the starts
  that keep a crop in (or around) its scan, and :class:`FreeStarts` every start whose crop
  touches no nodule box. :func:`ctflow.ops.sampling.sample_crop_starts` plans training crops
  with them.
* :func:`extract_crop` copies a crop out of a volume; voxels of the crop outside the volume get
  ``pad_value``. The result is always a new array of the volume's dtype. The ``crop`` actions
  and ``CTBatch.sample_nodules`` cut crops with it.

Examples
--------
>>> import numpy as np
>>> extract_crop(np.arange(8).reshape(2, 2, 2), (-1, 0, 0), (2, 2, 2), -1)[:, 0, 0].tolist()
[-1, 0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.validation import as_shape

__all__ = ["FreeStarts", "LabelVoxels", "extract_crop", "nodule_voxel_boxes", "start_range"]

_SLACK = 1e-6  # voxels added around a nodule's box (never lose a voxel to rounding)


def nodule_voxel_boxes(
    nodule_voxels: ArrayLike, nodule_radii_vox: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Compute the inclusive voxel boxes ``(lo, hi)`` of nodules, unclipped.

    ``lo = min(ceil(c - r), round(c))``, ``hi = max(floor(c + r), round(c))`` with a 1e-6 voxel
    slack outwards: every voxel whose centre lies within the radius along each axis, plus the
    voxel containing the centre (see :mod:`ctflow.ops.sampling`).

    Parameters
    ----------
    nodule_voxels : array_like (M, 3)
        Continuous voxel centres.
    nodule_radii_vox : array_like (M, 3)
        Radii in voxels along (z, y, x), >= 0.

    Returns
    -------
    lo, hi : ndarray (M, 3) int64

    Examples
    --------
    >>> lo, hi = nodule_voxel_boxes([[5.0, 5.2, 5.6]], [[2.0, 0.1, 1.5]])
    >>> lo.tolist(), hi.tolist()
    ([[3, 5, 5]], [[7, 5, 7]])
    """
    c = np.asarray(nodule_voxels, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(nodule_radii_vox, dtype=np.float64).reshape(-1, 3)
    centre = np.floor(c + 0.5)
    lo = np.minimum(np.ceil(c - r - _SLACK), centre)
    hi = np.maximum(np.floor(c + r + _SLACK), centre)
    return lo.astype(np.int64), hi.astype(np.int64)


class FreeStarts:
    """All starts of a crop in one scan that touch no nodule box, as a grid of cells.

    The start range along each axis is split at the boundaries of every nodule's forbidden
    interval ``[lo - S + 1, hi]``, so each cell of the resulting grid is either wholly forbidden
    or wholly free; free starts are then drawn exactly uniformly, cell by volume.

    Parameters
    ----------
    start_lo, start_hi : ndarray of 3 int64
        Inclusive range of allowed starts (see :func:`start_range`).
    box_lo, box_hi : ndarray (M, 3) int64
        Inclusive voxel boxes of the scan's nodules (see :func:`nodule_voxel_boxes`).
    crop : ndarray of 3 int64
        Crop shape.

    Attributes
    ----------
    total : int
        Number of free starts (0: no crop fits without touching a nodule).

    Examples
    --------
    >>> free = FreeStarts(np.array([0, 0, 0]), np.array([4, 0, 0]), np.array([[2, 0, 0]]),
    ...                   np.array([[2, 0, 0]]), np.array([2, 1, 1]))
    >>> free.total, int(free.draw(np.random.default_rng(0))[0]) in (0, 3, 4)
    (3, True)
    """

    def __init__(
        self,
        start_lo: NDArray[np.int64],
        start_hi: NDArray[np.int64],
        box_lo: NDArray[np.int64],
        box_hi: NDArray[np.int64],
        crop: NDArray[np.int64],
    ) -> None:
        f_lo = np.maximum(box_lo - crop + 1, start_lo)  # (m, 3) forbidden starts, inclusive
        f_hi = np.minimum(box_hi, start_hi)
        keep = np.all(f_lo <= f_hi, axis=1)
        f_lo, f_hi = f_lo[keep], f_hi[keep]
        self.edges: list[NDArray[np.int64]] = []
        inside = []
        for a in range(3):
            e = np.unique(
                np.concatenate([[start_lo[a], start_hi[a] + 1], f_lo[:, a], f_hi[:, a] + 1])
            )
            self.edges.append(e)
            inside.append(
                (e[None, :-1] >= f_lo[:, a : a + 1]) & (e[None, 1:] <= f_hi[:, a : a + 1] + 1)
            )
        self.lengths = [np.diff(e) for e in self.edges]
        forbidden = np.zeros(tuple(len(n) for n in self.lengths), dtype=bool)
        for m in range(f_lo.shape[0]):
            forbidden |= inside[0][m][:, None, None] & inside[1][m][None, :, None] & inside[2][m]
        vol = (
            self.lengths[0][:, None, None] * self.lengths[1][None, :, None] * self.lengths[2]
        ).astype(np.int64)
        vol[forbidden] = 0
        self.cell_shape = vol.shape
        self.cum = np.cumsum(vol.ravel())
        self.total = int(self.cum[-1])

    def draw(self, rng: np.random.Generator) -> NDArray[np.int64]:
        """Draw one free start uniformly (one ``rng.integers`` call); needs ``total > 0``."""
        u = int(rng.integers(self.total))
        cell = int(np.searchsorted(self.cum, u, side="right"))
        offset = u - (int(self.cum[cell - 1]) if cell > 0 else 0)
        k = np.unravel_index(cell, self.cell_shape)
        sizes = tuple(int(self.lengths[a][k[a]]) for a in range(3))
        d = np.unravel_index(offset, sizes)
        return np.array([int(self.edges[a][k[a]]) + int(d[a]) for a in range(3)], dtype=np.int64)


def start_range(shape: NDArray[np.int64], crop: NDArray[np.int64]) -> tuple[Any, Any]:
    """Return the inclusive range of crop starts that keep the crop in (or around) the scan.

    Per axis, the crop lies inside the scan when the scan is at least as large as the crop, and
    covers the whole scan (padding on the sides) otherwise.

    Parameters
    ----------
    shape, crop : ndarray of 3 int64
        Scan and crop shapes.

    Returns
    -------
    lo, hi : ndarray of 3 int64
        ``min(0, shape - crop)`` and ``max(0, shape - crop)``.

    Examples
    --------
    >>> [v.tolist() for v in start_range(np.array([10, 4, 8]), np.array([4, 6, 8]))]
    [[0, -2, 0], [6, 0, 0]]
    """
    return np.minimum(0, shape - crop), np.maximum(0, shape - crop)


def extract_crop(
    volume: NDArray[Any], start: ArrayLike, shape: ArrayLike, pad_value: float = 0
) -> NDArray[Any]:
    """Copy the crop ``volume[start : start + shape]``, padding with ``pad_value`` outside.

    Parameters
    ----------
    volume : ndarray (Z, Y, X)
        Source volume (any dtype; not modified).
    start : 3 ints
        First voxel of the crop; may be negative or beyond the volume.
    shape : 3 ints
        Crop shape.
    pad_value : scalar
        Value of crop voxels outside the volume; must be representable in ``volume.dtype``.

    Returns
    -------
    ndarray of ``shape``, ``volume.dtype``
        A new array (never a view).

    Raises
    ------
    InvalidParameterError
        Bad volume, start, shape, or a pad value the dtype cannot hold.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.arange(27, dtype=np.int16).reshape(3, 3, 3)
    >>> extract_crop(v, (2, 2, 2), (2, 1, 1), pad_value=-1).ravel().tolist()
    [26, -1]
    """
    where = "extract_crop"
    if not isinstance(volume, np.ndarray) or volume.ndim != 3:
        got = volume.shape if isinstance(volume, np.ndarray) else type(volume).__name__
        raise InvalidParameterError(f"{where}: volume must be a 3-D (z, y, x) array; got {got}")
    size = as_shape(shape, where=where)
    try:
        raw = np.asarray(start)
        st = raw.astype(np.int64)
        ok = raw.shape == (3,) and bool(np.all(st == raw))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(f"{where}: start must be 3 integers (z, y, x); got {start!r}")
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            fill = np.asarray(pad_value).astype(volume.dtype)
        fits = bool(fill == pad_value) or (
            np.issubdtype(volume.dtype, np.floating) and np.isnan(float(pad_value))
        )
    except (TypeError, ValueError, OverflowError):
        fits = False
    if not fits:
        raise InvalidParameterError(
            f"{where}: pad_value must be representable as {volume.dtype}; got {pad_value!r}"
        )
    src_lo = np.clip(st, 0, volume.shape)
    src_hi = np.clip(st + np.asarray(size), 0, volume.shape)
    inside = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
    if np.array_equal(src_lo, st) and np.array_equal(src_hi - src_lo, size):
        return volume[inside].copy()
    out = np.full(size, fill, dtype=volume.dtype)
    if np.all(src_hi > src_lo):
        dst = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(src_lo, src_hi, st))
        out[dst] = volume[inside]
    return out


class LabelVoxels:
    """Draws uniformly random voxels of given labels of one label map, fast.

    Counting each label per axial slice costs one pass over the map; a draw then picks a slice
    with probability proportional to the label's count there and finds the voxel in that slice,
    so no list of every voxel's coordinates is ever built (a 300x512x512 map costs one counting
    pass of tens of milliseconds, then well under a millisecond per draw).

    ``counts`` holds one column per label value up to the map's largest (256 columns for a
    uint8 map, ``max + 1`` for a uint16 map: a map of a few labels stored as uint16 costs a few
    columns, not 65536).

    Parameters
    ----------
    labels : ndarray (Z, Y, X) of uint8 or uint16
        The label map.
    n_threads : int, default 1
        Threads for the counting pass (and for finding a uint16 map's largest label).

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((3, 4, 4), np.uint8); lab[1, 2, 3] = 7
    >>> vox = LabelVoxels(lab)
    >>> vox.count(7), vox.draw(7, np.random.default_rng(0)).tolist()
    (1, [1, 2, 3])
    """

    def __init__(self, labels: NDArray[Any], n_threads: int = 1) -> None:
        from ctflow.kernels.labels import slice_counts, words_of
        from ctflow.threads import run_ranges

        arr = np.ascontiguousarray(labels)
        if arr.ndim != 3 or arr.dtype not in (np.uint8, np.uint16):
            raise InvalidParameterError(
                f"LabelVoxels: labels must be a (Z, Y, X) uint8 or uint16 map; got {arr.dtype} "
                f"{arr.shape}"
            )
        self.labels = arr
        self._flat = arr.reshape(arr.shape[0], arr.shape[1] * arr.shape[2])
        self._words = words_of(self._flat)
        self.counts = np.zeros((arr.shape[0], self._n_values(arr, n_threads)), np.int64)
        run_ranges(
            lambda a, b: slice_counts(self._flat, self._words, self.counts, a, b),
            arr.shape[0],
            n_threads,
        )
        self.totals = self.counts.sum(axis=0)

    @staticmethod
    def _n_values(arr: NDArray[Any], n_threads: int) -> int:
        """Return the columns of the counts: 256 (uint8), the largest label + 1 (uint16).

        A uint8 map's 256 columns are small (600 KB for 300 slices), so it skips the extra
        pass a maximum costs (half a counting pass); a uint16 map pays it (numpy's reduction,
        in slabs on ``n_threads``) instead of 65536 columns (157 MB for 300 slices).
        """
        from ctflow.threads import run_ranges

        if arr.dtype == np.uint8:
            return 256
        if arr.size == 0:
            return 1
        parts = run_ranges(lambda a, b: int(arr[a:b].max()), arr.shape[0], n_threads)
        return max(top for *_, top in parts) + 1

    def count(self, value: int) -> int:
        """Return how many voxels have label ``value``."""
        return int(self.totals[value]) if 0 <= value < len(self.totals) else 0

    def present(self) -> list[int]:
        """Return the labels present, in increasing order."""
        return [int(v) for v in np.flatnonzero(self.totals)]

    def draw(self, value: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """Return the (z, y, x) index of a uniformly random voxel of label ``value``."""
        from ctflow.kernels.labels import kth_voxel

        total = self.count(value)
        if total == 0:
            raise InvalidParameterError(f"LabelVoxels: no voxel has label {value}")
        k = int(rng.integers(total))
        column = np.cumsum(self.counts[:, value])
        z = int(np.searchsorted(column, k, side="right"))
        before = int(column[z - 1]) if z > 0 else 0
        e = kth_voxel(self._flat, self._words, z, value, k - before)
        y, x = divmod(int(e), self.labels.shape[2])
        return np.array([z, y, x], np.int64)
