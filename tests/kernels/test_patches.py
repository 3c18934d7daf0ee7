"""The running-mean kernels (``ctflow.kernels.patches``) against the numpy form they replace,
bit for bit: counts and weights, several channels, patches overhanging the volume's end, the
planes of a region split between calls."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ctflow.kernels.patches import fold_counts, fold_weights
from ctflow.ops.patches_grid import _WeightedMean, patch_grid


def _numpy_fold(mean, total, values, weights, start):
    """The numpy running mean (float32, in place), as _WeightedMean computed it before."""
    z, y, x = start
    nz, ny, nx = total.shape
    pz, py, px = values.shape[1:]
    dz, dy, dx = min(pz, nz - z), min(py, ny - y), min(px, nx - x)
    region = (slice(z, z + dz), slice(y, y + dy), slice(x, x + dx))
    t = total[region]
    delta = values[:, :dz, :dy, :dx] - mean[(slice(None), *region)]
    if weights is None:
        t += 1
        delta /= t
    else:
        w = weights[:dz, :dy, :dx]
        t += w
        delta *= w / t
    mean[(slice(None), *region)] += delta


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_running_mean_equals_the_numpy_form_bit_for_bit(channels, weighted, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(9, 23, 3))
    patch = tuple(int(v) for v in rng.integers(4, 9, 3))
    stride = tuple(max(1, p // 2) for p in patch)
    grid = patch_grid(shape, patch, stride)
    weights = rng.uniform(0.01, 1.0, patch).astype(np.float32) if weighted else None
    acc = _WeightedMean(grid, channels, weights)
    mean = np.zeros((channels, *grid.shape), np.float32)
    total = np.zeros(grid.shape, np.float32 if weighted else np.uint16)
    for start in grid.starts:
        values = rng.normal(0, 100, (channels, *patch)).astype(np.float32)
        acc.add(values, start)
        _numpy_fold(mean, total, values, weights, tuple(int(s) for s in start))
    np.testing.assert_array_equal(acc.result(), mean)
    np.testing.assert_array_equal(acc.total, total)


@pytest.mark.parametrize("weighted", [False, True])
def test_a_region_folded_in_parts_equals_one_call(weighted):
    rng = np.random.default_rng(5)
    values = rng.normal(0, 1, (2, 6, 5, 7)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, (6, 5, 7)).astype(np.float32)
    results = []
    for cuts in ([0, 6], [0, 1, 4, 6], [0, 3, 6]):
        mean = np.full((2, 8, 8, 8), 0.5, np.float32)
        total = np.full((8, 8, 8), 2, np.float32 if weighted else np.uint16)
        for k0, k1 in itertools.pairwise(cuts):
            if weighted:
                fold_weights(mean, total, values, weights, 1, 2, 1, 5, 7, k0, k1)
            else:
                fold_counts(mean, total, values, 1, 2, 1, 5, 7, k0, k1)
        results.append((mean, total))
    for mean, total in results[1:]:
        np.testing.assert_array_equal(mean, results[0][0])
        np.testing.assert_array_equal(total, results[0][1])
    assert (results[0][1][1:7, 2:7, 1:8] > 2).all() and (results[0][1][0] == 2).all()


def test_equal_contributions_give_the_value_exactly():
    """mean += (v - mean) * w / W leaves an equal value as it is: the identity stays exact."""
    grid = patch_grid((10, 11, 12), (4, 5, 6), (2, 2, 3))
    weights = np.random.default_rng(2).uniform(0.01, 1.0, (4, 5, 6)).astype(np.float32)
    volume = np.random.default_rng(3).normal(0, 1000, (10, 11, 12)).astype(np.float32)
    for w in (None, weights):
        acc = _WeightedMean(grid, 1, w)
        for z, y, x in grid.starts:
            patch = np.zeros((1, 4, 5, 6), np.float32)
            part = volume[z : z + 4, y : y + 5, x : x + 6]
            patch[0, : part.shape[0], : part.shape[1], : part.shape[2]] = part
            acc.add(patch, (z, y, x))
        np.testing.assert_array_equal(acc.result()[0], volume)
