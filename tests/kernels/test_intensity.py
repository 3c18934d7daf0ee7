"""Tests of ctflow.kernels.intensity against the documented formula in numpy (float64).

Kernel level: flat ranges ``[a, b)`` (empty, partial, whole), what is left untouched outside
them, NaN / inf handling and the division-free and streaming variants. ``normalize_hu`` itself
(dtypes, windows, threads, errors) is tested in tests/ops/test_intensity.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from ctflow.kernels.intensity import (
    STREAM_STORES,
    normalize_float32,
    normalize_int16_float32_stream,
    normalize_int_float32,
    normalize_uint8,
)
from ctflow.ops.intensity import normalize_hu

EVERY_INT16 = np.arange(-32768, 32768, dtype=np.int16)
RANGES = [(0, 50), (0, 0), (7, 7), (3, 4), (13, 37), (49, 50)]


def _t(x, lo, hi):
    """The documented formula in float64: (clip(x, lo, hi) - lo) / (hi - lo)."""
    return (np.clip(x.astype(np.float64), lo, hi) - lo) / (hi - lo)


@pytest.mark.parametrize(("a", "b"), RANGES)
def test_float32_kernel_writes_only_its_range(a, b, rng):
    src = rng.uniform(-3000.0, 3000.0, 50).astype(np.float32)
    src[[5, 20]] = [np.nan, np.inf]
    out = np.full(50, -7.0, np.float32)
    normalize_float32(src, out, -1000.0, 400.0, a, b)
    expected = np.full(50, -7.0, np.float32)
    expected[a:b] = _t(src[a:b], -1000.0, 400.0).astype(np.float32)
    np.testing.assert_array_equal(out, expected)  # NaN stays NaN, inf clips to 1


@pytest.mark.parametrize(("a", "b"), RANGES)
def test_uint8_kernel_rounds_half_up_and_counts_nans(a, b, rng):
    src = rng.uniform(-1200.0, 600.0, 50)
    src[[3, 30, 31]] = np.nan
    src[10] = -1000.0 + 1400.0 * 0.5 / 255.0  # a tie: t * 255 = 0.5 exactly (to rounding)
    out = np.full(50, 9, np.uint8)
    n_nan = normalize_uint8(src, out, -1000.0, 400.0, a, b)
    part = src[a:b]
    expected = np.full(50, 9, np.uint8)
    expected[a:b] = np.floor(np.nan_to_num(_t(part, -1000.0, 400.0), nan=0.0) * 255.0 + 0.5)
    np.testing.assert_array_equal(out, expected)
    assert n_nan == int(np.isnan(part).sum())


@pytest.mark.parametrize(
    ("lo", "hi"), [(-1000.0, 400.0), (-1024.0, 3071.0), (-3.0, 7.0), (0.0, 1.0), (-32768, 32767)]
)
def test_division_free_kernel_equals_the_division_for_every_int16(lo, hi):
    out = np.empty(EVERY_INT16.size, np.float32)
    normalize_int_float32(EVERY_INT16, out, lo, hi, 1.0 / (hi - lo), 0, out.size)
    expected = np.empty_like(out)
    normalize_float32(EVERY_INT16, expected, lo, hi, 0, out.size)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, _t(EVERY_INT16, lo, hi).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_division_free_kernel_other_integer_dtypes(dtype, rng):
    info = np.iinfo(dtype)
    src = rng.integers(max(info.min, -5000), min(info.max, 5000), 1000).astype(dtype)
    out = np.empty(src.size, np.float32)
    normalize_int_float32(src, out, -100.0, 200.0, 1.0 / 300.0, 0, src.size)
    np.testing.assert_array_equal(out, _t(src, -100.0, 200.0).astype(np.float32))


@pytest.mark.skipif(not STREAM_STORES, reason="streaming stores are emitted on x86-64 only")
@pytest.mark.parametrize(("lo", "hi"), [(-1000.0, 400.0), (-1024.0, 3071.0), (-3.0, 7.0)])
def test_streaming_kernel_is_bit_identical_for_every_offset_and_length(lo, hi):
    """Aligned 16-voxel streaming stores plus scalar head and tail == the plain kernel."""
    src = np.concatenate([EVERY_INT16, EVERY_INT16[::-1], EVERY_INT16[:77]])
    inv = 1.0 / (hi - lo)
    for shift in (0, 1, 5, 15, 16, 17):  # output not 64-byte aligned by `shift` voxels
        for a, b in [(0, src.size), (3, 40), (10, 26), (0, 15), (7, 7), (1000, 65541)]:
            ref = np.full(src.size + 32, -5.0, np.float32)
            got = ref.copy()
            normalize_int_float32(src, ref[shift : shift + src.size], lo, hi, inv, a, b)
            normalize_int16_float32_stream(src, got[shift : shift + src.size], lo, hi, inv, a, b)
            np.testing.assert_array_equal(got, ref)  # nothing outside [a, b) is written
    # and through the public function, on a volume large enough for several threads
    vol = np.resize(EVERY_INT16, (40, 128, 128))
    expected = _t(vol, lo, hi).astype(np.float32)
    np.testing.assert_array_equal(normalize_hu(vol, lo, hi, n_threads=2), expected)
