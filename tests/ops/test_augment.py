"""Tests of ctflow.ops.augment: noise statistics and determinism, cutout boxes vs numpy."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops import augment
from ctflow.ops.augment import apply_noise, cutout


def test_gaussian_noise_statistics():
    image = np.full((20, 64, 64), 40, np.int16)
    out = apply_noise(image, 25.0, np.random.default_rng(3))
    assert out.dtype == np.float32
    noise = out.astype(np.float64) - 40
    n = noise.size
    assert abs(noise.mean()) < 5 * 25.0 / np.sqrt(n)
    assert noise.std() == pytest.approx(25.0, rel=0.02)
    # Gaussian, not uniform: about 4.6 % beyond 2 sigma
    assert np.mean(np.abs(noise) > 50) == pytest.approx(0.0455, abs=0.005)


def test_uniform_noise_statistics():
    image = np.zeros((20, 64, 64), np.float32)
    out = apply_noise(image, 10.0, np.random.default_rng(4), kind="uniform")
    assert out.dtype == np.float32
    half_width = 10.0 * np.sqrt(3.0)
    assert np.abs(out).max() <= half_width
    assert abs(out.mean()) < 5 * 10.0 / np.sqrt(out.size)
    assert out.std(dtype=np.float64) == pytest.approx(10.0, rel=0.02)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_blocks_draw_the_same_numbers_as_one_call(kind, monkeypatch, rng):
    monkeypatch.setattr(augment, "_BLOCK_VOXELS", 1000)  # 7 * 20 * 30 is not a multiple
    image = rng.integers(-1000, 1000, size=(7, 20, 30), dtype=np.int16)
    out = apply_noise(image, 12.5, np.random.default_rng(11), kind=kind)
    ref_rng = np.random.default_rng(11)
    if kind == "gaussian":
        noise = ref_rng.standard_normal(image.shape, dtype=np.float32) * np.float32(12.5)
    else:
        hw = np.float32(12.5 * np.sqrt(3.0))
        noise = ref_rng.random(image.shape, dtype=np.float32) * (2 * hw) - hw
    np.testing.assert_array_equal(out, image.astype(np.float32) + noise)


def test_noise_is_deterministic_per_seed(rng):
    image = rng.integers(-1000, 1000, size=(6, 16, 16), dtype=np.int16)
    a = apply_noise(image, 5.0, np.random.default_rng(42))
    b = apply_noise(image, 5.0, np.random.default_rng(42))
    c = apply_noise(image, 5.0, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_allocates_no_float64_volume(monkeypatch):
    monkeypatch.setattr(augment, "_BLOCK_VOXELS", 4096)
    image = np.zeros((40, 64, 64), np.int16)
    apply_noise(image, 5.0, np.random.default_rng(0))  # warm up
    tracemalloc.start()
    try:
        out = apply_noise(image, 5.0, np.random.default_rng(0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the float32 output plus one small block; a float64 temporary would double this
    assert out.nbytes <= peak < out.nbytes + 4096 * 4 + 200_000


def test_zero_sigma_and_layout(rng):
    base = rng.normal(size=(8, 10, 12)).astype(np.float32)
    view = base[::2, ::-1]
    out = apply_noise(view, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, view)
    assert out.flags.c_contiguous
    assert not np.shares_memory(out, base)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": -1.0}, "sigma must be a finite number >= 0"),
        ({"sigma": float("nan")}, "sigma must be a finite number >= 0"),
        ({"sigma": "big"}, "sigma must be a finite number >= 0"),
        ({"rng": 0}, "rng must be a numpy.random.Generator"),
        ({"rng": np.random.RandomState(0)}, "rng must be a numpy.random.Generator"),
        ({"kind": "poisson"}, "kind must be one of"),
    ],
)
def test_noise_bad_parameters(kwargs, match):
    args = {"sigma": 1.0, "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(InvalidParameterError, match=match):
        apply_noise(np.zeros((2, 3, 3), np.int16), **args)


def test_noise_bad_image():
    with pytest.raises(InvalidScanError, match="apply_noise: image must be a 3-D"):
        apply_noise(np.zeros((3, 3)), 1.0, np.random.default_rng(0))


def _box_reference(image, start, shape, value):
    """Fill the box through a voxel-index test (no slicing or clipping)."""
    idx = np.indices(image.shape)
    start = np.asarray(start).reshape(3, 1, 1, 1)
    stop = start + np.asarray(shape).reshape(3, 1, 1, 1)
    inside = np.all((idx >= start) & (idx < stop), axis=0)
    ref = image.copy()
    ref[inside] = value
    return ref, int(inside.sum())


@pytest.mark.parametrize(
    ("start", "shape"),
    [
        ((2, 3, 4), (3, 4, 5)),
        ((-2, -3, 5), (4, 5, 20)),  # clipped at both ends
        ((8, 0, 0), (3, 3, 3)),  # starts inside, leaves the volume
        ((10, 0, 0), (3, 3, 3)),  # entirely outside: nothing changes
        ((0, 0, 0), (10, 12, 14)),  # the whole volume
        ((1, 1, 1), (0, 5, 5)),  # empty box
    ],
)
def test_cutout_box_matches_index_test(start, shape, rng):
    image = rng.integers(-1000, 1000, size=(10, 12, 14), dtype=np.int16)
    before = image.copy()
    out = cutout(image, start, shape, fill=-7)
    ref, n_inside = _box_reference(image, start, shape, -7)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(image, before)  # input untouched
    assert not np.shares_memory(out, image)
    assert int(np.sum(out != image)) <= n_inside


def test_cutout_statistic_fills(rng):
    image = rng.integers(-1000, 1000, size=(6, 8, 8), dtype=np.int16)
    for fill, value in [
        ("min", image.min()),
        ("max", image.max()),
        ("mean", np.trunc(image.mean() + np.copysign(0.5, image.mean()))),
    ]:
        out = cutout(image, (1, 2, 3), (2, 2, 2), fill=fill)
        np.testing.assert_array_equal(out, _box_reference(image, (1, 2, 3), (2, 2, 2), value)[0])
    fimage = image.astype(np.float32) / 3
    out = cutout(fimage, (0, 0, 0), (1, 1, 1), fill="mean")
    assert out.dtype == np.float32
    assert out[0, 0, 0] == pytest.approx(float(fimage.mean(dtype=np.float64)), rel=1e-6)


def test_cutout_mask_keeps_uint8():
    mask = np.ones((4, 5, 6), np.uint8)
    out = cutout(mask, (1, 1, 1), (2, 2, 2), fill=0)
    assert out.dtype == np.uint8
    assert int(out.sum()) == mask.size - 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fill": "median"}, "fill must be a number or one of 'min', 'max', 'mean'"),
        ({"fill": None}, "fill must be a number or one of 'min', 'max', 'mean'"),
        ({"fill": 1e6}, r"fill must fit the image dtype int16 \(\[-32768, 32767\]\)"),
        ({"start": (1, 2)}, "start must be 3 integers"),
        ({"start": (1.5, 2, 0)}, "start must be 3 integers"),
        ({"shape": (1, -2, 1)}, "shape must be 3 integers >= 0"),
    ],
)
def test_cutout_bad_parameters(kwargs, match):
    args = {"start": (0, 0, 0), "shape": (1, 1, 1), "fill": 0, **kwargs}
    with pytest.raises(InvalidParameterError, match=match):
        cutout(np.zeros((3, 3, 3), np.int16), **args)
