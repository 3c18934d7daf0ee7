"""Tests of ctflow.ops.closing: the coarse-grid closing against an exact full-resolution one.

Reference: a closing with a ball computed by ``scipy.ndimage.distance_transform_edt`` on the
full grid, padded with background. ``segment_lungs`` (which calls it) is tested in
tests/ops/test_lungs.py, the kernels in tests/kernels/test_closing.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctflow.geometry import Geometry
from ctflow.kernels.lungs import runs_count, runs_fill
from ctflow.ops.closing import coarse_closing, over_ranges

SPACING = (1.5, 1.0, 1.0)


def _dented_ball(shape=(24, 40, 40)):
    """A 12 mm ball with a 4 mm-radius dent on its side (which a 5 mm closing fills)."""
    z, y, x = (np.arange(n)[:, None, None] for n in shape)
    z, y, x = z * SPACING[0], np.swapaxes(y, 0, 1) * SPACING[1], np.swapaxes(x, 0, 2) * SPACING[2]
    cz, cy, cx = ((n - 1) / 2 * s for n, s in zip(shape, SPACING))
    ball = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 12.0**2
    dent = (z - cz) ** 2 + (y - cy) ** 2 + (x - (cx + 12.0)) ** 2 <= 4.0**2
    return ball & ~dent, dent & ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 11.0**2)


def _exact_closing(mask, radius):
    pad = int(np.ceil(radius / min(SPACING))) + 2
    padded = np.pad(mask, pad)
    dil = ndi.distance_transform_edt(~padded, sampling=SPACING) <= radius
    closed = ndi.distance_transform_edt(dil, sampling=SPACING) > radius
    return closed[pad:-pad, pad:-pad, pad:-pad] | mask


def _close(mask, radius, n_threads):
    image = np.where(mask, np.int16(-900), np.int16(40))
    nz, ny, _ = mask.shape
    counts = np.empty(nz * ny, np.int64)
    runs_count(image, -320, 0, nz, counts)
    row_ptr = np.concatenate([[0], np.cumsum(counts)])
    starts, ends, gas = (np.empty(int(row_ptr[-1]), np.int32) for _ in range(3))
    runs_fill(image, -320, -950, 0, nz, row_ptr, starts, ends, gas)
    out = mask.astype(np.uint8)
    z, y, x = np.nonzero(mask)
    lo = np.array([z.min(), y.min(), x.min()])
    hi = np.array([z.max(), y.max(), x.max()]) + 1
    labels = np.zeros(starts.shape[0], np.int32)  # one component, kept
    f = coarse_closing(
        out, row_ptr, starts, ends, labels, np.ones(1, np.uint8), lo, hi, Geometry(SPACING),
        radius, n_threads,
    )  # fmt: skip
    return out, f, lo, hi


@pytest.mark.parametrize("radius", [3.0, 5.0])
def test_coarse_closing_follows_the_exact_closing_and_only_adds(radius):
    mask, dent = _dented_ball()
    closed, f, lo, hi = _close(mask, radius, 1)
    exact = _exact_closing(mask, radius)
    assert closed[mask].all()  # voxels are only ever added
    dice = 2 * np.sum(closed & exact) / (closed.sum() + exact.sum())
    assert dice > 0.98
    # it follows the exact surface to within a block: disagreements lie near that surface
    to_surface = np.where(
        exact,
        ndi.distance_transform_edt(exact, sampling=SPACING),
        ndi.distance_transform_edt(~exact, sampling=SPACING),
    )
    assert to_surface[closed.astype(bool) != exact].max() <= (f * SPACING).max()
    if radius >= 5.0:
        assert closed[dent].mean() > 0.9  # the dent is filled
    added = np.argwhere(closed & ~mask)  # within the documented box around the components
    assert (added >= lo - f - 1).all() and (added < hi + f + 1).all()


def test_threads_give_the_same_closing():
    mask, _ = _dented_ball()
    one, *_ = _close(mask, 5.0, 1)
    for n in (2, 3):
        np.testing.assert_array_equal(_close(mask, 5.0, n)[0], one)


@pytest.mark.parametrize(("lo", "hi", "n_threads"), [(3, 20, 1), (3, 20, 4), (5, 5, 2), (0, 1, 3)])
def test_over_ranges_covers_the_range_once_in_order(lo, hi, n_threads):
    seen = np.zeros(25, np.int64)

    def mark(a, b):
        seen[a:b] += 1

    parts = over_ranges(mark, lo, hi, n_threads)
    assert (seen[lo:hi] == 1).all() and seen.sum() == hi - lo
    assert [a for a, _ in parts] == sorted(a for a, _ in parts)
    assert all(lo <= a <= b <= hi for a, b in parts)
