"""numba kernels over label maps: per-slice label counts and the k-th voxel of a label.

They let a crop sampler draw a uniformly random voxel of a label without a list of every voxel's
coordinates: count each label per axial slice in one pass (:func:`slice_counts`), draw a slice
with probability proportional to its count, then find the k-th voxel of the label in that slice
(:func:`kth_voxel`).

Label maps are long runs of one value, so counting adds up runs (one add per run, not one per
voxel: a histogram ``counts[v] += 1`` per voxel stalls on the store of the previous voxel) and
reads each slice 8 bytes at a time, taking a whole 64-bit word at once when all its labels equal
the run's. Both kernels see a slice as flat ``(Z, Y * X)`` elements plus the same memory as
``uint64`` words (:func:`words_of`).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["kth_voxel", "slice_counts", "words_of"]


def words_of(flat: np.ndarray) -> np.ndarray:
    """Return the whole 64-bit words of each row of a C-contiguous ``(Z, N)`` uint8/uint16 map.

    A ``(Z, W)`` uint64 view of the same memory (``W = N * itemsize // 8``) when every row
    starts on a word boundary; a ``(Z, 0)`` array otherwise (the kernels then go element by
    element).
    """
    nz, n = flat.shape
    per = 8 // flat.itemsize
    if n % per == 0 and flat.ctypes.data % 8 == 0:
        return flat.view(np.uint64)
    return np.zeros((nz, 0), np.uint64)


@numba.njit(nogil=True, cache=True)
def _ones(per):
    """Return the word holding value 1 in each of its ``per`` elements (8: uint8, 4: uint16)."""
    return np.uint64(0x0101010101010101) if per == 8 else np.uint64(0x0001000100010001)


@numba.njit(nogil=True, cache=True)
def slice_counts(flat, words, counts, z0, z1):
    """Add ``counts[z, v] += 1`` for every element of value ``v`` in rows ``z0 <= z < z1``.

    ``flat`` is the ``(Z, Y * X)`` label map, ``words`` its :func:`words_of`. ``counts`` is
    ``(Z, V)`` with a column for every value in those rows (``V > flat.max()``: the map's
    largest value + 1 is enough; a missing column is NOT checked, the add would go out of
    bounds).
    """
    _, n = flat.shape
    nw = words.shape[1]
    per = 8 // flat.itemsize
    ones = _ones(per)
    if n == 0:
        return
    for z in range(z0, z1):
        v = flat[z, 0]
        pattern = np.uint64(v) * ones
        run = 0
        for k in range(nw):
            if words[z, k] == pattern:  # the whole word continues the run
                run += per
                continue
            for e in range(k * per, k * per + per):
                w = flat[z, e]
                if w == v:
                    run += 1
                else:
                    counts[z, v] += run
                    v = w
                    run = 1
            pattern = np.uint64(v) * ones
        for e in range(nw * per, n):
            w = flat[z, e]
            if w == v:
                run += 1
            else:
                counts[z, v] += run
                v = w
                run = 1
        counts[z, v] += run


@numba.njit(nogil=True, cache=True)
def kth_voxel(flat, words, z, value, k):
    """Return the flat index in row ``z`` of the ``k``-th element (0-based) equal to ``value``.

    ``flat`` and ``words`` as for :func:`slice_counts`. Words holding no ``value`` are skipped
    whole (a zero byte / half-word of ``word ^ pattern``), words holding only ``value`` are
    counted whole. ``-1`` when the row holds ``k`` or fewer such elements.
    """
    _, n = flat.shape
    nw = words.shape[1]
    per = 8 // flat.itemsize
    ones = _ones(per)
    high = ones << np.uint64(8 * (8 // per) - 1)  # the top bit of each element
    pattern = np.uint64(value) * ones
    seen = 0
    for j in range(nw):
        t = words[z, j] ^ pattern  # zero elements where the label is ``value``
        if t == 0 and seen + per <= k:
            seen += per
            continue
        if ((t - ones) & ~t & high) == 0:  # no element is zero: no ``value`` in this word
            continue
        for e in range(j * per, j * per + per):
            if flat[z, e] == value:
                if seen == k:
                    return e
                seen += 1
    for e in range(nw * per, n):
        if flat[z, e] == value:
            if seen == k:
                return e
            seen += 1
    return -1
