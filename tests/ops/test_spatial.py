"""Tests of ctflow.ops.spatial.rotate against scipy.ndimage.rotate, SimpleITK and hand geometry."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops.spatial import rotate

SHAPE = (7, 21, 26)  # odd and even plane sizes


def _scipy(image, angle, axes, order, cval):
    return ndi.rotate(
        image, angle, axes=axes, reshape=False, order=order, mode="constant", cval=cval
    )


def _safe_voxels(shape, angle, axes, order, tol=1e-6):
    """Voxels whose source coordinate is not within ``tol`` of a boundary or rounding tie."""
    a, b = sorted(ax % 3 for ax in axes)
    na, nb = shape[a], shape[b]
    t = np.deg2rad(angle)
    c, s = np.cos(t), np.sin(t)
    i, j = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    ca, cb = (na - 1) / 2, (nb - 1) / 2
    fa = c * (i - ca) + s * (j - cb) + ca
    fb = -s * (i - ca) + c * (j - cb) + cb
    ok = np.ones((na, nb), bool)
    for f, n in ((fa, na), (fb, nb)):
        ok &= (np.abs(f) > tol) & (np.abs(f - (n - 1)) > tol)
        if order == 0:
            ok &= np.abs(f - np.floor(f) - 0.5) > tol
    other = 3 - a - b
    ok3 = np.expand_dims(ok, other)
    return np.broadcast_to(ok3, shape)


@pytest.mark.parametrize("axes", [(1, 2), (0, 2), (0, 1), (2, 1), (-2, -1)])
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("angle", [17.3, -33.0, 90.0, 200.5])
def test_matches_scipy(axes, order, angle, rng):
    # at multiples of 90 deg an even plane size puts every nearest-neighbour source on a tie
    shape = (7, 21, 25) if angle % 90 == 0 else SHAPE
    image = rng.normal(0, 100, size=shape).astype(np.float32)
    ref = _scipy(image, angle, axes, order, -1000.0)
    out = rotate(image, angle, axes, order=order)
    assert out.shape == image.shape
    assert out.dtype == np.float32
    safe = _safe_voxels(shape, angle, axes, order)
    assert safe.mean() > 0.8
    np.testing.assert_allclose(out[safe], ref[safe], rtol=0, atol=1e-3)
    # the filled outside region is the same too
    np.testing.assert_array_equal(out[safe] == -1000.0, ref[safe] == -1000.0)


def test_int16_image_gives_float32_like_scipy(rng):
    image = rng.integers(-1000, 2000, size=SHAPE, dtype=np.int16)
    out = rotate(image, 12.5)
    assert out.dtype == np.float32
    ref = _scipy(image.astype(np.float32), 12.5, (1, 2), 1, -1000.0)
    safe = _safe_voxels(SHAPE, 12.5, (1, 2), 1)
    np.testing.assert_allclose(out[safe], ref[safe], rtol=0, atol=2e-3)


def test_int16_output_is_rounded_half_away_from_zero(rng):
    image = rng.integers(-1000, 2000, size=SHAPE, dtype=np.int16)
    as_float = rotate(image, 21.0, cval=-1000.0)
    as_int = rotate(image, 21.0, cval=-1000.0, dtype=np.int16)
    assert as_int.dtype == np.int16
    expected = np.trunc(as_float.astype(np.float64) + np.copysign(0.5, as_float))
    np.testing.assert_array_equal(as_int, expected.astype(np.int16))
    # scipy rounds an int16 output the same way (up to float32-vs-float64 ties)
    ref = _scipy(image, 21.0, (1, 2), 1, -1000.0)
    assert np.abs(as_int.astype(np.int32) - ref).max() <= 1
    assert np.mean(as_int == ref) > 0.99


def test_mask_nearest_stays_uint8(rng):
    mask = (rng.random(SHAPE) > 0.6).astype(np.uint8)
    out = rotate(mask, 30.0, order=0, cval=0)
    assert out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= {0, 1}
    safe = _safe_voxels(SHAPE, 30.0, (1, 2), 0)
    np.testing.assert_array_equal(out[safe], _scipy(mask, 30.0, (1, 2), 0, 0)[safe])


def test_bool_mask(rng):
    mask = rng.random(SHAPE) > 0.5
    out = rotate(mask, 40.0, (0, 2), order=0, cval=0)
    assert out.dtype == np.bool_
    safe = _safe_voxels(SHAPE, 40.0, (0, 2), 0)
    ref = _scipy(mask.astype(np.uint8), 40.0, (0, 2), 0, 0).astype(bool)
    np.testing.assert_array_equal(out[safe], ref[safe])


@pytest.mark.parametrize("axes", [(1, 2), (0, 2), (0, 1)])
def test_threads_give_identical_result(axes, rng):
    image = rng.integers(-1000, 1000, size=(37, 24, 29), dtype=np.int16)
    one = rotate(image, 8.0, axes)
    for n in (2, 3, 64):
        np.testing.assert_array_equal(rotate(image, 8.0, axes, n_threads=n), one)


def test_non_contiguous_input(rng):
    base = rng.normal(size=(14, 42, 52)).astype(np.float32)
    view = base[::2, ::2, ::2]
    out = rotate(view, 25.0, cval=0.0)
    ref = _scipy(np.ascontiguousarray(view), 25.0, (1, 2), 1, 0.0)
    safe = _safe_voxels(view.shape, 25.0, (1, 2), 1)
    np.testing.assert_allclose(out[safe], ref[safe], atol=1e-5)


@pytest.mark.parametrize("angle", [0.0, 360.0, -720.0])
def test_full_turns_are_identity(angle, rng):
    image = rng.integers(-1000, 1000, size=SHAPE, dtype=np.int16)
    np.testing.assert_array_equal(rotate(image, angle), image.astype(np.float32))


def test_direction_by_hand():
    # axial plane (y, x) rotated by +90 deg: output (i, j) takes input (j, nx - 1 - i) for a
    # square plane; a voxel at the right edge (y=2, x=4) moves to the top edge (y=0, x=2):
    # counter-clockwise as shown by imshow.
    image = np.zeros((2, 5, 5), np.int16)
    image[:, 2, 4] = 7
    out = rotate(image, 90.0, cval=0)
    expected = np.zeros_like(image)
    expected[:, 0, 2] = 7
    np.testing.assert_array_equal(out, expected)
    # coronal plane (z, x) of size 3 x 5, +90 deg: src_z = x - 1, src_x = 3 - z. The input
    # voxel (z=1, x=3) lands on output (z=0, x=2); the voxel (z=1, x=4) would need z=-1: lost.
    image = np.zeros((3, 2, 5), np.int16)
    image[1, :, 3] = 5
    image[1, :, 4] = 9
    expected = np.zeros((3, 2, 5), np.float32)
    expected[0, :, 2] = 5
    np.testing.assert_array_equal(rotate(image, 90.0, (0, 2), cval=0), expected)


def test_outside_is_cval():
    image = np.full((2, 9, 9), 50, np.int16)
    out = rotate(image, 45.0, cval=-1000.0)
    # the corners come from outside the square; the centre stays 50
    assert np.all(out[:, 0, 0] == -1000.0)
    assert np.all(out[:, -1, -1] == -1000.0)
    assert np.all(out[:, 4, 4] == 50.0)
    # inside voxels are 50 or a blend of 50 with the outside only at the very edge
    assert np.all(out[:, 2:7, 2:7] == 50.0)


def test_matches_simpleitk_euler_rotation():
    # a smooth volume: SimpleITK's linear interpolation agrees with ours in the interior
    z, y, x = np.meshgrid(np.arange(6), np.arange(40), np.arange(46), indexing="ij")
    image = (100 * np.sin(y / 5.0) * np.cos(x / 7.0) + z).astype(np.float32)
    angle = 23.0
    img = sitk.GetImageFromArray(image)
    centre = img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()])
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    transform.SetRotation(0.0, 0.0, np.deg2rad(angle))
    ref = sitk.GetArrayFromImage(
        sitk.Resample(img, img, transform, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    )
    out = rotate(image, angle)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(out[inner], ref[inner], atol=1e-3)
    # the opposite angle is clearly different: the test can tell directions apart
    assert np.abs(rotate(image, -angle)[inner] - ref[inner]).max() > 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"axes": (0, 0)}, "axes must be two different axes"),
        ({"axes": (1, 3)}, "axes must be two different axes"),
        ({"axes": (1,)}, "axes must be two different axes"),
        ({"axes": (1.5, 2)}, "axes must be two different axes"),
        ({"order": 3}, "order must be 0 or 1"),
        ({"n_threads": 0}, "n_threads must be an integer >= 1"),
        ({"dtype": "U3"}, "dtype must be a numpy integer or float dtype"),
        ({"cval": "air"}, "cval must be a number"),
        ({"dtype": np.uint8}, r"cval must fit the output dtype uint8 \(\[0, 255\]\); got -1000"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        rotate(np.zeros((2, 4, 4), np.int16), 10.0, **kwargs)


def test_mask_with_air_cval_is_refused():
    with pytest.raises(InvalidParameterError, match="pass cval=0 for masks"):
        rotate(np.zeros((2, 4, 4), np.uint8), 10.0, order=0)


@pytest.mark.parametrize("angle", [float("nan"), float("inf"), "ten"])
def test_bad_angle(angle):
    with pytest.raises(InvalidParameterError, match="angle_deg must be a finite number"):
        rotate(np.zeros((2, 4, 4), np.int16), angle)


@pytest.mark.parametrize(
    "image", [np.zeros((4, 4)), np.zeros((0, 4, 4)), np.zeros((2, 2, 2), complex), [[[1]]]]
)
def test_bad_image(image):
    with pytest.raises(InvalidScanError, match="rotate: image must"):
        rotate(image, 10.0)
