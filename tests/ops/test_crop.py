"""Tests of ctflow.ops.crop: nodule boxes, allowed and free crop starts, extract_crop.

References: hand-computed boxes, brute-force enumeration of the starts whose crop touches no
box, and ``numpy.pad`` + slicing for the padded crops.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ctflow.errors import InvalidParameterError
from ctflow.ops.crop import FreeStarts, extract_crop, nodule_voxel_boxes, start_range
from ctflow.ops.sampling import extract_crop as extract_crop_from_sampling


def test_nodule_voxel_boxes_hand_computed():
    lo, hi = nodule_voxel_boxes([[5.0, 5.2, 5.6], [0.0, 0.0, 0.0]], [[2.0, 0.1, 1.5], [0, 0, 0]])
    # z: [3, 7]; y: no centre within 0.1 of 5.2 -> the centre voxel 5; x: [ceil(4.1), floor(7.1)]
    assert lo.tolist() == [[3, 5, 5], [0, 0, 0]]
    assert hi.tolist() == [[7, 5, 7], [0, 0, 0]]


def _padded_reference(volume, start, shape, pad_value):
    m = max(shape) + max(abs(int(s)) for s in start) + max(volume.shape)
    big = np.pad(volume, m, mode="constant", constant_values=pad_value)
    idx = tuple(slice(m + s, m + s + n) for s, n in zip(start, shape))
    return big[idx]


@pytest.mark.parametrize(
    "start",
    [(0, 0, 0), (2, 3, 1), (-3, 0, 2), (5, 9, 10), (-2, -4, -5), (-20, 0, 0), (4, 4, 30)],
)
def test_extract_crop_matches_padded_slicing(start, rng):
    volume = rng.integers(-1000, 1000, size=(9, 12, 14), dtype=np.int16)
    shape = (6, 7, 5)
    out = extract_crop(volume, start, shape, pad_value=-1024)
    assert out.dtype == np.int16 and out.shape == shape
    np.testing.assert_array_equal(out, _padded_reference(volume, start, shape, -1024))
    before = volume.copy()
    out[...] = 7  # a copy, never a view
    np.testing.assert_array_equal(volume, before)


def test_extract_crop_returns_copy_and_float_nan_pad(rng):
    volume = rng.random((5, 6, 7)).astype(np.float32)
    inner = extract_crop(volume, (1, 1, 1), (2, 2, 2))
    inner[...] = -1.0
    assert volume.min() >= 0.0
    padded = extract_crop(volume, (-1, 0, 0), (2, 2, 2), pad_value=np.nan)
    assert np.isnan(padded[0]).all()
    np.testing.assert_array_equal(padded[1], volume[0, :2, :2])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((4, 4)), (0, 0, 0), (2, 2, 2), 0), "volume must be a 3-D"),
        ((np.zeros((4, 4, 4), np.int16), (0, 0, 0.5), (2, 2, 2), 0), "start must be 3 integers"),
        ((np.zeros((4, 4, 4), np.int16), (0, 0), (2, 2, 2), 0), "start must be 3 integers"),
        ((np.zeros((4, 4, 4), np.int16), (0, 0, 0), (2, 0, 2), 0), "shape must be 3 positive"),
        ((np.zeros((4, 4, 4), np.int16), (0, 0, 0), (2, 2, 2), 0.5), "representable as int16"),
        ((np.zeros((4, 4, 4), np.int16), (0, 0, 0), (2, 2, 2), 40000), "representable as int16"),
        ((np.zeros((4, 4, 4), np.uint8), (0, 0, 0), (2, 2, 2), np.nan), "representable as uint8"),
    ],
)
def test_extract_crop_errors(args, match):
    with pytest.raises(InvalidParameterError, match=match):
        extract_crop(*args)


def test_extract_crop_is_still_importable_from_sampling():
    assert extract_crop_from_sampling is extract_crop


@pytest.mark.parametrize(("shape", "crop"), [((10, 4, 8), (4, 6, 8)), ((3, 3, 3), (1, 1, 1))])
def test_start_range_keeps_the_crop_in_or_around_the_scan(shape, crop):
    lo, hi = start_range(np.array(shape), np.array(crop))
    for n, c, a, b in zip(shape, crop, lo, hi):
        if n >= c:
            assert (a, b) == (0, n - c)  # the crop lies inside: no padding
        else:
            assert a == n - c and b == 0  # the crop covers the whole scan


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_free_starts_are_exactly_the_starts_touching_no_box(seed):
    rng = np.random.default_rng(seed)
    shape, crop = np.array([9, 8, 7]), np.array([3, 4, 2])
    box_lo = rng.integers(0, shape, (3, 3))
    box_hi = np.minimum(box_lo + rng.integers(0, 3, (3, 3)), shape - 1)
    lo, hi = start_range(shape, crop)
    free = FreeStarts(lo, hi, box_lo, box_hi, crop)
    allowed = {
        s
        for s in itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi)))
        if not np.any(np.all((np.array(s) <= box_hi) & (np.array(s) + crop - 1 >= box_lo), axis=1))
    }
    assert free.total == len(allowed)
    draws = {tuple(free.draw(rng).tolist()) for _ in range(300)}
    assert draws <= allowed and len(draws) > 0.8 * min(len(allowed), 60)


def test_no_free_start_when_a_box_covers_the_scan():
    shape, crop = np.array([4, 4, 4]), np.array([2, 2, 2])
    lo, hi = start_range(shape, crop)
    assert FreeStarts(lo, hi, np.zeros((1, 3), int), np.full((1, 3), 3), crop).total == 0
