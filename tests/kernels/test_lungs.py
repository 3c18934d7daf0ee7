"""Tests of ctflow.kernels.lungs against naive numpy loops and scipy.ndimage.

Kernel level: run extraction (thresholds, NaN, gas counts, slice ranges), run labelling against
``scipy.ndimage.label`` (in-slice 4- and 3-D 6-connectivity, the in-plane border flag, unions
across range boundaries), the body extent, per-component statistics, painting, per-slice hole
filling against ``binary_fill_holes`` and bounding boxes against ``numpy.nonzero`` (empty
ranges, single slices). ``segment_lungs`` and ``lung_bbox`` are tested in tests/ops/test_lungs.py;
the closing kernels in tests/kernels/test_closing.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctflow.kernels import lungs as K


def _naive_runs(image, threshold, gas_hu):
    """Per row (z, y): the [start, end) intervals of ``image < threshold`` and their gas voxels."""
    out = []
    for z in range(image.shape[0]):
        for y in range(image.shape[1]):
            air = np.concatenate([[False], image[z, y] < threshold, [False]])
            edges = np.flatnonzero(np.diff(air.astype(np.int8)))
            for s, e in zip(edges[::2], edges[1::2]):
                out.append((z, y, s, e, int(np.sum(image[z, y, s:e] < gas_hu))))
    return out


def _runs(image, threshold):
    nz, ny, _ = image.shape
    counts = np.empty(nz * ny, np.int64)
    K.runs_count(image, threshold, 0, nz, counts)
    row_ptr = np.zeros(nz * ny + 1, np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    n = int(row_ptr[-1])
    starts, ends, n_gas = (np.empty(n, np.int32) for _ in range(3))
    K.runs_fill(image, threshold, -950, 0, nz, row_ptr, starts, ends, n_gas)
    return row_ptr, starts, ends, n_gas


def _paint_labels(shape, row_ptr, starts, ends, labels):
    out = np.full(shape, -1, np.int64)
    ny = shape[1]
    for r in range(shape[0] * ny):
        z, y = divmod(r, ny)
        for i in range(row_ptr[r], row_ptr[r + 1]):
            out[z, y, starts[i] : ends[i]] = labels[i]
    return out


def _same_partition(a, b, where):
    pairs = np.unique(np.stack([a[where], b[where]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_labelling_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    shape = (9, 23, 31)
    image = np.where(rng.random(shape) < 0.55, -1000, 40).astype(np.int16)
    air = image < -320
    row_ptr, starts, ends, n_gas = _runs(image, -320)
    n = starts.shape[0]
    assert n_gas.sum() == air.sum()  # every air voxel here is also "gas" (< -950)
    parent = np.empty(n, np.int32)
    outside = np.empty(n, np.uint8)
    K.union_slices(row_ptr, starts, ends, shape[1], shape[2], 0, shape[0], parent, outside)
    # in-slice: runs flagged outside == 2-D components touching the y/x border (scipy, 4-conn.)
    ref_out = np.zeros(shape, bool)
    for z in range(shape[0]):
        lab, _ = ndi.label(air[z])
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        ref_out[z] = np.isin(lab, edge[edge > 0])
    got_out = _paint_labels(shape, row_ptr, starts, ends, outside.astype(np.int64)) == 1
    np.testing.assert_array_equal(got_out, ref_out)
    # 3-D labelling of everything (no outside runs skipped) == scipy's 6-connected labels
    K.union_z(row_ptr, starts, ends, shape[1], 1, 5, parent, np.zeros(n, np.uint8))
    K.union_z(row_ptr, starts, ends, shape[1], 5, shape[0], parent, np.zeros(n, np.uint8))
    labels = np.empty(n, np.int32)
    n_lab = K.label_runs(parent, labels)
    ref, n_ref = ndi.label(air)
    assert n_lab == n_ref
    got = _paint_labels(shape, row_ptr, starts, ends, labels)
    assert _same_partition(got, ref, air)


def test_body_span_is_the_row_extent_of_the_largest_8_connected_tissue_region():
    rng = np.random.default_rng(7)
    shape = (5, 40, 50)
    image = np.where(rng.random(shape) < 0.45, -1000, 40).astype(np.int16)
    image[:, 8:30, 10:40] = np.where(rng.random((5, 22, 30)) < 0.1, -1000, 40)  # a "body"
    row_ptr, starts, ends, _ = _runs(image, -320)
    per_slice = row_ptr[shape[1] :: shape[1]] - row_ptr[: -1 : shape[1]]
    lo = np.empty(shape[0] * shape[1], np.int32)
    hi = np.empty_like(lo)
    K.body_span(
        row_ptr,
        starts,
        ends,
        shape[1],
        shape[2],
        0,
        shape[0],
        int(per_slice.max()) + shape[1],
        lo,
        hi,
    )
    for z in range(shape[0]):
        lab, _ = ndi.label(image[z] >= -320, structure=np.ones((3, 3)))
        body = lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1
        for y in range(shape[1]):
            xs = np.nonzero(body[y])[0]
            expect = (xs[0], xs[-1] + 1) if xs.size else (-1, -1)
            assert (lo[z * shape[1] + y], hi[z * shape[1] + y]) == expect


@pytest.mark.parametrize("max_area", [-1, 6])
def test_fill_holes_slices_matches_scipy(max_area):
    rng = np.random.default_rng(8)
    mask = (rng.random((6, 30, 41)) < 0.6).astype(np.uint8)
    ref = np.empty_like(mask)
    for z in range(mask.shape[0]):
        holes = ndi.binary_fill_holes(mask[z]) & (mask[z] == 0)
        lab, _ = ndi.label(holes)
        sizes = np.bincount(lab.ravel())
        ok = sizes <= max_area if max_area >= 0 else np.ones_like(sizes, bool)
        ref[z] = mask[z] | (holes & ok[lab])
    got = mask.copy()
    K.fill_holes_slices(got, 0, mask.shape[0], 0, mask.shape[1], 0, mask.shape[2], max_area)
    np.testing.assert_array_equal(got, ref)
    # a box holding all the foreground gives the same result
    boxed = np.zeros((6, 40, 60), np.uint8)
    boxed[:, 5:35, 9:50] = mask
    K.fill_holes_slices(boxed, 0, 6, 4, 36, 8, 51, max_area)
    np.testing.assert_array_equal(boxed[:, 5:35, 9:50], ref)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_runs_are_the_maximal_intervals_below_the_threshold(dtype, rng):
    image = rng.choice(np.array([-1000, -960, -800, -320, 40], dtype), (4, 6, 17))
    image[:, :, 0] = -1000  # runs that start at the first column
    image[:, :, -1] = -1000  # and end at the last one
    if dtype == np.float32:
        image[1, 2, 3:9] = np.nan  # NaN is never air
    row_ptr, starts, ends, n_gas = _runs(image, -320)
    got = [
        (r // 6, r % 6, starts[i], ends[i], n_gas[i])
        for r in range(24)
        for i in range(row_ptr[r], row_ptr[r + 1])
    ]
    assert got == _naive_runs(image, -320, -950)  # strict: -320 itself is not air


def test_runs_of_a_slice_range_leave_the_others_alone(rng):
    image = rng.choice(np.int16([-1000, 40]), (5, 4, 9))
    counts = np.full(20, -1, np.int64)
    K.runs_count(image, -320, 2, 4, counts)
    assert (counts[:8] == -1).all() and (counts[16:] == -1).all()
    full = np.empty(20, np.int64)
    K.runs_count(image, -320, 0, 5, full)
    np.testing.assert_array_equal(counts[8:16], full[8:16])
    K.runs_count(image, -320, 3, 3, counts)  # an empty range writes nothing
    assert (counts[:8] == -1).all()


def test_run_stats_match_per_voxel_sums(rng):
    ny = 7
    image = np.where(rng.random((4, ny, 9)) < 0.5, -1000, 40).astype(np.int16)
    image[1, 3, 2:5] = -900  # air but not gas
    row_ptr, starts, ends, n_gas = _runs(image, -320)
    n = starts.shape[0]
    parent = np.empty(n, np.int32)
    K.union_slices(row_ptr, starts, ends, ny, 9, 0, 4, parent, np.zeros(n, np.uint8))
    K.union_z(row_ptr, starts, ends, ny, 1, 4, parent, np.zeros(n, np.uint8))
    labels = np.empty(n, np.int32)
    n_lab = K.label_runs(parent, labels)
    lo = rng.integers(-1, 4, 4 * ny).astype(np.int32)  # per-row body extent; -1: no body
    hi = (lo + rng.integers(1, 6, 4 * ny)).astype(np.int32)
    hz, hy, hx = 2.5, -0.5, 0.25
    vol, gas, inside, hmin, hmax, box = K.run_stats(
        row_ptr, starts, ends, n_gas, labels, ny, lo, hi, hz, hy, hx, n_lab
    )
    lab = _paint_labels(image.shape, row_ptr, starts, ends, labels)
    row_of = np.repeat(np.arange(4 * ny), np.diff(row_ptr))  # the row of every run
    for c in range(n_lab):
        z, y, x = np.nonzero(lab == c)
        assert vol[c] == z.size
        assert gas[c] == int(np.sum(image[z, y, x] < -950))
        assert box[c].tolist() == [z.min(), z.max() + 1, y.min(), y.max() + 1, x.min(), x.max() + 1]
        exp_inside, heights = 0, []
        for i in np.flatnonzero(labels == c):  # a run is inside when wholly in its row's extent
            r = row_of[i]
            s, e = starts[i], ends[i]
            if lo[r] >= 0 and s >= lo[r] and e <= hi[r]:
                exp_inside += e - s
            heights.append(hz * (r // ny) + hy * (r % ny) + hx * 0.5 * (s + e - 1))
        assert inside[c] == exp_inside
        assert np.isclose(hmin[c], min(heights)) and np.isclose(hmax[c], max(heights))


def test_paint_runs_paints_the_kept_labels_of_its_slices(rng):
    image = np.where(rng.random((5, 6, 8)) < 0.5, -1000, 40).astype(np.int16)
    row_ptr, starts, ends, _ = _runs(image, -320)
    labels = rng.integers(0, 3, starts.shape[0]).astype(np.int32)
    keep = np.array([1, 0, 1], np.uint8)
    mask = np.zeros(image.shape, np.uint8)
    K.paint_runs(mask, row_ptr, starts, ends, labels, keep, 1, 4)
    lab = _paint_labels(image.shape, row_ptr, starts, ends, labels)
    expected = np.isin(lab, [0, 2]).astype(np.uint8)
    expected[:1] = 0
    expected[4:] = 0
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(("z0", "z1"), [(0, 7), (2, 5), (3, 4), (4, 4), (0, 1)])
def test_mask_bbox_matches_nonzero(z0, z1, rng):
    mask = (rng.random((7, 9, 11)) < 0.02).astype(np.uint8)
    mask[0] = 0
    got = K.mask_bbox(mask, z0, z1).tolist()
    z, y, x = np.nonzero(mask[z0:z1])
    if z.size == 0:
        assert got[0] > got[1] and got[2] > got[3] and got[4] > got[5]  # empty: start > stop
    else:
        assert got == [z.min() + z0, z.max() + z0 + 1, y.min(), y.max() + 1, x.min(), x.max() + 1]


def test_mask_bbox_of_a_single_voxel():
    mask = np.zeros((1, 4, 5), np.uint8)
    mask[0, 3, 4] = 7
    assert K.mask_bbox(mask, 0, 1).tolist() == [0, 1, 3, 4, 4, 5]
