"""The separable blur kernels (:mod:`ctflow.kernels.blur`) against a float64 numpy convolution.

The kernels are called directly with any symmetric half-kernels (``w[0]`` the centre tap,
``w[k]`` the taps at ``+-k``; not only Gaussians, not normalised, radii larger than the axis) and
compared with a hand-written correlation in float64 whose borders repeat the edge voxel (scipy's
``mode="nearest"``; the reference itself is checked against ``scipy.ndimage.correlate1d``).

Elsewhere: tests/ops/test_intensity_random.py checks
:func:`ctflow.ops.intensity_random.gaussian_blur` (Gaussian kernels, contiguous inputs) against
``scipy.ndimage.gaussian_filter``; the cases here are the kernels' own contract (dtypes, layouts,
ranges of planes and rows, in place).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctflow.kernels.blur import blur_xy, blur_z

pytestmark = pytest.mark.timeout(120)

U32 = 2.0**-24  # unit roundoff of float32


def _half(rng: np.random.Generator, radius: int) -> np.ndarray:
    """A positive half-kernel of ``radius`` (float32, not normalised)."""
    return rng.uniform(0.05, 1.0, radius + 1).astype(np.float32)


def _full(w: np.ndarray) -> np.ndarray:
    """The whole symmetric kernel ``w[r] .. w[1] w[0] w[1] .. w[r]`` in float64 (exact)."""
    w = w.astype(np.float64)
    return np.concatenate([w[:0:-1], w])


def _correlate_nearest(v: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Float64 correlation along ``axis`` with the half-kernel ``w``, edges repeated."""
    r = w.size - 1
    pad = [(0, 0)] * v.ndim
    pad[axis] = (r, r)
    p = np.pad(v.astype(np.float64), pad, mode="edge")
    n = v.shape[axis]
    out = np.zeros(v.shape, np.float64)
    for k, wk in enumerate(_full(w)):  # offset k - r
        out += wk * np.take(p, np.arange(k, k + n), axis=axis)
    return out


def _reference(src, wz, wy, wx) -> np.ndarray:
    # the kernel reads its source as float32: the reference starts from the same values
    v = np.asarray(src).astype(np.float32).astype(np.float64)
    return _correlate_nearest(_correlate_nearest(_correlate_nearest(v, wx, 2), wy, 1), wz, 0)


def _bound(src, wz, wy, wx) -> float:
    """A forward error bound of the float32 kernels.

    Each output of one pass sums ``w0 * c + w1 * (l1 + r1) + ...``: every term goes through at
    most ``r + 2`` float32 roundings (the pair sum, the product, the accumulations), so the
    pass's error is at most ``gamma(r + 2) = (r + 2) u / (1 - (r + 2) u)`` times the sum of the
    absolute terms, itself at most ``sum|w| * max|input|`` (``sum|w|`` of the whole kernel).
    The errors of earlier passes are carried through the next ones times their ``sum|w|``.
    """
    m = float(np.abs(np.asarray(src).astype(np.float32).astype(np.float64)).max())
    total = 1.0
    growth = 1.0
    for w in (wx, wy, wz):
        n = w.size + 1  # r + 2
        gamma = n * U32 / (1 - n * U32)
        total *= 1 + gamma
        growth *= float(np.abs(_full(w)).sum())
    return (total - 1.0) * growth * m * 1.01 + 1e-30


def _blur(src, wz, wy, wx) -> np.ndarray:
    out = np.empty(src.shape, np.float32)
    blur_xy(src, out, wy, wx, 0, src.shape[0])
    blur_z(out, wz, 0, src.shape[1])
    return out


def _volume(rng, shape, dtype) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.normal(0.0, 300.0, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1024), min(info.max, 3071), shape, endpoint=True).astype(
        dtype
    )


def test_the_reference_is_scipys_correlate1d_nearest():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 6, 7))
    w = _half(rng, 4)  # radius 4 > half the z axis: the edge repeated many times
    for axis in range(3):
        ref = ndi.correlate1d(v, _full(w), axis=axis, mode="nearest")
        np.testing.assert_allclose(_correlate_nearest(v, w, axis), ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_blur_equals_the_float64_convolution(dtype, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 13, 3))
    src = _volume(rng, shape, dtype)
    # radii 0..6: longer than some axes (clamped at both ends), 0 on some (no blur there)
    wz, wy, wx = (_half(rng, int(r)) for r in rng.integers(0, 7, 3))
    out = _blur(src, wz, wy, wx)
    assert out.dtype == np.float32 and out.shape == src.shape
    ref = _reference(src, wz, wy, wx)
    err = np.abs(out.astype(np.float64) - ref).max()
    # a worst-case bound; the errors seen are 2-10 % of it (2-3 float32 ulps of the largest
    # output), while a wrong tap, weight or border would be off by a good part of a voxel value
    assert err <= _bound(src, wz, wy, wx), (err, _bound(src, wz, wy, wx))


@pytest.mark.parametrize("seed", range(3))
def test_blur_reads_non_contiguous_sources(seed):
    # the op makes its source contiguous; the kernels read any layout
    rng = np.random.default_rng(10 + seed)
    big = _volume(rng, (9, 22, 26), np.int16)
    views = [big[::-1, ::2, 1::2], np.asfortranarray(big), big.transpose(1, 0, 2)[:, :, ::-3]]
    src = views[seed]
    wz, wy, wx = _half(rng, 2), _half(rng, 3), _half(rng, 1)
    out = _blur(src, wz, wy, wx)
    np.testing.assert_array_equal(out, _blur(np.ascontiguousarray(src), wz, wy, wx))
    err = np.abs(out.astype(np.float64) - _reference(src, wz, wy, wx)).max()
    assert err <= _bound(src, wz, wy, wx)


def test_unit_half_kernels_copy_exactly():
    # length-1 half-kernels [1.0]: no blur along that axis; the xy pass alone is a float32 copy
    rng = np.random.default_rng(3)
    src = _volume(rng, (4, 5, 6), np.int16)
    one = np.ones(1, np.float32)
    np.testing.assert_array_equal(_blur(src, one, one, one), src.astype(np.float32))
    # blur along x only: rows are independent (every plane, every row the 1-D reference)
    wx = _half(rng, 2)
    out = _blur(src, one, one, wx)
    err = np.abs(out - _correlate_nearest(src, wx, 2)).max()
    assert err <= _bound(src, one, one, wx)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 9), (7, 1, 1), (1, 8, 1), (2, 2, 2)])
def test_tiny_volumes(shape):
    rng = np.random.default_rng(4)
    src = _volume(rng, shape, np.float32)
    wz, wy, wx = _half(rng, 3), _half(rng, 5), _half(rng, 2)
    out = _blur(src, wz, wy, wx)
    err = np.abs(out.astype(np.float64) - _reference(src, wz, wy, wx)).max()
    assert err <= _bound(src, wz, wy, wx)


def test_blur_xy_in_place_equals_out_of_place():
    # documented: src and out may be the same float32 array
    rng = np.random.default_rng(5)
    src = _volume(rng, (5, 9, 11), np.float32)
    for wy in (np.ones(1, np.float32), _half(rng, 3)):
        wx = _half(rng, 2)
        expected = np.empty(src.shape, np.float32)
        blur_xy(src, expected, wy, wx, 0, src.shape[0])
        inplace = src.copy()
        blur_xy(inplace, inplace, wy, wx, 0, src.shape[0])
        np.testing.assert_array_equal(inplace, expected)


def test_ranges_write_only_their_planes_and_rows_and_splitting_changes_nothing():
    rng = np.random.default_rng(6)
    src = _volume(rng, (9, 10, 12), np.int16)
    wz, wy, wx = _half(rng, 3), _half(rng, 2), _half(rng, 4)
    whole = _blur(src, wz, wy, wx)
    # blur_xy on planes [3, 6): the others untouched
    part = np.full(src.shape, np.nan, np.float32)
    blur_xy(src, part, wy, wx, 3, 6)
    assert np.isnan(part[:3]).all() and np.isnan(part[6:]).all()
    # the xy pass in pieces, then the z pass in pieces: bit-identical to one call each
    split = np.empty(src.shape, np.float32)
    for a, b in ((0, 2), (2, 3), (3, 9)):
        blur_xy(src, split, wy, wx, a, b)
    xy = split.copy()
    np.testing.assert_array_equal(split[3:6], part[3:6])
    for a, b in ((0, 4), (4, 5), (5, 10)):
        blur_z(split, wz, a, b)
    np.testing.assert_array_equal(split, whole)
    # blur_z on rows [2, 5): the other rows keep their xy values
    rows = xy.copy()
    blur_z(rows, wz, 2, 5)
    np.testing.assert_array_equal(rows[:, :2], xy[:, :2])
    np.testing.assert_array_equal(rows[:, 5:], xy[:, 5:])
    np.testing.assert_array_equal(rows[:, 2:5], whole[:, 2:5])


def test_blur_does_not_modify_its_source():
    rng = np.random.default_rng(7)
    src = _volume(rng, (4, 6, 5), np.float64)
    before = src.copy()
    _blur(src, _half(rng, 2), _half(rng, 2), _half(rng, 2))
    np.testing.assert_array_equal(src, before)
