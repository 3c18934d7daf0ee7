"""Tests of ctflow.ops.interpolation: tap tables and axis filters against scipy.ndimage.

References: ``scipy.ndimage.map_coordinates`` (linear with ``mode="nearest"``, ``"mirror"`` and
``"grid-constant"``; cubic with a mirror-boundary prefilter), ``spline_filter`` and
``gaussian_filter1d``. The full resampler is tested in tests/ops/test_resample.py, the numba
kernels in tests/kernels/test_resample.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctflow.kernels.resample import gaussian_axis
from ctflow.ops.interpolation import (
    along_axis,
    axis_table,
    bspline_coefficients,
    gaussian_weights,
    smooth_for_downsampling,
)

MODES = {"edge": "nearest", "reflect": "mirror", "constant": "grid-constant"}


def _positions(n_old, n_new, ratio):
    return (n_old - 1) / 2 + (np.arange(n_new) - (n_new - 1) / 2) * ratio


def _apply(table, f, cval=0.0):
    idx, w, inside = table
    v = np.sum(w.astype(np.float64) * f[idx], axis=1)
    return v * inside + cval * (1.0 - inside)


@pytest.mark.parametrize("padding", list(MODES))
@pytest.mark.parametrize(("n_old", "n_new", "ratio"), [(7, 12, 0.73), (9, 4, 2.6), (5, 5, 1.0)])
def test_linear_tables_are_scipy_linear_interpolation(padding, n_old, n_new, ratio, rng):
    f = rng.uniform(-100.0, 100.0, n_old)
    got = _apply(axis_table(n_old, n_new, ratio, 1, padding), f, cval=-50.0)
    p = _positions(n_old, n_new, ratio)
    ref = ndi.map_coordinates(f, [p], order=1, mode=MODES[padding], cval=-50.0)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("padding", list(MODES))
def test_cubic_tables_are_scipy_cubic_interpolation_inside(padding, rng):
    f = rng.uniform(-100.0, 100.0, 11)
    coef = ndi.spline_filter1d(f, order=3, mode="mirror")
    got = _apply(axis_table(11, 17, 0.6, 3, padding), coef)
    ref = ndi.map_coordinates(f, [_positions(11, 17, 0.6)], order=3, mode="mirror")
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)  # all inside: padding moot


def test_nearest_tables_round_half_up_and_one_sample_axes():
    idx, w, inside = axis_table(4, 7, 0.5, 0, "edge")  # positions 0, 0.5, ..., 3: ties go up
    assert idx.ravel().tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert w.ravel().tolist() == [1.0] * 7 and inside.tolist() == [1.0] * 7
    for order in (0, 1, 3):
        idx, w, _ = axis_table(1, 3, 1.0, order, "reflect")
        assert (idx == 0).all() and np.allclose(w.sum(axis=1), 1.0)


def test_bspline_coefficients_are_scipy_spline_filter(rng):
    x = rng.uniform(-1000.0, 1000.0, (5, 7, 18)).astype(np.int16)
    c = bspline_coefficients(x, 2)
    assert c.dtype == np.float32 and not np.shares_memory(c, x)
    ref = ndi.spline_filter(x.astype(np.float64), order=3, mode="mirror")
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=2e-2)
    own = x.astype(np.float32)
    assert bspline_coefficients(own, 1, in_place=True) is own
    np.testing.assert_array_equal(own, c)


def test_smoothing_is_a_gaussian_per_downsampled_axis(rng):
    x = rng.uniform(-1000.0, 1000.0, (6, 20, 21)).astype(np.float32)
    ratios = np.array([0.5, 3.0, 2.0])  # z is upsampled: not smoothed
    out = smooth_for_downsampling(x, ratios, 2)
    ref = x.astype(np.float64)
    for axis, f in enumerate(ratios):
        if f > 1:
            ref = ndi.gaussian_filter1d(ref, (f - 1) / 2, axis=axis, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-2)
    np.testing.assert_allclose(gaussian_weights(1.0).sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_along_axis_is_thread_count_invariant(axis, rng):
    x = rng.standard_normal((3, 8, 19)).astype(np.float32)
    one, many = x.copy(), x.copy()
    w = gaussian_weights(1.2)
    along_axis(one, axis, gaussian_axis, (w,), 1)
    along_axis(many, axis, gaussian_axis, (w,), 4)  # more threads than outer rows for axis 0
    np.testing.assert_array_equal(one, many)
    ref = ndi.correlate1d(x.astype(np.float64), w.astype(np.float64), axis=axis, mode="mirror")
    np.testing.assert_allclose(one, ref, rtol=1e-4, atol=1e-4)
