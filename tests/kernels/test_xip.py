"""Tests of ctflow.kernels.xip against numpy reductions over explicitly mirrored windows.

Kernel level: any ``start`` (negative, past the end), ``stride`` and ``depth`` (longer than the
axis), the ``inner == 1`` path, slices wider than :data:`~ctflow.kernels.xip.CHUNK`, one-slice
axes and an empty output. ``make_xip`` (validation, projections, padding rules, geometry) is
tested in tests/ops/test_xip.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from ctflow.kernels.xip import (
    CHUNK,
    reflect_index,
    window_rows,
    xip_max,
    xip_mean,
    xip_median,
    xip_min,
)

KERNELS = {"max": xip_max, "min": xip_min, "mean": xip_mean, "median": xip_median}


def _mirror(i, n):
    """np.pad(mode="reflect") index: the edge is not repeated."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    r = i % period
    return r if r < n else period - r


def _naive(src, n_out, depth, stride, start, mode):
    outer, n, inner = src.shape
    out = np.empty((outer, n_out, inner), np.float64)
    for k in range(n_out):
        rows = [_mirror(k * stride + start + t, n) for t in range(depth)]
        window = src[:, rows, :].astype(np.float64)
        if mode == "mean":  # float32 running sum, then / depth, as documented
            acc = np.zeros((outer, inner), np.float32)
            for t in range(depth):
                acc += src[:, rows[t], :].astype(np.float32)
            out[:, k, :] = acc / np.float32(depth)
        else:
            out[:, k, :] = {"max": np.max, "min": np.min, "median": np.median}[mode](window, 1)
    return out


@pytest.mark.parametrize("n", [1, 2, 5])
def test_reflect_index_is_numpy_reflect_padding(n):
    idx = np.arange(n)
    padded = np.pad(idx, 3 * n + 2, mode="reflect")
    for i, expected in zip(range(-3 * n - 2, 4 * n + 2), padded):
        assert reflect_index(i, n) == expected
    assert window_rows(2, n, 4, 3, -1).tolist() == [_mirror(5 + t, n) for t in range(4)]


@pytest.mark.parametrize("mode", list(KERNELS))
@pytest.mark.parametrize(
    ("shape", "depth", "stride", "start", "n_out"),
    [
        ((1, 9, 12), 3, 2, 0, 4),  # whole windows
        ((3, 9, 5), 4, 1, -2, 9),  # reflected at both ends
        ((6, 7, 1), 2, 3, -1, 3),  # inner == 1: the scalar path
        ((2, 4, 3), 9, 1, -4, 4),  # window longer than the axis
        ((2, 1, 4), 3, 1, -1, 2),  # a one-slice axis
        ((2, 5, 3), 2, 1, 0, 0),  # no output slice
    ],
)
def test_matches_numpy_over_mirrored_windows(mode, shape, depth, stride, start, n_out, rng):
    src = rng.integers(-1000, 1000, shape).astype(np.int16)
    dtype = np.int16 if mode in ("max", "min") else np.float32
    out = np.full((shape[0], n_out, shape[2]), 7, dtype)
    KERNELS[mode](src, out, depth, stride, start)
    ref = _naive(src, n_out, depth, stride, start, mode)
    if mode in ("max", "min"):
        np.testing.assert_array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_slices_wider_than_a_chunk(mode, rng):
    src = rng.standard_normal((1, 5, CHUNK + 37)).astype(np.float32)
    out = np.empty((1, 3, CHUNK + 37), np.float32)
    KERNELS[mode](src, out, 3, 1, 0)
    np.testing.assert_allclose(out, _naive(src, 3, 3, 1, 0, mode), rtol=1e-6)


def test_median_of_a_long_window_uses_the_sort_path(rng):
    src = rng.standard_normal((2, 40, 3))
    out = np.empty((2, 2, 3), np.float32)
    xip_median(src, out, 34, 6, 0)  # even depth > 32: sorted, mean of the two middles
    np.testing.assert_allclose(out, _naive(src, 2, 34, 6, 0, "median"), rtol=1e-6)
