"""Tests of ctflow.kernels.resample against numpy sums over the tap tables and scipy filters.

Kernel level: arbitrary tap tables (random indices and weights, zero weights, repeated source
slices), output slice ranges ``[z0, z1)``, the ``cval`` blend, rounding and clipping, and the
in-place axis filters on both of their code paths (wide and narrow ``inner``, a one-sample
axis, axes around the prefilter's horizon). ``resample`` / ``resize`` / ``unify_spacing``
(SimpleITK and scipy agreement, padding rules, dtypes) are tested in tests/ops/test_resample.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctflow.kernels.resample import (
    ROW_GROUP,
    _store_row,
    bspline_prefilter,
    gaussian_axis,
    resample_nearest,
    resample_separable,
)
from ctflow.ops.interpolation import HORIZON, POLE, axis_table, gaussian_weights


def _round_clip(v, lo, hi):
    return np.clip(np.where(v >= 0, np.floor(v + 0.5), -np.floor(0.5 - v)), lo, hi)


def _naive_separable(src, tables, blend, cval):
    """out[k, j, i] = sum wz wy wx src[zi, yi, xi], blended with cval by inz * iny * inx."""
    (zi, zw, inz), (yi, yw, iny), (xi, xw, inx) = tables
    s = src.astype(np.float64)
    v = np.zeros((len(zi), len(yi), len(xi)))
    for a in range(zi.shape[1]):
        for b in range(yi.shape[1]):
            for c in range(xi.shape[1]):
                w = zw[:, a, None, None] * yw[None, :, b, None] * xw[None, None, :, c]
                v += w.astype(np.float64) * s[np.ix_(zi[:, a], yi[:, b], xi[:, c])]
    if blend:
        w = inz[:, None, None] * iny[None, :, None] * inx[None, None, :]
        v = v * w + cval * (1.0 - w)
    return v


def _random_table(rng, n_old, n_new, taps):
    idx = rng.integers(0, n_old, (n_new, taps))
    w = rng.random((n_new, taps)).astype(np.float32)
    w[rng.random((n_new, taps)) < 0.2] = 0.0  # zero weights are skipped by the kernel
    w[:, 0] += 0.01  # never all zero
    inside = rng.choice(np.float32([0.0, 0.3, 1.0]), n_new)
    return idx, w, inside


def _run_separable(src, tables, blend, cval, round_out, lo, hi, dtype, z0=0, z1=None):
    (zi, zw, inz), (yi, yw, iny), (xi, xw, inx) = tables
    z1 = len(zi) if z1 is None else z1
    out = np.full((len(zi), len(yi), len(xi)), 77, dtype)
    u = [t.astype(np.uint64) for t in (zi, yi, xi)]
    resample_separable(
        src, out, u[0], zw, u[1], yw, u[2], xw, inz, iny, inx, blend, cval, round_out, lo, hi,
        z0, z1,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("taps", [1, 2, 4])
@pytest.mark.parametrize("blend", [False, True])
def test_separable_kernel_equals_the_sum_over_random_tables(taps, blend, rng):
    src = rng.integers(-1000, 1000, (6, 7, 8)).astype(np.int16)
    tables = [_random_table(rng, n, m, taps) for n, m in zip(src.shape, (9, 5, 11))]
    out = _run_separable(src, tables, blend, -1000.0, False, 0.0, 0.0, np.float32)
    ref = _naive_separable(src, tables, blend, -1000.0)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("padding", ["edge", "reflect", "constant"])
def test_separable_kernel_with_real_tables_rounds_and_clips(order, padding, rng):
    src = rng.uniform(-40000.0, 40000.0, (5, 6, 7)).astype(np.float32)
    ratios = (0.7, 1.6, 0.45)
    tables = [axis_table(n, m, r, order, padding) for n, m, r in zip(src.shape, (8, 4, 15), ratios)]
    blend = padding == "constant"
    lo, hi = -32768.0, 32767.0
    out = _run_separable(src, tables, blend, 5.0, True, lo, hi, np.int16)
    ref = _round_clip(_naive_separable(src, tables, blend, 5.0), lo, hi)
    assert np.abs(out - ref).max() <= 1  # float32 sums may round a near-.5 value apart
    assert (out == ref).mean() > 0.98
    assert out.max() == hi or ref.max() < hi  # clipping happened where it should


def test_separable_kernel_fills_only_its_slice_range_and_is_split_invariant(rng):
    src = rng.standard_normal((9, 5, 6)).astype(np.float32)
    tables = [axis_table(n, m, 0.8, 1, "edge") for n, m in zip(src.shape, (11, 6, 7))]
    whole = _run_separable(src, tables, False, 0.0, False, 0.0, 0.0, np.float32)
    part = _run_separable(src, tables, False, 0.0, False, 0.0, 0.0, np.float32, 3, 7)
    np.testing.assert_array_equal(part[3:7], whole[3:7])
    assert (part[:3] == 77).all() and (part[7:] == 77).all()
    empty = _run_separable(src, tables, False, 0.0, False, 0.0, 0.0, np.float32, 4, 4)
    assert (empty == 77).all()


@pytest.mark.parametrize(
    ("dtype", "lo", "hi"),
    [(np.int16, -32768.0, 32767.0), (np.uint8, 0.0, 255.0), (np.int32, -(2.0**31), 2.0**31 - 1)],
)
def test_row_store_rounds_half_away_from_zero_exactly(dtype, lo, hi, rng):
    """The vectorised float32 rounding (small integer types) equals the float64 reference."""
    f32 = np.float32
    ties = np.arange(-40.0, 40.0) + 0.5
    near = np.concatenate(
        [np.nextafter(ties.astype(f32), f32(np.inf)), np.nextafter(ties.astype(f32), f32(-np.inf))]
    )
    edges = [lo - 0.5, lo - 0.49, lo + 0.5, hi + 0.5, hi + 0.49, hi - 0.5, 1e9, -1e9, 0.49999997]
    noise = rng.normal(0, 3000, 4000)
    acc = np.concatenate([ties, near, edges, -np.asarray(edges), noise]).astype(f32)
    out = np.zeros(acc.size, dtype)
    ones = np.ones(acc.size, f32)
    _store_row(out, acc.copy(), f32(1), ones, False, 0.0, True, lo, hi)
    np.testing.assert_array_equal(out, _round_clip(acc.astype(np.float64), lo, hi).astype(dtype))


@pytest.mark.parametrize("round_out", [False, True])
def test_nearest_kernel_gathers_and_stores_cval_outside(round_out, rng):
    src = rng.uniform(-300.0, 300.0, (4, 5, 6))
    iz, iy, ix = (rng.integers(0, n, m) for n, m in zip(src.shape, (6, 3, 7)))
    inz, iny, inx = (rng.choice(np.float32([0.0, 1.0]), m, p=[0.2, 0.8]) for m in (6, 3, 7))
    out = np.full((6, 3, 7), 77.0)
    lo, hi = -100.0, 100.0
    resample_nearest(
        src, out, *(a.astype(np.uint64) for a in (iz, iy, ix)), inz, iny, inx, -9.0,
        round_out, lo, hi, 1, 5,
    )  # fmt: skip
    ref = src[np.ix_(iz, iy, ix)]
    if round_out:
        ref = _round_clip(ref, lo, hi)
    inside = (inz[:, None, None] * iny[None, :, None] * inx[None, None, :]) != 0
    ref = np.where(inside, ref, -9.0)
    np.testing.assert_array_equal(out[1:5], ref[1:5])
    assert (out[0] == 77).all() and (out[5] == 77).all()


@pytest.mark.parametrize("n", [2, 3, 5, HORIZON, HORIZON + 1, 40])
@pytest.mark.parametrize("inner", [1, 3, ROW_GROUP, 21])
def test_bspline_prefilter_matches_scipy_mirror(n, inner, rng):
    outer = ROW_GROUP + 3  # not a multiple of the row groups
    x = rng.uniform(-1000.0, 1000.0, (outer, n, inner))
    c = x.astype(np.float32)
    bspline_prefilter(c, POLE, HORIZON)
    ref = ndi.spline_filter1d(x, order=3, axis=1, mode="mirror")
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=2e-2)


def test_bspline_prefilter_leaves_a_one_sample_axis_alone():
    c = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    bspline_prefilter(c, POLE, HORIZON)
    np.testing.assert_array_equal(c, np.arange(6).reshape(2, 1, 3))


@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.5])
@pytest.mark.parametrize(("n", "inner"), [(1, 20), (2, 3), (9, 1), (9, ROW_GROUP), (30, 17)])
def test_gaussian_axis_matches_scipy_mirror(sigma, n, inner, rng):
    x = rng.uniform(-1000.0, 1000.0, (3, n, inner))
    c = x.astype(np.float32)
    w = gaussian_weights(sigma)
    gaussian_axis(c, w)
    ref = ndi.correlate1d(x, w.astype(np.float64), axis=1, mode="mirror")
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=2e-2)
