"""Tests of ctflow.ops.masks against brute-force numpy references and analytic spheres."""

from __future__ import annotations

import numpy as np
import pytest

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.ops.masks import binarize_mask, create_mask, nodules_from_mask


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    """A proper rotation (orthonormal, det +1) from three angles, in radians."""
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _world_grid(shape, g: Geometry) -> np.ndarray:
    """World position of every voxel centre, (Z, Y, X, 3)."""
    idx = np.indices(shape).reshape(3, -1).T
    return g.voxel_to_world(idx).reshape(*shape, 3)


def _reference(shape, g, centers, diameters, mode="ellipsoid") -> np.ndarray:
    """The documented inequality evaluated over the whole grid (no bounding boxes)."""
    w = _world_grid(shape, g)
    out = np.zeros(shape, dtype=bool)
    for c, d in zip(np.asarray(centers, float), np.asarray(diameters, float)):
        r = np.broadcast_to(d / 2, (3,))
        if mode == "ellipsoid":
            out |= np.sum(((w - c) / r) ** 2, axis=-1) <= 1
        else:
            out |= np.all(np.abs(w - c) <= r, axis=-1)
    return out.astype(np.uint8)


def _voxel_volume(g: Geometry) -> float:
    return float(np.prod(g.spacing))


def _check_sphere(shape, g, center, radius):
    mask = create_mask(shape, g, [center], [2 * radius])
    assert mask.dtype == np.uint8 and mask.shape == shape
    assert set(np.unique(mask).tolist()) == {0, 1}
    # exact: the documented inequality, voxel for voxel
    np.testing.assert_array_equal(mask, _reference(shape, g, [center], [2 * radius]))
    # analytic volume within 3 %
    volume = mask.sum() * _voxel_volume(g)
    assert volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.03)
    # centroid of the mask maps to the centre within half a voxel
    centroid_vox = np.mean(np.argwhere(mask), axis=0)
    assert np.all(np.abs(centroid_vox - g.world_to_voxel(center)) < 0.5)
    # voxels well inside are in, voxels well outside are out
    dist = np.linalg.norm(_world_grid(shape, g) - center, axis=-1)
    diag = float(np.linalg.norm(g.spacing))
    assert mask[dist < radius - diag].all()
    assert not mask[dist > radius + diag].any()
    assert (dist < radius - diag).sum() > 100  # the checks above are not vacuous
    return mask


def test_sphere_anisotropic_grid_nonzero_origin():
    shape = (40, 64, 64)
    g = Geometry(spacing=(2.5, 0.7, 0.8), origin=(-120.3, 45.1, -80.7))
    center = g.voxel_to_world([19.3, 31.7, 30.2])
    _check_sphere(shape, g, center, radius=10.0)


def test_sphere_rotated_direction():
    shape = (40, 48, 48)
    g = Geometry(
        spacing=(1.2, 0.9, 1.0), origin=(10.0, -50.0, 30.0), direction=_rotation(0.4, -0.7, 1.1)
    )
    assert not np.allclose(g.direction, np.eye(3))
    center = g.voxel_to_world([20.4, 23.1, 24.6])
    _check_sphere(shape, g, center, radius=8.0)


def test_permuted_flipped_direction():
    # a LUNA-like flip plus an axis swap: an exact signed permutation
    direction = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    g = Geometry(spacing=(2.0, 0.75, 0.6), origin=(5.0, -20.0, 100.0), direction=direction)
    shape = (30, 48, 56)
    center = g.voxel_to_world([14.6, 22.2, 30.3])
    _check_sphere(shape, g, center, radius=7.0)


def test_integer_sphere_boundary_is_inclusive():
    g = Geometry(spacing=(1.0, 1.0, 1.0))
    mask = create_mask((11, 11, 11), g, [[5.0, 5.0, 5.0]], [4.0])
    # |v - c|^2 <= 4: 1 + 6 (d=1) + 12 (d=√2) + 8 (d=√3) + 6 (d=2)
    assert int(mask.sum()) == 33
    assert mask[7, 5, 5] == 1 and mask[7, 6, 5] == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["ellipsoid", "cuboid"])
def test_random_geometries_match_reference(seed, mode):
    rng = np.random.default_rng(seed)
    shape = (20, 28, 32)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    g = Geometry(
        spacing=rng.uniform(0.5, 2.5, 3),
        origin=rng.uniform(-200, 200, 3),
        direction=q,  # any orthonormal matrix, reflections included
    )
    n = 5
    centers = g.voxel_to_world(rng.uniform(-3, np.array(shape) + 3, size=(n, 3)))
    diameters = rng.uniform(1.0, 15.0, size=(n, 3)) if seed % 2 else rng.uniform(1.0, 15.0, n)
    mask = create_mask(shape, g, centers, diameters, mode=mode)
    ref = _reference(shape, g, centers, diameters, mode)
    # every voxel the inequality selects is marked; extra voxels only from the
    # "smaller than a voxel" rule, at most one per nodule, at its centre voxel
    assert np.all(mask >= ref)
    extra = np.argwhere(mask > ref)
    assert len(extra) <= n
    centre_vox = np.floor(g.world_to_voxel(centers) + 0.5).astype(int)
    for v in extra:
        assert any(np.array_equal(v, cv) for cv in centre_vox)


def test_ellipsoid_per_axis_diameters():
    g = Geometry(spacing=(1.5, 0.8, 0.8), origin=(0.0, 10.0, -10.0))
    shape = (40, 64, 64)
    center = g.voxel_to_world([20.2, 31.6, 32.3])
    d = np.array([24.0, 12.0, 30.0])
    mask = create_mask(shape, g, [center], [d])
    np.testing.assert_array_equal(mask, _reference(shape, g, [center], [d]))
    volume = mask.sum() * _voxel_volume(g)
    assert volume == pytest.approx(np.pi / 6 * np.prod(d), rel=0.03)
    # extent along world z is d_z: planes beyond the semi-axis are empty
    zs = g.voxel_to_world(np.argwhere(mask))[:, 0]
    assert zs.max() - zs.min() <= d[0]
    assert zs.max() - zs.min() > d[0] - 2 * g.spacing[0]


def test_cuboid_rotated_volume_and_reference():
    g = Geometry(
        spacing=(1.0, 0.9, 1.1), origin=(3.0, 4.0, 5.0), direction=_rotation(0.3, 0.2, 0.5)
    )
    shape = (40, 48, 48)
    center = g.voxel_to_world([20.3, 24.4, 23.8])
    d = np.array([12.0, 16.0, 10.0])
    mask = create_mask(shape, g, [center], [d], mode="cuboid")
    np.testing.assert_array_equal(mask, _reference(shape, g, [center], [d], "cuboid"))
    assert mask.sum() * _voxel_volume(g) == pytest.approx(np.prod(d), rel=0.05)
    w = g.voxel_to_world(np.argwhere(mask))
    assert np.all(np.abs(w - center) <= d / 2)


def test_several_overlapping_nodules_are_a_union():
    g = Geometry(spacing=(1.0, 0.7, 0.7), origin=(-10.0, -10.0, -10.0))
    shape = (32, 48, 48)
    centers = g.voxel_to_world(np.array([[15.0, 20.0, 20.0], [17.0, 26.0, 24.0], [5.0, 5.0, 40.0]]))
    diameters = np.array([10.0, 8.0, 5.0])
    mask = create_mask(shape, g, centers, diameters)
    np.testing.assert_array_equal(mask, _reference(shape, g, centers, diameters))
    singles = [create_mask(shape, g, [c], [d]) for c, d in zip(centers, diameters)]
    np.testing.assert_array_equal(mask, np.maximum.reduce(singles))
    assert (singles[0] & singles[1]).any()  # they do overlap


def test_partial_nodule_at_border_is_clipped():
    g = Geometry(spacing=(2.0, 0.8, 0.8), origin=(-50.0, 20.0, 0.0))
    shape = (24, 40, 40)
    center = g.voxel_to_world([-1.5, 20.3, 38.7])  # outside in z, near the x end
    mask = create_mask(shape, g, [center], [14.0])
    np.testing.assert_array_equal(mask, _reference(shape, g, [center], [14.0]))
    assert mask.any()
    # a bigger canvas holding the whole sphere: the clipped part is exactly what is missing
    big_g = g.shifted((-10, 0, 0))
    big = create_mask((34, 40, 60), big_g, [center], [14.0])
    assert mask.sum() < big.sum()
    np.testing.assert_array_equal(big[10:, :, :40], mask)


def test_nodule_wholly_outside_contributes_nothing():
    g = Geometry(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    shape = (16, 16, 16)
    centers = [[-20.0, 8.0, 8.0], [8.0, 8.0, 40.0], [8.0, 8.0, -0.9]]
    diameters = [10.0, 10.0, 0.5]  # the last one is tiny and its centre voxel is outside
    assert not create_mask(shape, g, centers, diameters).any()


def test_tiny_nodule_marks_its_centre_voxel():
    g = Geometry(spacing=(2.5, 0.7, 0.7), origin=(-7.0, 3.0, 1.0), direction=_rotation(0.2, 0, 0))
    shape = (12, 20, 20)
    center = g.voxel_to_world([5.3, 9.8, 12.45])
    mask = create_mask(shape, g, [center], [0.2])
    assert _reference(shape, g, [center], [0.2]).sum() == 0  # no voxel centre inside
    assert mask.sum() == 1
    # the marked voxel is the one whose centre is nearest to the nodule centre
    dist = np.linalg.norm(_world_grid(shape, g) - center, axis=-1)
    assert tuple(np.argwhere(mask)[0]) == np.unravel_index(np.argmin(dist), shape)


def test_thin_ellipsoid_between_slices_marks_centre_voxel():
    g = Geometry(spacing=(3.0, 1.0, 1.0))
    center = np.array([4.5, 10.0, 10.0])  # half-way between slices 1 (z=3) and 2 (z=6)
    mask = create_mask((6, 20, 20), g, [center], [[0.5, 8.0, 8.0]])
    assert _reference((6, 20, 20), g, [center], [[0.5, 8.0, 8.0]]).sum() == 0
    # only the centre voxel, floor(1.5 + 0.5) = 2: exact halves round up
    assert np.argwhere(mask).tolist() == [[2, 10, 10]]


def test_empty_nodule_list_and_out_argument():
    g = Geometry(spacing=(1.0, 1.0, 1.0))
    assert not create_mask((4, 5, 6), g, np.zeros((0, 3)), np.zeros(0)).any()
    assert create_mask((4, 5, 6), g, [], []).shape == (4, 5, 6)
    out = np.zeros((10, 10, 10), np.uint8)
    out[0, 0, 0] = 1
    res = create_mask((10, 10, 10), g, [[5.0, 5.0, 5.0]], [3.0], out=out)
    assert res is out
    assert out[0, 0, 0] == 1 and out[5, 5, 5] == 1
    ref = _reference((10, 10, 10), g, [[5.0, 5.0, 5.0]], [3.0])
    ref[0, 0, 0] = 1
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (0, 4, 4)}, "shape must be 3 positive integers"),
        ({"geometry": (1.0, 1.0, 1.0)}, "geometry must be a ctflow Geometry"),
        ({"centers": [[1.0, 2.0]]}, r"centers must be an \(N, 3\) array"),
        ({"centers": [[1.0, np.nan, 2.0]]}, "centers must be finite"),
        ({"diameters": [1.0, 2.0]}, r"diameters must have shape \(1,\) or \(1, 3\)"),
        ({"diameters": [0.0]}, "diameters must be finite and > 0"),
        ({"diameters": [[1.0, -1.0, 1.0]]}, "diameters must be finite and > 0"),
        ({"mode": "sphere"}, "mode must be one of"),
        ({"out": np.zeros((8, 8, 8), np.int16)}, "out must be a uint8 array of shape"),
        ({"out": np.zeros((8, 8, 9), np.uint8)}, "out must be a uint8 array of shape"),
    ],
)
def test_create_mask_errors(kwargs, match):
    args = {
        "shape": (8, 8, 8),
        "geometry": Geometry((1.0, 1.0, 1.0)),
        "centers": [[4.0, 4.0, 4.0]],
        "diameters": [3.0],
    }
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("mode", "out") if k in args}
    with pytest.raises(InvalidParameterError, match=match):
        create_mask(args["shape"], args["geometry"], args["centers"], args["diameters"], **extra)


# ------------------------------------------------------------------------------- binarize_mask
def test_binarize_mask_matches_numpy(rng):
    soft = rng.random((6, 7, 8)).astype(np.float32)
    soft[0, 0, 0] = np.nan
    for t in (0.5, 0.25, 0.9):
        out = binarize_mask(soft, t)
        assert out.dtype == np.uint8 and out.shape == soft.shape
        np.testing.assert_array_equal(out, np.where(soft > t, 1, 0))
    assert binarize_mask(soft)[0, 0, 0] == 0
    assert binarize_mask(np.array([0.5, 0.5000001]), 0.5).tolist() == [0, 1]
    assert binarize_mask(np.array([True, False]), 0.5).tolist() == [1, 0]
    assert binarize_mask(np.array([0, 3, 7], np.int16), 3).tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    ("mask", "threshold"),
    [(np.zeros(3), float("nan")), (np.zeros(3), "0.5"), (np.array(["a"]), 0.5)],
)
def test_binarize_mask_errors(mask, threshold):
    with pytest.raises(InvalidParameterError, match="binarize_mask"):
        binarize_mask(mask, threshold)


# ------------------------------------------------------------------------------- nodules_from_mask
def test_nodules_from_mask_round_trip():
    g = Geometry(
        spacing=(1.25, 0.7, 0.75), origin=(-80.0, 12.0, -40.0), direction=_rotation(0.3, -0.2, 0.6)
    )
    shape = (40, 64, 64)
    centers = g.voxel_to_world(np.array([[12.3, 18.6, 20.1], [27.8, 44.2, 41.7]]))
    diameters = np.array([12.0, 9.0])
    mask = create_mask(shape, g, centers, diameters)
    found_c, found_d = nodules_from_mask(mask, g)
    assert found_c.shape == (2, 3) and found_d.shape == (2,)
    assert found_c.dtype == np.float64 and found_d.dtype == np.float64
    order = np.argsort(g.world_to_voxel(found_c)[:, 0])  # sort along voxel z
    found_c, found_d = found_c[order], found_d[order]
    np.testing.assert_array_less(np.abs(g.world_to_voxel(found_c) - g.world_to_voxel(centers)), 0.5)
    np.testing.assert_allclose(found_d, diameters, rtol=0.03)


def test_nodules_from_mask_hand_computed():
    g = Geometry(spacing=(2.0, 0.5, 0.5), origin=(100.0, -4.0, 7.0))
    mask = np.zeros((6, 8, 8), np.uint8)
    mask[1, 1, 1] = 1
    mask[2, 2, 2] = 1  # touches the first only by a corner: same component (26-connectivity)
    mask[4:6, 5:8, 6] = 1  # a separate 2 x 3 x 1 block
    centers, diameters = nodules_from_mask(mask, g)
    vv = 2.0 * 0.5 * 0.5
    np.testing.assert_allclose(
        centers, [[100.0 + 2.0 * 1.5, -4.0 + 0.75, 7.0 + 0.75], [100.0 + 9.0, -4.0 + 3.0, 10.0]]
    )
    np.testing.assert_allclose(
        diameters, [(6 * 2 * vv / np.pi) ** (1 / 3), (6 * 6 * vv / np.pi) ** (1 / 3)]
    )


def test_nodules_from_mask_soft_and_bool_inputs():
    g = Geometry(spacing=(1.0, 1.0, 1.0))
    soft = np.zeros((5, 5, 5), np.float32)
    soft[2, 2, 2] = 0.3
    c, d = nodules_from_mask(soft, g)
    assert c.tolist() == [[2.0, 2.0, 2.0]]
    c_bool, d_bool = nodules_from_mask(soft > 0, g)
    np.testing.assert_array_equal(c, c_bool)
    np.testing.assert_array_equal(d, d_bool)


def test_nodules_from_mask_empty():
    g = Geometry(spacing=(1.0, 1.0, 1.0))
    c, d = nodules_from_mask(np.zeros((4, 4, 4), np.uint8), g)
    assert c.shape == (0, 3) and d.shape == (0,)


def test_nodules_from_mask_errors():
    g = Geometry(spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InvalidParameterError, match="3-D"):
        nodules_from_mask(np.zeros((4, 4)), g)
    with pytest.raises(InvalidParameterError, match="Geometry"):
        nodules_from_mask(np.zeros((4, 4, 4)), (1.0, 1.0, 1.0))  # type: ignore[arg-type]
