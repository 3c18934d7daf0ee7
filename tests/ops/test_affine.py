"""Resampling through world coordinates against scipy.ndimage.map_coordinates (the same source
indices) and SimpleITK's Resample onto a reference grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from ctflow.geometry import Geometry, direction_to_sitk
from ctflow.ops.affine import affine_matrix, resample_to


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    def rot(a, i, j):
        r = np.eye(3)
        c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r

    return rot(ax, 1, 2) @ rot(ay, 0, 2) @ rot(az, 0, 1)


def _sources(src: Geometry, dst: Geometry, shape) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    m = affine_matrix(src, dst)
    return m[:, :3] @ idx + m[:, 3:4]


CASES = {
    "same grid": (Geometry((2.0, 0.7, 0.8), (1.0, 2.0, 3.0)), None, (12, 20, 18)),
    "finer, shifted": (
        Geometry((2.0, 0.7, 0.8), (1.0, 2.0, 3.0)),
        Geometry((1.3, 0.5, 0.55), (-2.0, 1.0, 4.0)),
        (20, 28, 26),
    ),
    "rotated and permuted": (
        Geometry((2.0, 0.7, 0.8), (1.0, 2.0, 3.0), _rotation(10, -20, 5)),
        Geometry((0.9, 1.1, 1.0), (-3.0, 0.0, 2.0), _rotation(0, 15, 30)[:, [2, 0, 1]]),
        (16, 14, 15),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("order", [0, 1])
def test_resample_to_equals_map_coordinates_at_the_same_world_points(name, order):
    src_g, dst_g, shape = CASES[name]
    dst_g = src_g if dst_g is None else dst_g
    rng = np.random.default_rng(3)
    img = ndi.gaussian_filter(rng.normal(0, 400, (12, 20, 18)), 1.5).astype(np.float32)
    out = resample_to(img, src_g, dst_g, shape, order=order, cval=-1000.0, n_threads=2)
    coords = _sources(src_g, dst_g, shape)
    n = np.asarray(img.shape)[:, None]
    inside = np.all((coords >= -0.5) & (coords < n - 0.5), axis=0)
    if order == 1:  # within half a voxel of the edge: the edge value (mode "nearest" clamps)
        ref = ndi.map_coordinates(img.astype(np.float64), coords, order=1, mode="nearest")
    else:
        rounded = np.floor(coords + 0.5).astype(int)
        ref = img[tuple(np.clip(rounded, 0, n - 1))].astype(np.float64)
    flat = out.ravel()
    np.testing.assert_allclose(flat[inside], ref[inside], atol=1e-3)
    assert np.all(flat[~inside] == -1000.0)
    assert inside.mean() > 0.1  # the grids overlap enough for the comparison to mean something
    if name == "same grid":
        np.testing.assert_array_equal(out, img)  # the identity is exact


@pytest.mark.parametrize("seed", range(4))
def test_linear_rows_cross_the_edge_and_the_core_alike(seed):
    # random rotations + scales + shifts: rows start outside, cross the half-voxel edge band
    # (taps clamped) and the core (flat taps, position stepped per voxel); an int16 source seen
    # through a non-contiguous view, float32 and rounded int16 outputs
    from ctflow.ops.affine import resample_matrix

    rng = np.random.default_rng(seed)
    big = rng.integers(-1000, 1500, (14, 40, 34)).astype(np.int16)
    img = big[:, ::2, 1::2]  # (14, 20, 17), not contiguous
    m = np.eye(4)
    m[:3, :3] = _rotation(*rng.uniform(-40, 40, 3)) * rng.uniform(0.7, 1.3)
    shape = (15, 22, 19)
    centre = (np.asarray(img.shape) - 1) / 2
    m[:3, 3] = centre - m[:3, :3] @ ((np.asarray(shape) - 1) / 2) + rng.uniform(-3, 3, 3)
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    coords = m[:3, :3] @ idx + m[:3, 3:4]
    n = np.asarray(img.shape)[:, None]
    inside = np.all((coords >= -0.5) & (coords < n - 0.5), axis=0)
    ref = ndi.map_coordinates(img.astype(np.float64), coords, order=1, mode="nearest")
    ref[~inside] = -1000.0
    out = resample_matrix(img, m, shape, order=1, cval=-1000.0, n_threads=2)
    np.testing.assert_allclose(out.ravel(), ref, atol=2e-3)
    rounded = resample_matrix(img, m, shape, order=1, cval=-1000.0, dtype=np.int16)
    away = np.where(ref >= 0, np.floor(ref + 0.5), -np.floor(0.5 - ref))
    tie = np.abs(np.abs(ref - np.trunc(ref)) - 0.5) < 1e-6  # float rounding may go either way
    np.testing.assert_array_equal(rounded.ravel()[~tie], away[~tie])
    assert 0.2 < inside.mean() < 0.95


def test_axis_permutation_and_flip_are_exact_for_labels_and_images():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (7, 9, 11)).astype(np.uint8)
    g = Geometry((2.5, 0.7, 0.8), (10.0, -5.0, 3.0))
    # the same voxels seen through x and y swapped and z reversed
    direction = g.direction[:, [0, 2, 1]] * np.array([-1.0, 1.0, 1.0])
    target = Geometry(g.spacing[[0, 2, 1]], g.voxel_to_world((6, 0, 0)), direction)
    out = resample_to(labels, g, target, (7, 11, 9), order=0, cval=0)
    np.testing.assert_array_equal(out, np.transpose(labels[::-1], (0, 2, 1)))
    img = labels.astype(np.int16) * 100 - 300
    lin = resample_to(img, g, target, (7, 11, 9), order=1, dtype=np.int16)
    np.testing.assert_array_equal(lin, np.transpose(img[::-1], (0, 2, 1)))


def test_resample_to_matches_simpleitk_resample_onto_a_reference_grid():
    src_g, dst_g, shape = CASES["rotated and permuted"]
    rng = np.random.default_rng(5)
    img = ndi.gaussian_filter(rng.normal(0, 400, (12, 20, 18)), 1.5).astype(np.float32)

    def image(arr, g):
        s = sitk.GetImageFromArray(arr)
        s.SetSpacing(tuple(g.spacing[::-1].tolist()))
        s.SetOrigin(tuple(g.origin[::-1].tolist()))
        s.SetDirection(direction_to_sitk(g.direction))
        return s

    ref_grid = image(np.zeros(shape, np.float32), dst_g)
    ref = sitk.GetArrayFromImage(
        sitk.Resample(image(img, src_g), ref_grid, sitk.Transform(), sitk.sitkLinear, -1000.0)
    )
    out = resample_to(img, src_g, dst_g, shape)
    coords = _sources(src_g, dst_g, shape)
    n = np.asarray(img.shape)[:, None]
    inside = np.all((coords > -0.5 + 1e-6) & (coords < n - 0.5 - 1e-6), axis=0).reshape(shape)
    np.testing.assert_allclose(out[inside], ref[inside], atol=2e-3)
    np.testing.assert_array_equal(out[~inside] == -1000.0, ref[~inside] == -1000.0)
