"""Tests of ctflow.ops.xip against numpy sliding-window expressions and hand geometry."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.ops.xip import make_xip, xip_geometry, xip_length

AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
REDUCE = {"max": np.max, "min": np.min, "mean": np.mean, "median": np.median}


def _reference(image, depth, stride, mode, projection, padding):
    axis = AXIS[projection]
    n = image.shape[axis]
    if padding == "reflect":
        before = (depth - 1) // 2
        n_out = -(-n // stride)
        after = max(0, (n_out - 1) * stride - before + depth - n)
        pad = [(0, 0)] * 3
        pad[axis] = (before, after)
        image = np.pad(image, pad, mode="reflect")
    windows = sliding_window_view(image.astype(np.float64), depth, axis=axis)
    index = [slice(None)] * 3
    index[axis] = slice(None, None, stride)
    windows = windows[tuple(index)]
    if padding == "reflect":
        index[axis] = slice(0, n_out)
        windows = windows[tuple(index)]
    return REDUCE[mode](windows, axis=-1)


@pytest.mark.parametrize("projection", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("mode", ["max", "min", "mean", "median"])
@pytest.mark.parametrize(("depth", "stride"), [(1, 1), (3, 1), (4, 2), (5, 3), (6, 4)])
@pytest.mark.parametrize("padding", [None, "reflect"])
def test_matches_numpy(projection, mode, depth, stride, padding, rng):
    image = rng.integers(-1000, 1000, size=(13, 11, 14), dtype=np.int16)
    out = make_xip(image, depth, stride, mode, projection, padding=padding)
    ref = _reference(image, depth, stride, mode, projection, padding)
    n = image.shape[AXIS[projection]]
    expected_len = -(-n // stride) if padding else (n - depth) // stride + 1
    assert out.shape[AXIS[projection]] == expected_len == xip_length(n, depth, stride, padding)
    assert out.shape == ref.shape
    if mode in ("max", "min"):
        assert out.dtype == np.int16
        np.testing.assert_array_equal(out, ref)
    else:
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("mode", ["max", "min", "mean", "median"])
def test_float_input(mode, rng):
    image = rng.normal(0, 1, size=(9, 10, 8)).astype(np.float32)
    out = make_xip(image, 4, 1, mode, "coronal")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(image, 4, 1, mode, "coronal", None), atol=1e-6)


def test_median_even_depth_is_mean_of_middles():
    image = np.array([1, 9, 3, 7], dtype=np.int16).reshape(4, 1, 1)
    out = make_xip(image, 4, mode="median")
    assert out.dtype == np.float32
    assert out.ravel().tolist() == [5.0]  # sorted 1 3 7 9 -> (3 + 7) / 2


def test_long_median_window(rng):
    image = rng.integers(-1000, 1000, size=(50, 3, 4), dtype=np.int16)
    np.testing.assert_allclose(
        make_xip(image, 41, 2, "median"), _reference(image, 41, 2, "median", "axial", None)
    )


def test_bool_mask_max(rng):
    mask = rng.random((10, 6, 7)) > 0.8
    out = make_xip(mask, 3, 2, "max", "sagittal")
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, _reference(mask, 3, 2, "max", "sagittal", None) > 0)


def test_non_contiguous_input(rng):
    base = rng.integers(0, 100, size=(20, 12, 12), dtype=np.int16)
    view = base[::2, :, ::-1]
    np.testing.assert_array_equal(make_xip(view, 3), _reference(view, 3, 1, "max", "axial", None))


def test_depth_longer_than_axis_with_reflect(rng):
    image = rng.integers(0, 100, size=(3, 4, 5), dtype=np.int16)
    out = make_xip(image, 7, 1, "mean", padding="reflect")
    np.testing.assert_allclose(out, _reference(image, 7, 1, "mean", "axial", "reflect"), rtol=1e-6)


@pytest.mark.parametrize("projection", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize(("depth", "stride", "padding"), [(5, 2, None), (4, 3, "reflect")])
def test_geometry_puts_voxels_at_window_centres(projection, depth, stride, padding):
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    geom = Geometry((2.5, 0.7, 0.8), (-300.0, 12.0, -40.0), direction)
    out = xip_geometry(geom, depth, stride, projection, padding=padding)
    axis = AXIS[projection]
    start = -((depth - 1) // 2) if padding else 0
    expected_spacing = geom.spacing.copy()
    expected_spacing[axis] *= stride
    np.testing.assert_allclose(out.spacing, expected_spacing)
    np.testing.assert_array_equal(out.direction, geom.direction)
    for k in range(4):
        # the mean world position of the window's (unmirrored) input voxels
        window = np.zeros((depth, 3))
        window[:, axis] = k * stride + start + np.arange(depth)
        window[:, [a for a in range(3) if a != axis]] = (2, 3)
        centre = geom.voxel_to_world(window).mean(axis=0)
        voxel = np.zeros(3)
        voxel[axis] = k
        voxel[[a for a in range(3) if a != axis]] = (2, 3)
        np.testing.assert_allclose(out.voxel_to_world(voxel), centre, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"depth": 0}, InvalidParameterError, "depth must be an integer >= 1"),
        ({"depth": 2.5}, InvalidParameterError, "depth must be an integer >= 1"),
        ({"stride": 0}, InvalidParameterError, "stride must be an integer >= 1"),
        ({"mode": "sum"}, InvalidParameterError, "mode must be one of"),
        ({"projection": "z"}, InvalidParameterError, "projection must be one of"),
        ({"padding": "edge"}, InvalidParameterError, "padding must be one of None, 'reflect'"),
        ({"depth": 9}, InvalidParameterError, "depth must be <= the axial axis length 8"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    args = {"depth": 3, **kwargs}
    with pytest.raises(error, match=match):
        make_xip(np.zeros((8, 4, 4), np.int16), **args)


@pytest.mark.parametrize("image", [np.zeros((4, 4)), np.zeros((0, 3, 3)), "volume"])
def test_bad_image(image):
    with pytest.raises(InvalidScanError, match="make_xip: image must"):
        make_xip(image, 1)


def test_bad_geometry():
    with pytest.raises(InvalidParameterError, match="geometry must be a ctflow Geometry"):
        xip_geometry((1.0, 1.0, 1.0), 3)  # type: ignore[arg-type]
