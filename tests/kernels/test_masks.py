"""Tests of ctflow.kernels.masks.paint_nodules against a brute-force numpy rasteriser.

Kernel level: the boxes it is given bound the voxels it tests (empty and clipped boxes), the
per-nodule hit counts it returns, the centre-voxel fallback (inside / outside the mask) and
that it only ever sets voxels. ``create_mask`` (validation, boxes, world conventions) is
tested in tests/ops/test_masks.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ctflow.kernels.masks import paint_nodules


def _naive(shape, origin, spacing, direction, centers, radii, boxes, centre_voxels, cuboid):
    """Every voxel of every box, one at a time, world position as the module documents it."""
    sz, sy, sx = spacing
    mask = np.zeros(shape, np.uint8)
    hits = np.zeros(len(centers), np.int64)
    for i, (c, r, b) in enumerate(zip(centers, radii, boxes)):
        for z in range(b[0], b[1]):
            for y in range(b[2], b[3]):
                for x in range(b[4], b[5]):
                    a = (z * sz) * direction[:, 0] + (y * sy) * direction[:, 1]
                    d = origin + (a + (x * sx) * direction[:, 2]) - c
                    inside = np.all(np.abs(d) <= r) if cuboid else np.sum((d / r) ** 2) <= 1.0
                    if inside:
                        mask[z, y, x] = 1
                        hits[i] += 1
        v = centre_voxels[i]
        if hits[i] == 0 and np.all(v >= 0) and np.all(v < shape):
            mask[tuple(v)] = 1
    return mask, hits


def _case(rng, n, shape):
    spacing = rng.uniform(0.5, 2.0, 3)
    origin = rng.uniform(-20.0, 20.0, 3)
    direction = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    vox = rng.uniform(-2.0, np.asarray(shape) + 1.0, (n, 3))
    centers = origin + (vox * spacing) @ direction.T
    radii = rng.uniform(0.2, 4.0, (n, 3))
    lo = rng.integers(-2, np.asarray(shape), (n, 3))
    hi = lo + rng.integers(0, 6, (n, 3))
    lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)  # clipped, sometimes empty
    boxes = np.empty((n, 6), np.int64)
    boxes[:, 0::2], boxes[:, 1::2] = lo, hi
    centre_voxels = np.floor(vox + 0.5).astype(np.int64)  # some outside the mask
    return origin, spacing, direction, centers, radii, boxes, centre_voxels


@pytest.mark.parametrize("cuboid", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_brute_force_rasteriser(seed, cuboid):
    rng = np.random.default_rng(seed)
    shape = (7, 9, 8)
    args = _case(rng, 12, shape)
    mask = np.zeros(shape, np.uint8)
    hits = paint_nodules(mask, *args, cuboid)
    ref, ref_hits = _naive(shape, *args, cuboid)
    np.testing.assert_array_equal(mask, ref)
    np.testing.assert_array_equal(hits, ref_hits)


def test_no_nodules_and_only_set_voxels():
    shape = (3, 4, 5)
    mask = np.ones(shape, np.uint8)
    empty = (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 6), np.int64))
    hits = paint_nodules(
        mask, np.zeros(3), np.ones(3), np.eye(3), *empty, np.zeros((0, 3), np.int64), False
    )
    assert hits.shape == (0,) and mask.all()  # nothing cleared


def test_centre_voxel_fallback_inside_and_outside():
    shape = (4, 4, 4)
    centers = np.array([[1.2, 2.0, 2.9], [10.0, 0.0, 0.0]])
    radii = np.full((2, 3), 0.1)  # contain no voxel centre
    boxes = np.array([[0, 4, 0, 4, 0, 4], [0, 0, 0, 0, 0, 0]], np.int64)
    centre_voxels = np.array([[1, 2, 3], [10, 0, 0]], np.int64)  # the second is outside
    mask = np.zeros(shape, np.uint8)
    hits = paint_nodules(
        mask, np.zeros(3), np.ones(3), np.eye(3), centers, radii, boxes, centre_voxels, False
    )
    assert hits.tolist() == [0, 0]
    assert np.argwhere(mask).tolist() == [[1, 2, 3]]


def test_boundary_is_inclusive_on_a_single_slice():
    mask = np.zeros((1, 5, 5), np.uint8)
    hits = paint_nodules(
        mask,
        np.zeros(3),
        np.ones(3),
        np.eye(3),
        np.array([[0.0, 2.0, 2.0]]),
        np.full((1, 3), 2.0),
        np.array([[0, 1, 0, 5, 0, 5]], np.int64),
        np.zeros((1, 3), np.int64),
        False,
    )
    y, x = np.mgrid[:5, :5]
    np.testing.assert_array_equal(mask[0], ((y - 2) ** 2 + (x - 2) ** 2 <= 4).astype(np.uint8))
    assert hits.tolist() == [13]
