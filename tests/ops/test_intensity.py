"""Tests of ctflow.ops.intensity.normalize_hu against numpy expressions (kernels: tests/kernels)."""

from __future__ import annotations

import numpy as np
import pytest

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops.intensity import normalize_hu


def _ref_t(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The documented formula in float64: (clip(x, lo, hi) - lo) / (hi - lo)."""
    return (np.clip(x.astype(np.float64), lo, hi) - lo) / (hi - lo)


def _volume(rng: np.random.Generator, dtype, shape=(8, 20, 24)) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.uniform(-2500.0, 2500.0, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -3000), min(info.max, 3000), size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32, np.float64])
@pytest.mark.parametrize(("lo", "hi"), [(-1000.0, 400.0), (-160.5, 240.25), (0.0, 255.0)])
def test_float32_matches_numpy(rng, dtype, lo, hi):
    img = _volume(rng, dtype)
    out = normalize_hu(img, lo, hi)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out, _ref_t(img, lo, hi), rtol=0, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
@pytest.mark.parametrize(("lo", "hi"), [(-1000.0, 400.0), (0.0, 510.0), (-3.0, 7.0)])
def test_uint8_matches_numpy_rounding(rng, dtype, lo, hi):
    img = _volume(rng, dtype)
    out = normalize_hu(img, lo, hi, "uint8")
    expected = np.floor(_ref_t(img, lo, hi) * 255.0 + 0.5).astype(np.uint8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_uint8_rounds_halves_up():
    # window 0..510: x / 510 * 255 = x / 2, so odd x are exact .5 ties
    img = np.array([0, 1, 3, 5, 254, 509, 510], dtype=np.int16)
    out = normalize_hu(img, 0.0, 510.0, np.uint8)
    assert out.tolist() == [0, 1, 2, 3, 127, 255, 255]


def test_known_values():
    img = np.array([-2000, -1000, -300, 400, 3000], dtype=np.int16).reshape(1, 1, 5)
    assert normalize_hu(img, -1000, 400).ravel().tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_threads_and_chunks_give_identical_output(rng):
    img = _volume(rng, np.int16, shape=(16, 256, 256))
    for dtype in ("float32", "uint8"):
        one = normalize_hu(img, dtype=dtype, n_threads=1)
        for n in (2, 3):
            np.testing.assert_array_equal(normalize_hu(img, dtype=dtype, n_threads=n), one)


def test_out_and_in_place(rng):
    img = _volume(rng, np.float32)
    expected = _ref_t(img, -1000.0, 400.0)
    out = np.empty(img.shape, np.float32)
    assert normalize_hu(img, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    result = normalize_hu(img, out=img)  # in place on the float32 input
    assert result is img
    np.testing.assert_allclose(img, expected, rtol=0, atol=1e-6)


def test_non_contiguous_input(rng):
    img = _volume(rng, np.int16)
    view = img.transpose(2, 0, 1)[:, ::2]
    np.testing.assert_allclose(normalize_hu(view), _ref_t(view, -1000.0, 400.0), atol=1e-6)


def test_nan_propagates_to_float32_and_inf_clips():
    img = np.array([np.nan, -np.inf, np.inf, -300.0], dtype=np.float32)
    out = normalize_hu(img, -1000.0, 400.0)
    assert np.isnan(out[0])
    assert out[1:].tolist() == [0.0, 1.0, 0.5]


def test_nan_with_uint8_output_raises():
    img = np.array([[[0.0, np.nan, np.nan]]], dtype=np.float32)
    with pytest.raises(
        InvalidScanError, match=r"normalize_hu: image must not contain NaN .* 2 NaN"
    ):
        normalize_hu(img, dtype="uint8")


def test_empty_array():
    out = normalize_hu(np.zeros((0, 4, 4), np.int16))
    assert out.shape == (0, 4, 4) and out.dtype == np.float32


IMG = np.zeros((2, 3, 4), dtype=np.int16)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((IMG, 400.0, -1000.0), {}, r"normalize_hu: min_hu must be < max_hu; got min_hu=400"),
        ((IMG, 5.0, 5.0), {}, r"normalize_hu: min_hu must be < max_hu"),
        ((IMG, float("nan"), 400.0), {}, r"normalize_hu: min_hu must be a finite number"),
        ((IMG, -1000.0, "400"), {}, r"normalize_hu: max_hu must be a finite number"),
        ((IMG, True, 400.0), {}, r"normalize_hu: min_hu must be a finite number"),
        ((IMG, -1000.0, 400.0, "float64"), {}, r"normalize_hu: dtype must be one of float32"),
        ((IMG, -1000.0, 400.0, np.int16), {}, r"normalize_hu: dtype must be one of float32"),
        ((IMG, -1000.0, 400.0, "bogus"), {}, r"normalize_hu: dtype must be one of float32"),
        (([1, 2, 3],), {}, r"normalize_hu: image must be an ndarray; got list"),
        ((IMG.astype(bool),), {}, r"normalize_hu: image must be an integer, float32 or float64"),
        ((IMG.astype(np.complex64),), {}, r"got dtype complex64"),
        ((IMG,), {"n_threads": 0}, r"normalize_hu: n_threads must be an integer >= 1; got 0"),
        ((IMG,), {"out": np.empty((2, 3, 4), np.uint8)}, r"normalize_hu: out must be a float32"),
        ((IMG,), {"out": np.empty((2, 3, 5), np.float32)}, r"normalize_hu: out must be a float32"),
        (
            (IMG,),
            {"out": np.empty((2, 3, 8), np.float32)[:, :, ::2]},
            r"normalize_hu: out must be C-contiguous",
        ),
    ],
)
def test_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        normalize_hu(*args, **kwargs)
