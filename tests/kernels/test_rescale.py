"""The DICOM rescale kernels (:mod:`ctflow.kernels.rescale`) against a numpy float64 reference.

``HU = stored * slope + intercept`` in float64, ``-1000`` where ``pad_lo <= stored <= pad_hi``;
:func:`rescale_int16` must give exactly that as int16 (or report -1 when a HU leaves int16) and
:func:`rescale_float32` exactly that rounded once to float32. Both return the padding count.

Elsewhere: tests/io/test_dicom_quick.py already checks both kernels on 5000 values of six integer
dtypes with three integer and two fractional (slope, intercept) pairs and four padding ranges,
plus one overflow case. The cases here are not those: random sizes (empty and single values
included), random slopes and intercepts up to the documented limits, int64 and 32-bit sources
with large values, the int16 limits exactly, padding everywhere / nowhere / at one value, both
paths of :func:`rescale_int16` (vectorised, and voxel by voxel when the padding range meets the
values), and the way the caller (:mod:`ctflow.io.dicom.pixels`) hands them slices of a volume.
"""

from __future__ import annotations

import numpy as np
import pytest

from ctflow.kernels.rescale import AIR_HU, rescale_float32, rescale_int16

pytestmark = pytest.mark.timeout(120)

INT_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64]
NO_PADDING = (1, 0)  # pad_lo > pad_hi: no padding (what the caller passes without one)


def _reference(stored, slope, intercept, pad) -> tuple[np.ndarray, int]:
    """HU in float64 and the padding count (``pad=None``: no padding)."""
    hu = stored.astype(np.float64) * slope + intercept
    mask = np.zeros(stored.shape, bool)
    if pad is not None:
        s = stored.astype(np.int64)
        mask = (s >= pad[0]) & (s <= pad[1])
    hu[mask] = AIR_HU
    return hu, int(mask.sum())


def _stored(rng, dtype, size, lo=None, hi=None) -> np.ndarray:
    info = np.iinfo(dtype)
    lo = int(info.min) if lo is None else max(int(info.min), lo)
    hi = int(info.max) if hi is None else min(int(info.max), hi)
    return rng.integers(lo, hi, size=size, endpoint=True).astype(dtype)


def _int16_case(rng, dtype):
    """Stored values, an integer slope and intercept whose HU fit int16, and a padding range."""
    slope = int(rng.choice([1, -1, 2, 3, -4, 7]))
    stored = _stored(rng, dtype, int(rng.integers(0, 3000)), -4000, 4000)
    if stored.size:
        v = stored.astype(np.int64) * slope
        # the intercept that keeps every HU inside int16 (drawn within the room left)
        low, high = -32768 - int(v.min()), 32767 - int(v.max())
        intercept = int(rng.integers(low, high + 1)) if low <= high else 0
    else:
        intercept = int(rng.integers(-2000, 2000))
    return stored, slope, intercept


# --------------------------------------------------------------------------------- int16 path
@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_int16_equals_the_float64_reference(dtype, seed):
    rng = np.random.default_rng(1000 + seed)
    stored, slope, intercept = _int16_case(rng, dtype)
    lo, hi = (int(v) for v in np.sort(rng.integers(-50, 50, 2)))
    for pad in (None, (lo, hi), (lo, lo)):
        ref, n_ref = _reference(stored, slope, intercept, pad)
        fits = ref.size == 0 or (ref.min() >= -32768 and ref.max() <= 32767)
        assert fits  # the intercept was drawn so that every HU fits (air too)
        out = np.empty(stored.size, np.int16)
        n = rescale_int16(stored, out, slope, intercept, *(pad or NO_PADDING))
        assert n == n_ref
        np.testing.assert_array_equal(out, ref.astype(np.int16))


@pytest.mark.parametrize("padded", [False, True])
def test_int16_limits_are_inside_and_one_beyond_is_minus_one(padded):
    # both paths: the vectorised one (no padding value among the stored ones) and the exact one
    pad = (-5000, -5000) if padded else NO_PADDING
    stored = np.array([-5000, 0, 100, 200] if padded else [0, 100, 200], np.int32)
    out = np.empty(stored.size, np.int16)
    # the largest HU exactly 32767, the smallest -32768
    assert rescale_int16(stored, out, 1, 32767 - 200, *pad) == int(padded)
    assert out[-1] == 32767
    assert rescale_int16(stored, out, -1, -32768 + 200, *pad) == int(padded)
    assert out[-1] == -32768
    assert rescale_int16(stored, out, 1, 32768 - 200, *pad) == -1
    assert rescale_int16(stored, out, -1, -32769 + 200, *pad) == -1


def test_int16_at_the_documented_slope_and_intercept_limits():
    # |slope| <= 2**20, |intercept| <= 2**30: the int64 arithmetic does not overflow, so a huge
    # HU is reported (-1), never wrapped into int16
    stored = np.array([0, 1, 2, 65535], np.uint16)
    out = np.empty(4, np.int16)
    assert rescale_int16(stored, out, 2**20, 2**30, *NO_PADDING) == -1
    assert rescale_int16(stored, out, -(2**20), -(2**30), *NO_PADDING) == -1
    # the same extremes cancelled by the value: 1024 * 2**20 - 2**30 == 0 fits
    big = np.array([1024, 1025], np.int64)
    assert rescale_int16(big[:1], out[:1], 2**20, -(2**30), *NO_PADDING) == 0
    assert out[0] == 0
    assert rescale_int16(big[:1], out[:1], -(2**20), 2**30, *NO_PADDING) == 0
    assert out[0] == 0
    # 1025 * 2**20 - 2**30 == 2**20 does not fit: the range check sees it
    assert rescale_int16(big, out[:2], 2**20, -(2**30), *NO_PADDING) == -1


def test_padding_everywhere_nowhere_and_at_the_range_ends():
    stored = np.arange(-3, 4, dtype=np.int16)  # -3 .. 3
    out = np.empty(7, np.int16)
    f32 = np.empty(7, np.float32)
    # every value padding: all air
    assert rescale_int16(stored, out, 5, 100, -3, 3) == 7
    assert (out == AIR_HU).all()
    assert rescale_float32(stored, f32, 0.5, 1.5, -3, 3) == 7
    assert (f32 == AIR_HU).all()
    # a padding range just outside the values: nothing is padding (the fast path)
    assert rescale_int16(stored, out, 5, 100, 4, 10) == 0
    assert out.tolist() == [85, 90, 95, 100, 105, 110, 115]
    # pad_lo > pad_hi is no padding at all, even when the values lie between them
    assert rescale_int16(stored, out, 1, 0, 3, -3) == 0
    assert out.tolist() == stored.tolist()
    assert rescale_float32(stored, f32, 1.0, 0.0, 3, -3) == 0
    # both ends of the range are padding (closed interval)
    assert rescale_int16(stored, out, 1, 0, -3, -2) == 2
    assert out.tolist() == [AIR_HU, AIR_HU, -1, 0, 1, 2, 3]
    assert rescale_int16(stored, out, 1, 0, 3, 3) == 1
    assert out.tolist() == [-3, -2, -1, 0, 1, 2, AIR_HU]


# --------------------------------------------------------------------------------- float32 path
@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_float32_equals_the_float64_reference_rounded_once(dtype, seed):
    rng = np.random.default_rng(2000 + seed)
    stored = _stored(rng, dtype, int(rng.integers(0, 3000)), -(2**40), 2**40)
    slope = float(rng.choice([rng.uniform(-3, 3), rng.uniform(1e-4, 1e-2), 1.0 / 3.0]))
    intercept = float(rng.uniform(-(2**30), 2**30)) if seed == 3 else float(rng.normal(0, 1500))
    lo, hi = (int(v) for v in np.sort(rng.choice(stored, 2))) if stored.size else (1, 0)
    for pad in (None, (lo, hi), (lo, lo)):
        ref, n_ref = _reference(stored, slope, intercept, pad)
        out = np.empty(stored.size, np.float32)
        n = rescale_float32(stored, out, slope, intercept, *(pad or NO_PADDING))
        assert n == n_ref
        # documented: float64 per voxel, rounded once to float32 -> bit-identical to numpy's
        # (stored.astype(float64) * slope + intercept).astype(float32), no tolerance
        np.testing.assert_array_equal(out, ref.astype(np.float32))


def test_float32_rounds_once_not_twice():
    # a value where computing in float32 (or rounding the product before adding) differs from
    # one rounding of the float64 result
    stored = np.array([3, 7, 1001, 30001], np.int16)
    slope, intercept = 0.1, 0.3
    out = np.empty(4, np.float32)
    rescale_float32(stored, out, slope, intercept, *NO_PADDING)
    once = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    twice = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    assert not np.array_equal(once, twice)  # the case tells the two apart
    np.testing.assert_array_equal(out, once)


# --------------------------------------------------------------------------------- as called
def test_empty_and_single_values():
    for dtype in (np.int16, np.uint16):
        empty = np.empty(0, dtype)
        assert rescale_int16(empty, np.empty(0, np.int16), 1, -1024, *NO_PADDING) == 0
        assert rescale_int16(empty, np.empty(0, np.int16), 1, -1024, 0, 0) == 0
        assert rescale_float32(empty, np.empty(0, np.float32), 1.0, -1024.0, 0, 0) == 0
        one = np.array([7], dtype)
        out = np.empty(1, np.int16)
        assert rescale_int16(one, out, 2, -1024, *NO_PADDING) == 0 and out[0] == -1010
        assert rescale_int16(one, out, 2, -1024, 7, 7) == 1 and out[0] == AIR_HU
        f = np.empty(1, np.float32)
        assert rescale_float32(one, f, 0.5, -1024.0, 7, 7) == 1 and f[0] == AIR_HU


def test_slices_of_a_volume_as_the_reader_hands_them():
    # ctflow.io.dicom.pixels: one slice's stored values, flat and contiguous, into a flat view
    # of that slice of the output volume; the other slices are not touched
    rng = np.random.default_rng(5)
    stored = _stored(rng, np.uint16, (6, 9, 11), 0, 4095)
    stored[:, :2, :2] = 0  # padding in the corners
    vol = np.full(stored.shape, 12345, np.int16)
    counts = []
    for k in (1, 4):
        src = np.ascontiguousarray(stored[k]).reshape(-1)
        counts.append(rescale_int16(src, vol[k].reshape(-1), 1, -1024, 0, 0))
    ref, _ = _reference(stored, 1, -1024, (0, 0))
    for k in range(6):
        if k in (1, 4):
            np.testing.assert_array_equal(vol[k], ref[k].astype(np.int16))
        else:
            assert (vol[k] == 12345).all()
    assert counts == [int((stored[k] == 0).sum()) for k in (1, 4)]
    f32 = np.zeros(stored.shape, np.float32)
    n = rescale_float32(stored[2].reshape(-1), f32[2].reshape(-1), 0.5, -1024.0, 0, 0)
    assert n == int((stored[2] == 0).sum())
    np.testing.assert_array_equal(f32[2], _reference(stored[2], 0.5, -1024.0, (0, 0))[0])
