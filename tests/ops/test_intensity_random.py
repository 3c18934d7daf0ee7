"""Tests of ctflow.ops.intensity_random: each op against an independent numpy / scipy reference."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops import intensity_blocks
from ctflow.ops import intensity_random as ir
from ctflow.ops.augment import apply_noise
from ctflow.ops.intensity_random import (
    add_hu_noise,
    adjust_contrast,
    adjust_gamma,
    apply_bias_field,
    bias_field_size,
    gaussian_blur,
)


@pytest.fixture()
def ct(rng):
    """A small int16 'CT': air, padding, lung, soft tissue, bone."""
    values = np.array([-3024, -2048, -1000, -850, -600, -100, 0, 40, 300, 1000, 2500])
    return rng.choice(values, size=(9, 14, 17)).astype(np.int16) + rng.integers(
        -20, 20, size=(9, 14, 17), dtype=np.int16
    )


def _layouts(image):
    """The same values as int16, float32, float64 and a non-contiguous float32 view."""
    big = np.zeros((image.shape[0], image.shape[1], 2 * image.shape[2]), np.float32)
    big[:, :, ::2] = image
    return [image, image.astype(np.float32), image.astype(np.float64), big[:, :, ::2]]


# -- gamma ------------------------------------------------------------------------------------
def _gamma_ref(x, gamma, lo, hi):
    t = (np.clip(x.astype(np.float64), lo, hi) - lo) / (hi - lo)
    return lo + (hi - lo) * t**gamma


@pytest.mark.parametrize("gamma", [0.5, 0.74, 1.0, 1.35, 3.0])
@pytest.mark.parametrize("window", [(-1000.0, 400.0), (-160.5, 240.25)])
def test_gamma_matches_the_float64_formula(ct, gamma, window):
    ref = _gamma_ref(ct, gamma, *window)
    for image in _layouts(ct):
        out = adjust_gamma(image, gamma, window)
        assert out.dtype == np.float32 and out.shape == ct.shape and out.flags.c_contiguous
        np.testing.assert_allclose(out, ref, rtol=0, atol=2e-4 * (window[1] - window[0]))
        assert out.min() >= window[0] and out.max() <= window[1]


def test_gamma_keeps_the_window_ends_and_nan(ct):
    img = np.array([[[-5000.0, -1000.0, 400.0, 9000.0, np.nan]]], np.float32)
    out = adjust_gamma(img, 1.7)
    assert out.ravel()[:4].tolist() == [-1000.0, -1000.0, 400.0, 400.0]
    assert np.isnan(out.ravel()[4])
    np.testing.assert_array_equal(out, adjust_gamma(img.astype(np.float64), 1.7))


def test_gamma_threads_give_identical_results(monkeypatch, ct):
    monkeypatch.setattr(intensity_blocks, "_MIN_VOXELS_PER_THREAD", 1)
    monkeypatch.setattr(ir, "_BLOCK_VOXELS", 500)  # several blocks per part
    one = adjust_gamma(ct, 0.8, n_threads=1)
    np.testing.assert_array_equal(one, adjust_gamma(ct, 0.8, n_threads=3))


# -- contrast ---------------------------------------------------------------------------------
def _contrast_ref(x, factor, shift, lo, hi):
    x = x.astype(np.float64)
    c = (lo + hi) / 2
    inside = c + factor * (x - c) + shift
    below = c + factor * (lo - c) + shift + (x - lo)
    above = c + factor * (hi - c) + shift + (x - hi)
    return np.where(x < lo, below, np.where(x > hi, above, inside))


@pytest.mark.parametrize(("factor", "shift"), [(0.75, -50.0), (1.0, 0.0), (1.25, 33.3), (2.0, 0)])
@pytest.mark.parametrize("window", [(-1000.0, 400.0), (-160.0, 240.0)])
def test_contrast_matches_the_piecewise_formula(ct, factor, shift, window):
    ref = _contrast_ref(ct, factor, shift, *window)
    for image in _layouts(ct):
        out = adjust_contrast(image, factor, shift, window)
        assert out.dtype == np.float32 and out.shape == ct.shape
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)


def test_contrast_is_continuous_and_increasing():
    x = np.linspace(-3000, 3000, 60001, dtype=np.float64).reshape(1, 1, -1)
    for factor in (0.5, 1.3):
        out = adjust_contrast(x, factor, 20.0).astype(np.float64).ravel()
        steps = np.diff(out)
        assert np.all(steps > 0)
        assert steps.max() <= max(1.0, factor) * 0.1 + 1e-3  # no jump at the window's edges


def test_contrast_threads_give_identical_results(monkeypatch, ct):
    monkeypatch.setattr(intensity_blocks, "_MIN_VOXELS_PER_THREAD", 1)
    monkeypatch.setattr(ir, "_BLOCK_VOXELS", 700)
    one = adjust_contrast(ct, 1.2, 7.0, n_threads=1)
    np.testing.assert_array_equal(one, adjust_contrast(ct, 1.2, 7.0, n_threads=2))


# -- blur -------------------------------------------------------------------------------------
BLUR_CASES = [
    ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
    ((0.0, 0.7, 0.7), (2.5, 0.7, 0.7)),  # in-plane only
    ((2.0, 0.0, 0.0), (1.25, 0.8, 0.8)),  # z only
    ((0.3, 1.9, 0.05), (1.0, 0.6, 0.9)),
    ((6.0, 6.0, 6.0), (0.5, 0.5, 0.5)),  # radius (48 voxels) beyond every axis
    ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # no blur: a float32 copy
]


@pytest.mark.parametrize(("std_mm", "spacing"), BLUR_CASES)
def test_blur_matches_scipy_gaussian_filter(ct, std_mm, spacing):
    sigma = np.asarray(std_mm) / np.asarray(spacing)
    ref = ndimage.gaussian_filter(ct.astype(np.float64), sigma, mode="nearest", truncate=4.0)
    for image in _layouts(ct):
        out = gaussian_blur(image, std_mm, spacing)
        assert out.dtype == np.float32 and out.shape == ct.shape and out.flags.c_contiguous
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6 * np.abs(ct).max())


@pytest.mark.parametrize("truncate", [1.0, 2.5, 4.0])
def test_blur_truncate_and_scalar_std_match_scipy(rng, truncate):
    image = rng.normal(0, 100, size=(7, 9, 11)).astype(np.float32)
    ref = ndimage.gaussian_filter(image, 1.3, mode="nearest", truncate=truncate)
    out = gaussian_blur(image, 1.3, truncate=truncate)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 5, 1), (3, 1, 8), (2, 2, 2)])
def test_blur_of_tiny_volumes(rng, shape):
    image = rng.normal(0, 10, size=shape).astype(np.float32)
    ref = ndimage.gaussian_filter(image.astype(np.float64), (1.5, 0.8, 2.0), mode="nearest")
    np.testing.assert_allclose(gaussian_blur(image, (1.5, 0.8, 2.0)), ref, rtol=0, atol=1e-5)


def test_blur_bool_and_float16_inputs(rng):
    mask = rng.random((5, 6, 7)) > 0.5
    ref = ndimage.gaussian_filter(mask.astype(np.float64), 1.0, mode="nearest")
    np.testing.assert_allclose(gaussian_blur(mask, 1.0), ref, atol=1e-6)
    half = rng.normal(size=(5, 6, 7)).astype(np.float16)
    ref = ndimage.gaussian_filter(half.astype(np.float64), 1.0, mode="nearest")
    np.testing.assert_allclose(gaussian_blur(half, 1.0), ref, atol=1e-5)


def test_blur_is_the_same_on_any_number_of_threads(monkeypatch, ct):
    monkeypatch.setattr(intensity_blocks, "_MIN_VOXELS_PER_THREAD", 1)
    one = gaussian_blur(ct, (1.2, 0.9, 1.7), (1.0, 0.7, 0.7), n_threads=1)
    for n in (2, 3, 5):
        np.testing.assert_array_equal(
            one, gaussian_blur(ct, (1.2, 0.9, 1.7), (1.0, 0.7, 0.7), n_threads=n)
        )


def test_blur_does_not_modify_its_input(ct):
    before = ct.copy()
    f32 = ct.astype(np.float32)
    gaussian_blur(ct, 1.0)
    gaussian_blur(f32, 1.0)
    np.testing.assert_array_equal(ct, before)
    np.testing.assert_array_equal(f32, before.astype(np.float32))


def test_blur_allocates_only_its_output():
    image = np.zeros((40, 64, 64), np.int16)
    gaussian_blur(image, 1.0)  # warm up (compilation)
    tracemalloc.start()
    try:
        out = gaussian_blur(image, 1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes <= peak < out.nbytes + 200_000


def test_half_kernel_is_scipys():
    for sigma, truncate in ((0.7, 4.0), (1.0, 4.0), (2.3, 3.0)):
        impulse = np.zeros(61)
        impulse[30] = 1.0
        full = ndimage.gaussian_filter1d(impulse, sigma, truncate=truncate)
        w = ir.gaussian_half_kernel(sigma, truncate)
        r = w.size - 1
        assert r == int(truncate * sigma + 0.5)
        np.testing.assert_allclose(w, full[30 : 31 + r], rtol=1e-6)
    assert ir.gaussian_half_kernel(0.0).tolist() == [1.0]


# -- bias field -------------------------------------------------------------------------------
def _torchio_style_coords(n):
    """TorchIO's voxel coordinates: centres ``arange(-n/2, n/2) + 0.5`` divided by their max."""
    c = np.arange(-n / 2, n / 2) + 0.5
    return c / c.max() if c.max() > 0 else c


def _bias_ref(x, coefficients, order, air=-1000.0):
    zc, yc, xc = (_torchio_style_coords(n) for n in x.shape)
    z, y, xx = np.meshgrid(zc, yc, xc, indexing="ij")
    field = np.zeros(x.shape)
    n = 0
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                field += coefficients[n] * z**i * y**j * xx**k
                n += 1
    x = x.astype(np.float64)
    return np.where(x > air, air + (x - air) * np.exp(field), x)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
def test_bias_field_matches_the_full_field_reference(ct, rng, order):
    coef = rng.uniform(-0.5, 0.5, bias_field_size(order)).tolist()
    ref = _bias_ref(ct, coef, order)
    for image in _layouts(ct):
        out = apply_bias_field(image, coef, order)
        assert out.dtype == np.float32 and out.shape == ct.shape
        np.testing.assert_allclose(out, ref, rtol=2e-6, atol=2e-3)


def test_bias_field_leaves_air_and_padding_alone(ct, rng):
    coef = rng.uniform(-0.5, 0.5, 20).tolist()
    out = apply_bias_field(ct, coef, 3)
    at_or_below_air = ct <= -1000
    np.testing.assert_array_equal(out[at_or_below_air], ct[at_or_below_air])
    above = ~at_or_below_air
    assert np.all(out[above] > -1000)


def test_bias_field_air_hu_and_threads(monkeypatch, ct, rng):
    coef = rng.uniform(-0.3, 0.3, 10).tolist()
    ref = _bias_ref(ct, coef, 2, air=-1024.0)
    np.testing.assert_allclose(
        apply_bias_field(ct, coef, 2, air_hu=-1024), ref, rtol=2e-6, atol=2e-3
    )
    monkeypatch.setattr(intensity_blocks, "_MIN_VOXELS_PER_THREAD", 1)
    one = apply_bias_field(ct, coef, 2, n_threads=1)
    np.testing.assert_array_equal(one, apply_bias_field(ct, coef, 2, n_threads=3))


def test_bias_field_of_one_voxel_axes(rng):
    image = rng.integers(-900, 900, size=(1, 6, 1)).astype(np.int16)
    coef = rng.uniform(-0.5, 0.5, 20).tolist()
    np.testing.assert_allclose(
        apply_bias_field(image, coef, 3), _bias_ref(image, coef, 3), rtol=2e-6, atol=2e-3
    )


def test_bias_field_size_and_zero_field(ct):
    assert [bias_field_size(o) for o in range(5)] == [1, 4, 10, 20, 35]
    np.testing.assert_array_equal(apply_bias_field(ct, [0.0] * 20, 3), ct.astype(np.float32))


# -- noise ------------------------------------------------------------------------------------
def test_gaussian_noise_is_apply_noise(ct):
    a = add_hu_noise(ct, 12.0, np.random.default_rng(5))
    b = apply_noise(ct, 12.0, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("floor", [0.05, 0.3, 1.0])
def test_lowdose_noise_matches_the_formula(ct, floor):
    out = add_hu_noise(ct, 15.0, np.random.default_rng(9), kind="lowdose", floor=floor)
    n = np.random.default_rng(9).standard_normal(ct.shape, dtype=np.float32)
    x = ct.astype(np.float64)
    sigma = 15.0 * np.sqrt(np.maximum(1.0 + x / 1000.0, floor))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x + sigma * n, rtol=0, atol=2e-3)


def test_lowdose_noise_blocks_draw_the_same_numbers(monkeypatch, ct):
    whole = add_hu_noise(ct, 10.0, np.random.default_rng(2), kind="lowdose")
    monkeypatch.setattr(ir, "_BLOCK_VOXELS", 333)
    np.testing.assert_array_equal(
        whole, add_hu_noise(ct, 10.0, np.random.default_rng(2), kind="lowdose")
    )


def test_lowdose_noise_statistics():
    image = np.zeros((30, 64, 64), np.int16)
    image[10:20] = -1000
    image[20:] = 1000
    out = add_hu_noise(image, 20.0, np.random.default_rng(1), kind="lowdose").astype(np.float64)
    noise = out - image
    assert noise[:10].std() == pytest.approx(20.0, rel=0.03)
    assert noise[10:20].std() == pytest.approx(20.0 * np.sqrt(0.05), rel=0.03)
    assert noise[20:].std() == pytest.approx(20.0 * np.sqrt(2.0), rel=0.03)


def test_lowdose_noise_allocates_no_float64_volume(monkeypatch):
    monkeypatch.setattr(ir, "_BLOCK_VOXELS", 4096)
    image = np.zeros((40, 64, 64), np.int16)
    add_hu_noise(image, 5.0, np.random.default_rng(0), kind="lowdose")
    tracemalloc.start()
    try:
        out = add_hu_noise(image, 5.0, np.random.default_rng(0), kind="lowdose")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes <= peak < out.nbytes + 2 * 4096 * 4 + 200_000


@pytest.mark.parametrize(
    "op", [lambda im: adjust_gamma(im, 1.3), lambda im: adjust_contrast(im, 1.3, 5.0),
           lambda im: apply_bias_field(im, [0.1] * 4, 1)],
)  # fmt: skip
def test_voxelwise_ops_allocate_no_float64_volume(monkeypatch, op):
    monkeypatch.setattr(ir, "_BLOCK_VOXELS", 64 * 64)
    image = np.zeros((40, 64, 64), np.int16)
    op(image)
    tracemalloc.start()
    try:
        out = op(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes <= peak < out.nbytes + 4 * 64 * 64 * 4 + 200_000


# -- bad parameters ---------------------------------------------------------------------------
GEN = np.random.default_rng(0)
BAD = [
    (lambda im: adjust_gamma(im, 0.0), "adjust_gamma: gamma must be a finite number > 0"),
    (lambda im: adjust_gamma(im, 1.0, (400, -1000)), "adjust_gamma: hu_range must be two"),
    (lambda im: adjust_gamma(im, 1.0, n_threads=0), "adjust_gamma: n_threads must be"),
    (lambda im: adjust_contrast(im, -1.0), "adjust_contrast: factor must be a finite number > 0"),
    (lambda im: adjust_contrast(im, 1.0, float("nan")), "adjust_contrast: shift_hu must be"),
    (lambda im: adjust_contrast(im, 1.0, 0.0, (1, 1)), "adjust_contrast: window must be two"),
    (lambda im: gaussian_blur(im, -1.0), "gaussian_blur: std_mm must be a number or 3"),
    (lambda im: gaussian_blur(im, (1, 1)), "gaussian_blur: std_mm must be a number or 3"),
    (lambda im: gaussian_blur(im, 1.0, 0.0), "gaussian_blur: spacing must be 3 positive"),
    (lambda im: gaussian_blur(im, 1.0, truncate=0), "gaussian_blur: truncate must be"),
    (lambda im: apply_bias_field(im, [0.1] * 19, 3), "apply_bias_field: coefficients must be 20"),
    (lambda im: apply_bias_field(im, [0.1] * 4, 11), "apply_bias_field: order must be an integer"),
    (lambda im: apply_bias_field(im, ["a"] * 4, 1), "apply_bias_field: coefficients must be 4"),
    (lambda im: add_hu_noise(im, -1.0, GEN), "add_hu_noise: std_hu must be a finite number >= 0"),
    (lambda im: add_hu_noise(im, 1.0, 0), "add_hu_noise: rng must be a numpy.random.Generator"),
    (lambda im: add_hu_noise(im, 1.0, GEN, kind="poisson"), "add_hu_noise: kind must be one of"),
    (lambda im: add_hu_noise(im, 1.0, GEN, floor=0.0), "add_hu_noise: floor must be"),
]


@pytest.mark.parametrize(("call", "match"), BAD)
def test_bad_parameters(call, match):
    with pytest.raises(InvalidParameterError, match=match):
        call(np.zeros((2, 3, 3), np.int16))


@pytest.mark.parametrize(
    "op",
    [lambda im: adjust_gamma(im, 1.0), lambda im: adjust_contrast(im, 1.0),
     lambda im: gaussian_blur(im, 1.0), lambda im: apply_bias_field(im, [0.0], 0),
     lambda im: add_hu_noise(im, 1.0, np.random.default_rng(0), kind="lowdose")],
)  # fmt: skip
def test_bad_images(op):
    with pytest.raises(InvalidScanError, match="image must be a 3-D"):
        op(np.zeros((3, 3), np.int16))
