"""Tests of ctflow.geometry: the voxel <-> world mapping and the derived geometries.

References: hand-computed positions, SimpleITK's ``TransformContinuousIndexToPhysicalPoint`` on
an image given the same spacing, origin and direction, and invariants (world positions kept by
``shifted``, the field-of-view centre kept by ``resampled``, rotations that compose). The
rotated geometry against SimpleITK's ``Euler3DTransform`` is in tests/ops/test_spatial.py,
next to ``rotate``.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import (
    Geometry,
    as_shape,
    as_spacing,
    direction_from_sitk,
    direction_to_sitk,
)

SWAP_FLIP = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # x <- z, z <- -x


def _random_geometry(rng) -> Geometry:
    direction = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    return Geometry(rng.uniform(0.3, 3.0, 3), rng.uniform(-300.0, 300.0, 3), direction)


# -- voxel <-> world ------------------------------------------------------------------------------
def test_hand_computed_positions():
    g = Geometry((2.5, 0.5, 0.75), (-100.0, 20.0, 30.0))
    np.testing.assert_allclose(g.voxel_to_world((2, 4, 8)), (-95.0, 22.0, 36.0))
    g = Geometry((2.0, 1.0, 0.5), (10.0, 0.0, 0.0), SWAP_FLIP)
    # world = origin + D (spacing * v): v = (1, 2, 4) -> spacing * v = (2, 2, 2)
    np.testing.assert_allclose(g.voxel_to_world((1, 2, 4)), (10.0 - 2.0, 2.0, 2.0))
    np.testing.assert_allclose(g.world_to_voxel((8.0, 2.0, 2.0)), (1.0, 2.0, 4.0))


def test_affine_is_the_homogeneous_mapping(rng):
    g = _random_geometry(rng)
    v = rng.uniform(-5.0, 50.0, (20, 3))
    homogeneous = np.c_[v, np.ones(20)] @ g.affine.T
    np.testing.assert_allclose(homogeneous[:, :3], g.voxel_to_world(v), atol=1e-9)
    np.testing.assert_array_equal(homogeneous[:, 3], 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_world_voxel_round_trips(seed):
    rng = np.random.default_rng(seed)
    g = _random_geometry(rng)
    v = rng.uniform(-10.0, 100.0, (50, 3))
    np.testing.assert_allclose(g.world_to_voxel(g.voxel_to_world(v)), v, atol=1e-9)
    w = rng.uniform(-400.0, 400.0, (3,))  # a single point keeps its (3,) shape
    back = g.voxel_to_world(g.world_to_voxel(w))
    assert back.shape == (3,)
    np.testing.assert_allclose(back, w, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_mapping_equals_simpleitk(seed):
    rng = np.random.default_rng(seed)
    g = _random_geometry(rng)
    img = sitk.Image(4, 5, 6, sitk.sitkInt16)  # size is (x, y, z)
    img.SetSpacing(g.spacing[::-1].tolist())
    img.SetOrigin(g.origin[::-1].tolist())
    img.SetDirection(direction_to_sitk(g.direction))
    for v in rng.uniform(-3.0, 8.0, (10, 3)):
        expected = img.TransformContinuousIndexToPhysicalPoint(v[::-1].tolist())[::-1]
        np.testing.assert_allclose(g.voxel_to_world(v), expected, atol=1e-9)
    np.testing.assert_allclose(direction_from_sitk(img.GetDirection()), g.direction, atol=1e-12)


def test_direction_conversions_reverse_rows_and_columns():
    d = np.arange(9.0).reshape(3, 3)
    xyz = direction_to_sitk(d)
    assert xyz == (8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0)
    np.testing.assert_array_equal(direction_from_sitk(xyz), d)
    assert all(isinstance(v, float) for v in xyz)


# -- derived geometries ---------------------------------------------------------------------------
def test_shifted_keeps_every_world_position(rng):
    g = _random_geometry(rng)
    start = np.array([-3.0, 2.5, 7.0])
    sub = g.shifted(start)
    v = rng.uniform(0.0, 20.0, (10, 3))
    np.testing.assert_allclose(sub.voxel_to_world(v), g.voxel_to_world(v + start), atol=1e-9)
    np.testing.assert_array_equal(sub.spacing, g.spacing)
    np.testing.assert_array_equal(sub.direction, g.direction)


def test_resampled_hand_computed_and_keeps_the_centre(rng):
    g = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    new = g.resampled((4, 6, 8), (2, 3, 4), (2.0, 2.0, 2.0))
    # new voxel 0 sits at old index c_old - c_new * 2 = 1.5 - 0.5 * 2 = 0.5 (z), 2.5 - 2 (y) ...
    np.testing.assert_allclose(new.origin, (0.5, 0.5, 0.5))
    g = _random_geometry(rng)
    old_shape, new_shape, sp = (30, 40, 50), (17, 64, 9), (2.0, 0.4, 3.3)
    new = g.resampled(old_shape, new_shape, sp)
    c_old = (np.asarray(old_shape) - 1) / 2
    c_new = (np.asarray(new_shape) - 1) / 2
    np.testing.assert_allclose(new.voxel_to_world(c_new), g.voxel_to_world(c_old), atol=1e-9)
    np.testing.assert_array_equal(new.spacing, sp)
    np.testing.assert_array_equal(new.direction, g.direction)


def test_rotated_by_90_degrees_by_hand():
    g = Geometry((1.0, 1.0, 1.0), (5.0, 5.0, 5.0))
    new = g.rotated((3, 5, 5), 90.0, (1, 2))
    # output voxel o shows input voxel c + R (o - c): o = (1, 0, 2) shows (1, 2, 4)
    np.testing.assert_allclose(new.voxel_to_world((1, 0, 2)), g.voxel_to_world((1, 2, 4)))
    np.testing.assert_allclose(new.direction, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    centre = (1.0, 2.0, 2.0)  # the centre of the plane is a fixed point
    np.testing.assert_allclose(new.voxel_to_world(centre), g.voxel_to_world(centre))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9)])
@pytest.mark.parametrize("axes", [(1, 2), (0, 2), (2, 0), (-3, -2)])
def test_rotations_compose_and_a_full_turn_is_the_identity(spacing, axes, rng):
    direction = Rotation.random(random_state=3).as_matrix()
    g = Geometry(spacing, (10.0, -20.0, 5.0), direction)
    shape = (9, 12, 7)
    two = g.rotated(shape, 25.0, axes).rotated(shape, 40.0, axes)
    once = g.rotated(shape, 65.0, axes)
    np.testing.assert_allclose(two.origin, once.origin, atol=1e-9)
    np.testing.assert_allclose(two.direction, once.direction, atol=1e-12)
    np.testing.assert_array_equal(once.spacing, g.spacing)
    full = g.rotated(shape, 360.0, axes)
    np.testing.assert_allclose(full.origin, g.origin, atol=1e-9)
    np.testing.assert_allclose(full.direction, g.direction, atol=1e-12)


@pytest.mark.parametrize("axes", [(1, 1), (0, 3), (1,), (1.0, 2.0), "ab"])
def test_rotated_refuses_bad_axes(axes):
    with pytest.raises(InvalidParameterError, match="rotated: axes must be two different axes"):
        Geometry((1.0, 1.0, 1.0)).rotated((2, 2, 2), 10.0, axes)


# -- construction, equality, plain forms ----------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be 3 positive finite floats"),
        ({"spacing": (1.0, 1.0)}, "spacing must be 3 positive finite floats"),
        ({"origin": (0.0, np.nan, 0.0)}, "origin must be 3 finite floats"),
        ({"direction": np.ones((3, 3))}, "direction must be orthonormal"),
        ({"direction": np.eye(2)}, "direction must be a finite 3x3 matrix"),
    ],
)
def test_bad_geometries_are_scan_errors(kwargs, match):
    args = {"spacing": (1.0, 1.0, 1.0), **kwargs}
    with pytest.raises(InvalidScanError, match=match):
        Geometry(**args)


def test_flat_direction_equality_hash_and_plain_form():
    g = Geometry((2.0, 1.0, 1.0), (1.0, 2.0, 3.0), SWAP_FLIP.ravel())
    np.testing.assert_array_equal(g.direction, SWAP_FLIP)
    same = Geometry(**g.as_dict())
    assert same == g and hash(same) == hash(g)
    assert g != Geometry((2.0, 1.0, 1.0), (1.0, 2.0, 3.0))
    assert (g == "a geometry") is False
    assert repr(Geometry((2.5, 1.0, 1.0))) == (
        "Geometry(spacing=(2.5, 1, 1), origin=(0, 0, 0), direction=identity)"
    )


# -- as_shape / as_spacing ------------------------------------------------------------------------
def test_as_shape_and_as_spacing_keep_their_return_types():
    assert as_shape(4) == (4, 4, 4)
    assert as_shape(np.array([2.0, 3.0, 4.0])) == (2, 3, 4)
    assert all(type(v) is int for v in as_shape((np.int64(2), 3, 4)))
    sp = as_spacing(0.5)
    assert isinstance(sp, np.ndarray) and sp.dtype == np.float64 and sp.tolist() == [0.5] * 3


@pytest.mark.parametrize("bad", [(1, 2), (0, 2, 3), (1.5, 2, 3), True, "abc", (1, None, 2)])
def test_as_shape_errors(bad):
    with pytest.raises(InvalidParameterError, match=r"^crop: size must be 3 positive integers"):
        as_shape(bad, what="size", where="crop")


@pytest.mark.parametrize("bad", [(1.0, 0.0, 1.0), (1.0, np.inf, 1.0), (1.0, 2.0), "1.0", True])
def test_as_spacing_errors(bad):
    with pytest.raises(InvalidParameterError, match=r"^resample: spacing must be 3 positive"):
        as_spacing(bad, where="resample")
