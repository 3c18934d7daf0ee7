"""Tests of ctflow.ops.patches: grid, cutting, assembling, predicting (numpy references)."""

from __future__ import annotations

import numpy as np
import pytest

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops.patches import (
    PatchGrid,
    assemble_patches,
    get_patches,
    patch_grid,
    predict_on_volume,
)

SHAPE = (13, 17, 19)
CASES = [  # (patch_shape, stride): divisible and non-divisible, overlapping or not
    ((4, 5, 6), (4, 5, 6)),
    ((4, 5, 6), (1, 2, 3)),
    ((5, 5, 5), (3, 4, 5)),
    ((6, 8, 8), (5, 3, 7)),
    ((13, 17, 19), (13, 17, 19)),
    ((16, 4, 20), (7, 4, 1)),  # patch longer than the volume on z and x
]


def _reference_patches(image, patch, stride, pad_mode="edge", value=0):
    """Patches cut with plain loops from an np.pad-ed volume, and their starts."""
    padded_shape = []
    for n, p, s in zip(image.shape, patch, stride):
        d = p
        while d < n or (d - p) % s:
            d += 1
        padded_shape.append(d)
    widths = [(0, d - n) for d, n in zip(padded_shape, image.shape)]
    if pad_mode == "edge":
        padded = np.pad(image, widths, mode="edge")
    else:
        padded = np.pad(image, widths, mode="constant", constant_values=value)
    starts, patches = [], []
    for z in range(0, padded_shape[0] - patch[0] + 1, stride[0]):
        for y in range(0, padded_shape[1] - patch[1] + 1, stride[1]):
            for x in range(0, padded_shape[2] - patch[2] + 1, stride[2]):
                starts.append((z, y, x))
                patches.append(padded[z : z + patch[0], y : y + patch[1], x : x + patch[2]])
    return np.array(patches), np.array(starts), tuple(padded_shape)


@pytest.mark.parametrize(("patch", "stride"), CASES)
def test_get_patches_matches_loops(patch, stride, rng):
    image = rng.normal(size=SHAPE).astype(np.float32)
    patches, grid = get_patches(image, patch, stride)
    ref, starts, padded_shape = _reference_patches(image, patch, stride)
    assert isinstance(grid, PatchGrid)
    assert grid.padded_shape == padded_shape
    assert grid.n_patches == len(ref)
    np.testing.assert_array_equal(grid.starts, starts)
    assert patches.flags.c_contiguous
    assert patches.flags.writeable
    assert not np.shares_memory(patches, image)
    assert patches.dtype == np.float32
    np.testing.assert_array_equal(patches, ref)
    # padding is minimal: less than one stride beyond the volume (or up to one patch)
    for n, d, p, s in zip(SHAPE, grid.padded_shape, patch, stride):
        assert (d - p) % s == 0
        assert d == p if n <= p else n <= d < n + s


@pytest.mark.parametrize(("patch", "stride"), CASES)
def test_round_trip_is_exact(patch, stride, rng):
    image = rng.normal(0, 300, size=SHAPE).astype(np.float32)
    patches, grid = get_patches(image, patch, stride)
    out = assemble_patches(patches, grid)
    assert out.dtype == np.float32
    assert out.shape == SHAPE
    np.testing.assert_array_equal(out, image)


def test_round_trip_int16(rng):
    image = rng.integers(-1000, 2000, size=SHAPE, dtype=np.int16)
    patches, grid = get_patches(image, 6, 2, pad_value=-1000)
    assert patches.dtype == np.int16
    np.testing.assert_array_equal(assemble_patches(patches, grid), image.astype(np.float32))


def test_constant_padding(rng):
    image = rng.integers(0, 100, size=(5, 6, 7), dtype=np.int16)
    patches, _ = get_patches(image, 4, 3, pad_value=-1000)
    ref, _, _ = _reference_patches(image, (4, 4, 4), (3, 3, 3), "constant", -1000)
    np.testing.assert_array_equal(patches, ref)
    assert (patches == -1000).any()


@pytest.mark.parametrize(("patch", "stride"), CASES[1:4])
def test_assemble_averages_overlaps(patch, stride, rng):
    grid = patch_grid(SHAPE, patch, stride)
    values = rng.normal(size=(grid.n_patches, *patch)).astype(np.float32)
    total = np.zeros(grid.padded_shape)
    count = np.zeros(grid.padded_shape)
    for v, (z, y, x) in zip(values, grid.starts):
        total[z : z + patch[0], y : y + patch[1], x : x + patch[2]] += v
        count[z : z + patch[0], y : y + patch[1], x : x + patch[2]] += 1
    ref = (total / count)[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    out = assemble_patches(values, grid)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    # the same from the shape, patch shape and stride
    np.testing.assert_array_equal(assemble_patches(values, SHAPE, patch, stride), out)


def test_predict_identity_and_constant(rng):
    image = rng.normal(size=SHAPE).astype(np.float32)
    calls = []

    def identity(batch):
        calls.append(batch.shape)
        return batch

    out = predict_on_volume(image, identity, (5, 6, 7), (3, 4, 5), batch_size=4)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)
    grid = patch_grid(SHAPE, (5, 6, 7), (3, 4, 5))
    assert sum(c[0] for c in calls) == grid.n_patches
    assert all(c[0] <= 4 and c[1:] == (5, 6, 7) for c in calls)

    const = predict_on_volume(image, lambda b: np.full(b.shape, 0.3), 5, 2, batch_size=16)
    np.testing.assert_array_equal(const, np.full(SHAPE, 0.3, np.float32))


def test_predict_equals_assemble_of_predictions(rng):
    image = rng.integers(-1000, 1000, size=SHAPE, dtype=np.int16)

    def fn(batch):
        assert batch.dtype == np.int16
        return np.sqrt(np.abs(batch.astype(np.float64)))  # a float64 answer is accepted

    out = predict_on_volume(image, fn, (4, 6, 8), (2, 3, 5), batch_size=7)
    patches, grid = get_patches(image, (4, 6, 8), (2, 3, 5))
    np.testing.assert_allclose(out, assemble_patches(fn(patches), grid), rtol=1e-6)
    np.testing.assert_allclose(out, np.sqrt(np.abs(image)), rtol=1e-6)


@pytest.mark.parametrize(
    ("patch", "stride", "match"),
    [
        ((4, 4, 4), (5, 4, 4), "stride must be <= patch_shape"),
        ((0, 4, 4), None, "patch_shape must be 3 positive integers"),
        ((4, 4, 4), (0, 1, 1), "stride must be 3 positive integers"),
        ((4, 4), None, "patch_shape must be 3 positive integers"),
    ],
)
def test_bad_grid(patch, stride, match):
    with pytest.raises(InvalidParameterError, match=match):
        get_patches(np.zeros((8, 8, 8), np.float32), patch, stride)


def test_bad_pad_value():
    with pytest.raises(InvalidParameterError, match=r"pad_value must be an integer in \[-32768"):
        get_patches(np.zeros((5, 5, 5), np.int16), 4, pad_value=1e6)
    with pytest.raises(InvalidParameterError, match="pad_value must be a number or 'edge'"):
        get_patches(np.zeros((5, 5, 5), np.int16), 4, pad_value="reflect")  # type: ignore[arg-type]


def test_bad_patches_shape():
    grid = patch_grid((8, 8, 8), 4)
    with pytest.raises(InvalidParameterError, match=r"patches must be an array of shape \(8, 4"):
        assemble_patches(np.zeros((7, 4, 4, 4), np.float32), grid)
    with pytest.raises(InvalidParameterError, match="pass the PatchGrid"):
        assemble_patches(np.zeros((8, 4, 4, 4), np.float32), (8, 8, 8))


def test_bad_predict_arguments():
    image = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(InvalidParameterError, match="fn must return a real array"):
        predict_on_volume(image, lambda b: b[:, :2], 4)
    with pytest.raises(InvalidParameterError, match="fn must be callable"):
        predict_on_volume(image, None, 4)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="batch_size must be an integer >= 1"):
        predict_on_volume(image, lambda b: b, 4, batch_size=0)
    with pytest.raises(InvalidScanError, match="predict_on_volume: image must"):
        predict_on_volume(np.zeros((8, 8)), lambda b: b, 4)
