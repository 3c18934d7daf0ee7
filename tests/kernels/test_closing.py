"""Tests of ctflow.kernels.closing against scipy.ndimage and naive numpy loops.

Kernel level: block counts on block grids that hang over the volume (negative origins, partial
slice ranges), the squared distance transform against ``distance_transform_edt`` (anisotropic,
no feature at all, one-sample axes, split ranges), the seed / outside / signed steps as numpy
expressions, and the trilinear painting of the coarse field against a per-voxel
interpolation. The whole closing is tested through ``segment_lungs`` in
tests/ops/test_lungs.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctflow.kernels import closing as K
from ctflow.kernels.lungs import runs_count, runs_fill


def _runs(mask):
    """Runs of the nonzero voxels of a 0/1 mask (as the lung kernels make them)."""
    image = np.where(mask, np.int16(-1000), np.int16(40))
    nz, ny, _ = image.shape
    counts = np.empty(nz * ny, np.int64)
    runs_count(image, -320, 0, nz, counts)
    row_ptr = np.zeros(nz * ny + 1, np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    starts, ends, gas = (np.empty(int(row_ptr[-1]), np.int32) for _ in range(3))
    runs_fill(image, -320, -950, 0, nz, row_ptr, starts, ends, gas)
    return row_ptr, starts, ends


def _edt(d, sp):
    K.edt_sq_x(d, sp[2], 0, d.shape[0])
    K.edt_sq_y(d, sp[1], 0, d.shape[0])
    K.edt_sq_z(d, sp[0], 0, d.shape[1])


@pytest.mark.parametrize(("origin", "f"), [((0, 0, 0), (2, 3, 2)), ((-3, -1, -2), (3, 2, 4))])
def test_coarse_count_sums_kept_voxels_per_block(origin, f, rng):
    mask = rng.random((9, 10, 11)) < 0.4
    row_ptr, starts, ends = _runs(mask)
    labels = rng.integers(0, 2, starts.shape[0]).astype(np.int32)
    keep = np.array([0, 1], np.uint8)
    cshape = (4, 5, 4)
    out = np.zeros(cshape, np.int32)
    (oz, oy, ox), (fz, fy, fx) = origin, f
    for z0, z1 in ((0, 4), (4, 9)):  # two calls over whole block rows of fine slices
        K.coarse_count(row_ptr, starts, ends, labels, keep, 10, oz, oy, ox, fz, fy, fx, z0, z1, out)
    kept = np.zeros(mask.shape, bool)
    for r in range(mask.shape[0] * mask.shape[1]):
        z, y = divmod(r, mask.shape[1])
        for i in range(row_ptr[r], row_ptr[r + 1]):
            kept[z, y, starts[i] : ends[i]] |= bool(keep[labels[i]])
    ref = np.zeros(cshape, np.int64)
    for z, y, x in np.argwhere(kept):
        b = ((z - oz) // fz, (y - oy) // fy, (x - ox) // fx)
        if all(0 <= v < n for v, n in zip(b, cshape)):  # outside the block grid: ignored
            ref[b] += 1
    np.testing.assert_array_equal(out, ref)


def test_squared_edt_matches_scipy():
    rng = np.random.default_rng(9)
    feat = rng.random((13, 17, 19)) < 0.03
    feat[0, 0, 0] = True
    sp = (2.5, 0.8, 1.3)
    d = np.where(feat, np.float32(0), np.float32(1e30))
    _edt(d, sp)
    ref = ndi.distance_transform_edt(~feat, sampling=sp) ** 2
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape", [(1, 6, 7), (5, 1, 4), (3, 4, 1), (1, 1, 1)])
def test_squared_edt_on_one_sample_axes(shape, rng):
    feat = rng.random(shape) < 0.3
    feat.flat[0] = True
    d = np.where(feat, np.float32(0), np.float32(1e30))
    _edt(d, (1.0, 0.7, 1.9))
    ref = ndi.distance_transform_edt(~feat, sampling=(1.0, 0.7, 1.9)) ** 2
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-4)


def test_squared_edt_without_any_feature_stays_far_and_ranges_split():
    d = np.full((3, 4, 5), np.float32(1e30))
    _edt(d, (1.0, 1.0, 1.0))
    assert (d >= np.float32(1e30)).all()
    feat = np.zeros((6, 5, 4), bool)
    feat[2, 1, 3] = True
    whole = np.where(feat, np.float32(0), np.float32(1e30))
    split = whole.copy()
    _edt(whole, (1.0, 2.0, 1.5))
    for fn, w, cuts in ((K.edt_sq_x, 1.5, (0, 2, 6)), (K.edt_sq_y, 2.0, (0, 5, 6)),
                        (K.edt_sq_z, 1.0, (0, 1, 5))):  # fmt: skip
        for a, b in itertools.pairwise(cuts):
            fn(split, w, a, b)
    np.testing.assert_array_equal(split, whole)


def test_seed_outside_and_signed_steps(rng):
    counts = rng.integers(0, 9, (3, 4, 5)).astype(np.int32)
    n_z, n_y, n_x = np.array([2, 2, 1]), np.array([2, 0, 2, 1]), np.array([2, 2, 2, 2, 1])
    d = np.full(counts.shape, -1.0, np.float32)
    K.closing_seed(counts, n_z, n_y, n_x, d, 1, 3)
    nb = n_z[:, None, None] * n_y[None, :, None] * n_x[None, None, :]
    seed = np.where((nb > 0) & (2 * counts >= nb), 0.0, np.float32(1e30)).astype(np.float32)
    np.testing.assert_array_equal(d[1:], seed[1:])
    assert (d[0] == -1.0).all()

    dist = rng.uniform(0.0, 50.0, (3, 4, 5)).astype(np.float32)
    out = dist.copy()
    K.closing_outside(out, np.float32(16.0), 0, 3)
    np.testing.assert_array_equal(out, np.where(dist <= 16.0, np.float32(1e30), 0.0))
    out = dist.copy()
    K.closing_signed(out, np.float32(4.5), 0, 2)
    np.testing.assert_allclose(out[:2], np.sqrt(dist[:2]) - 4.5, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[2], dist[2])


def _interpolated(g, shape, o, f):
    """Trilinear interpolation of node values g at every fine voxel; NaN outside the nodes."""
    coords = []
    for n, oo, ff in zip(shape, o, f):
        u = (np.arange(n) - oo - 0.5 * (ff - 1)) / ff  # node i sits at o + i f + (f - 1) / 2
        coords.append(u)
    zz, yy, xx = np.meshgrid(*coords, indexing="ij")
    inside = np.ones(shape, bool)
    for u, nc in zip((zz, yy, xx), g.shape):
        inside &= (np.floor(u) >= 0) & (np.floor(u) + 1 <= nc - 1)
    val = ndi.map_coordinates(g.astype(np.float64), [zz, yy, xx], order=1, mode="nearest")
    return np.where(inside, val, np.nan)


@pytest.mark.parametrize(("o", "f"), [((0, 0, 0), (2, 2, 2)), ((-3, -2, -5), (3, 2, 4))])
def test_paint_closing_sets_voxels_where_the_interpolated_field_is_positive(o, f, rng):
    shape = (10, 9, 13)
    g = rng.uniform(-1.0, 1.0, (6, 7, 6)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[0, 0, 0] = 1  # voxels are only ever set
    K.paint_closing(mask, g, *o, *f, 2, 9)
    val = _interpolated(g, shape, o, f)
    expected = np.where(np.nan_to_num(val, nan=-1.0) > 0, 1, 0).astype(np.uint8)
    expected[:2] = 0
    expected[9:] = 0
    expected[0, 0, 0] = 1
    clear = np.isnan(val) | (np.abs(val) > 1e-5)  # float32 weights: skip values at ~0
    np.testing.assert_array_equal(mask[clear], expected[clear])
