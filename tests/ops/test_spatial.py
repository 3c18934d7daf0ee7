"""Tests of ctflow.ops.spatial.rotate against scipy.ndimage.rotate, SimpleITK and hand geometry."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry, direction_to_sitk
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
        ({"order": 3}, "order must be one of 0, 1; got 3"),
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


# ----------------------------------------------------------------- rotation in millimetres
ANISO_SPACING = (2.5, 0.73, 0.68)  # (z, y, x) mm: anisotropic pixels, thick slices
ANISO_SHAPE = (12, 50, 56)
CVAL = -1000.0
#: SimpleITK Euler3DTransform angles (about x, y, z) of ctflow's angle ``t`` in a plane. Both map
#: an output point to its source. ctflow's source offset (mm) in the plane (a, b), a < b, is
#: [[c, s], [-s, c]] times the output offset. ITK's right-handed rotation by t about z is
#: [[c, -s], [s, c]] on (x, y), i.e. [[c, s], [-s, c]] on (y, x): the same, and likewise about x
#: on (z, y). About y it is [[c, s], [-s, c]] on (x, z), i.e. [[c, -s], [s, c]] on (z, x): the
#: opposite sense, hence -t.
EULER = {
    (1, 2): lambda t: (0.0, 0.0, t),
    (0, 2): lambda t: (0.0, -t, 0.0),
    (0, 1): lambda t: (t, 0.0, 0.0),
}
BRIGHT = [(3, 12, 40), (6, 30, 15), (8, 38, 33), (5, 20, 24)]  # asymmetric, inside after 17 deg


def _aniso_volume(shape=ANISO_SHAPE, spacing=ANISO_SPACING):
    """Smooth asymmetric content in mm (HU-like values 50..600), no voxel equal to ``CVAL``."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    img = 300 + 200 * np.sin(y / 6.0 + 0.3) * np.cos(x / 9.0) + 60 * np.cos(z / 7.0 + x / 13.0)
    return (img + 2.0 * y).astype(np.float32)


def _direction_about_z(angle_deg):
    """A rotation of the (y, x) voxel axes in the world, (z, y, x) order."""
    t = np.deg2rad(angle_deg)
    d = np.eye(3)
    d[1, 1], d[1, 2], d[2, 1], d[2, 2] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return d


def _sitk_image(array, geometry):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(geometry.spacing[::-1].tolist())
    img.SetOrigin(geometry.origin[::-1].tolist())
    img.SetDirection(direction_to_sitk(geometry.direction))
    return img


def _sitk_transform(image, angle, axes, direction=None):
    """SimpleITK's world transform of ctflow's rotation, centred on the image's centre.

    Identity direction: an ``Euler3DTransform`` (angles from :data:`EULER`). Otherwise the
    rotation of the plane's world axes: ``D R D^T`` (in (z, y, x)), as an ``AffineTransform``.
    """
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    t = np.deg2rad(angle)
    if direction is None:
        return sitk.Euler3DTransform(centre, *EULER[axes](t))
    a, b = axes
    rot = np.eye(3)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = np.cos(t), np.sin(t), -np.sin(t), np.cos(t)
    world = direction @ rot @ direction.T
    transform = sitk.AffineTransform(3)
    transform.SetCenter(centre)
    transform.SetMatrix(world[::-1, ::-1].ravel().tolist())
    return transform


def _sitk_rotate(array, geometry, angle, axes, interpolator, cval, direction=None):
    img = _sitk_image(array, geometry)
    transform = _sitk_transform(img, angle, axes, direction)
    pixel = sitk.sitkFloat32 if interpolator == sitk.sitkLinear else sitk.sitkUInt8
    return sitk.GetArrayFromImage(sitk.Resample(img, img, transform, interpolator, cval, pixel))


def _mm_sources(shape, spacing, angle, axes):
    """Continuous source index (float64) of every output voxel of a plane, rotating millimetres.

    ``S (src - c) = R S (o - c)``: the millimetre offset from the centre is rotated.
    """
    a, b = axes
    na, nb = shape[a], shape[b]
    t = np.deg2rad(angle)
    ca, cb = (na - 1) / 2, (nb - 1) / 2
    i, j = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    da, db = (i - ca) * spacing[a], (j - cb) * spacing[b]
    fa = ca + (np.cos(t) * da + np.sin(t) * db) / spacing[a]
    fb = cb + (-np.sin(t) * da + np.cos(t) * db) / spacing[b]
    return fa, fb


def _plane_to_volume(plane, shape, axes):
    return np.broadcast_to(np.expand_dims(plane, 3 - sum(axes)), shape)


def _itk_only_band(shape, spacing, angle, axes, tol=1e-6):
    """Voxels whose source lies outside ``[0, n - 1]`` but within ITK's half-voxel margin."""
    fa, fb = _mm_sources(shape, spacing, angle, axes)
    na, nb = shape[axes[0]], shape[axes[1]]
    itk_in = (fa >= -0.5 - tol) & (fa < na - 0.5 + tol) & (fb >= -0.5 - tol) & (fb < nb - 0.5 + tol)
    ours_in = (fa >= tol) & (fa <= na - 1 - tol) & (fb >= tol) & (fb <= nb - 1 - tol)
    return _plane_to_volume(itk_in & ~ours_in, shape, axes)


def _check_outside(out, ref, cval, shape, spacing, angle, axes):
    """The voxels filled with ``cval`` match, except in ITK's half-voxel border band."""
    differ = (out == cval) != (ref == cval)
    band = _itk_only_band(shape, spacing, angle, axes)
    assert not np.any(differ & ~band)
    assert band.mean() < 0.06  # a thin ring
    assert (out == cval).mean() > 0.05  # and the test has an outside at all


@pytest.mark.parametrize(
    ("axes", "angle"), [((1, 2), 17.0), ((0, 2), 17.0), ((0, 1), -40.0), ((1, 2), 90.0)]
)
def test_anisotropic_rotation_matches_simpleitk(axes, angle):
    image = _aniso_volume()
    for p in BRIGHT:
        image[p] = 3000.0
    geometry = Geometry(ANISO_SPACING, (-40.0, 12.5, -7.0))
    ref = _sitk_rotate(image, geometry, angle, axes, sitk.sitkLinear, CVAL)
    out = rotate(image, angle, axes, cval=CVAL, spacing=ANISO_SPACING)
    both = (out != CVAL) & (ref != CVAL)
    assert both.mean() > 0.7
    value_range = float(image.max() - image.min())
    np.testing.assert_allclose(out[both], ref[both], rtol=0, atol=1e-6 * value_range)
    _check_outside(out, ref, CVAL, image.shape, ANISO_SPACING, angle, axes)
    # rotating voxel indices (no spacing) shears the millimetres: clearly different
    voxel_space = rotate(image, angle, axes, cval=CVAL)
    inside = both & (voxel_space != CVAL)
    assert np.abs(voxel_space[inside] - ref[inside]).max() > 0.02 * value_range


def test_anisotropic_rotation_with_a_direction_matches_simpleitk():
    # voxel z along world x and x along world z, y flipped, then turned 25 deg: the rotation
    # acts on the plane of voxel axes (0, 2), a tilted plane in the world
    direction = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    direction = direction @ _direction_about_z(25.0)
    geometry = Geometry(ANISO_SPACING, (10.0, -3.0, 4.0), direction)
    image = _aniso_volume()
    axes, angle = (0, 2), 23.0
    ref = _sitk_rotate(image, geometry, angle, axes, sitk.sitkLinear, CVAL, direction)
    out = rotate(image, angle, axes, cval=CVAL, spacing=geometry.spacing)
    both = (out != CVAL) & (ref != CVAL)
    assert both.mean() > 0.7
    np.testing.assert_allclose(out[both], ref[both], rtol=0, atol=1e-3)
    _check_outside(out, ref, CVAL, image.shape, ANISO_SPACING, angle, axes)


@pytest.mark.parametrize(("axes", "angle"), [((1, 2), 17.0), ((0, 2), -17.0)])
def test_anisotropic_nearest_labels_match_simpleitk(axes, angle):
    # labels 1..4 everywhere (0 is the outside), with a few single-voxel labels
    image = _aniso_volume()
    labels = (1 + np.digitize(image, np.quantile(image, [0.25, 0.5, 0.75]))).astype(np.uint8)
    for p in BRIGHT:
        labels[p] = 9
    geometry = Geometry(ANISO_SPACING)
    ref = _sitk_rotate(labels, geometry, angle, axes, sitk.sitkNearestNeighbor, 0)
    out = rotate(labels, angle, axes, order=0, cval=0, spacing=ANISO_SPACING)
    assert out.dtype == np.uint8
    # sources within 1e-6 of a rounding tie may go either way
    fa, fb = _mm_sources(labels.shape, ANISO_SPACING, angle, axes)
    no_tie = (np.abs(fa % 1 - 0.5) > 1e-6) & (np.abs(fb % 1 - 0.5) > 1e-6)
    both = (out != 0) & (ref != 0) & _plane_to_volume(no_tie, labels.shape, axes)
    assert both.mean() > 0.7
    np.testing.assert_array_equal(out[both], ref[both])
    _check_outside(out, ref, 0, labels.shape, ANISO_SPACING, angle, axes)


@pytest.mark.parametrize("tilted", [False, True], ids=["identity", "tilted"])
@pytest.mark.parametrize(
    ("axes", "angle"), [((1, 2), 17.0), ((0, 2), 17.0), ((0, 1), 200.0), ((2, 1), -90.0)]
)
def test_rotated_geometry_is_simpleitk_transform_of_the_old_grid(axes, angle, tilted):
    # output voxel o shows the anatomy at T(world(o)) (SimpleITK resampling semantics); the
    # rotated geometry must put o exactly there
    direction = _direction_about_z(-35.0)[::-1].copy() if tilted else np.eye(3)
    geometry = Geometry(ANISO_SPACING, (-40.0, 12.5, -7.0), direction)
    new = geometry.rotated(ANISO_SHAPE, angle, axes)
    np.testing.assert_array_equal(new.spacing, geometry.spacing)
    np.testing.assert_allclose(new.direction.T @ new.direction, np.eye(3), atol=1e-12)
    plane = tuple(sorted(v % 3 for v in axes))
    img = _sitk_image(np.zeros(ANISO_SHAPE, np.float32), geometry)
    transform = _sitk_transform(img, angle, plane, direction if tilted else None)
    rng = np.random.default_rng(5)
    voxels = rng.integers(0, ANISO_SHAPE, size=(50, 3)).astype(np.float64)
    for o in voxels:
        expected = transform.TransformPoint(geometry.voxel_to_world(o)[::-1].tolist())[::-1]
        np.testing.assert_allclose(new.voxel_to_world(o), expected, rtol=0, atol=1e-9)


def test_bright_points_keep_their_world_position_after_an_anisotropic_rotation():
    geometry = Geometry(ANISO_SPACING, (-40.0, 12.5, -7.0), _direction_about_z(10.0))
    spacing = geometry.spacing
    for axes, angle in (((1, 2), 17.0), ((0, 2), 17.0), ((0, 1), -23.0), ((1, 2), 90.0)):
        new = geometry.rotated(ANISO_SHAPE, angle, axes)
        assert np.allclose(new.direction.T @ new.direction, np.eye(3), rtol=0, atol=1e-12)
        # half the diagonal of a voxel of the plane: the farthest a nearest-neighbour source is
        half_diag = 0.5 * np.hypot(spacing[axes[0]], spacing[axes[1]])
        shown, misses = 0, []
        for p in BRIGHT:
            before = geometry.voxel_to_world(p)
            point = np.zeros(ANISO_SHAPE, np.uint8)
            point[p] = 1
            # nearest neighbour: every voxel showing the point is within half a diagonal (a
            # rotated grid may show an input voxel twice or drop it)
            hits = np.argwhere(rotate(point, angle, axes, order=0, cval=0, spacing=spacing))
            for hit in hits:
                dist = np.linalg.norm(new.voxel_to_world(hit) - before)
                assert dist <= half_diag + 1e-9, (axes, angle, p, hit, dist, half_diag)
            shown += len(hits) > 0
            # bilinear: the brightest voxel is one of the grid points around it
            out = rotate(point, angle, axes, cval=0.0, spacing=spacing)
            peak = np.unravel_index(np.argmax(out), out.shape)
            assert np.linalg.norm(new.voxel_to_world(peak) - before) <= 2 * half_diag
            # a rotation of voxel indices (no spacing) puts the point elsewhere
            hits = np.argwhere(rotate(point, angle, axes, order=0, cval=0))
            misses += [np.linalg.norm(new.voxel_to_world(hit) - before) for hit in hits]
        assert shown >= 3
        if 0 in axes:  # 2.5 mm against 0.7 mm: a shear of several millimetres
            assert max(misses) > 2.5 * half_diag


@pytest.mark.parametrize(
    ("spacing", "axes"),
    [
        ((2.5, 0.7, 0.7), (1, 2)),
        ((0.7, 0.7, 0.7), (0, 2)),
        ((1.0, 3.0, 1.0), (0, 2)),
        ((2.5, 0.7, 0.7 * (1 + 4e-7)), (1, 2)),  # within the 1e-6 tolerance
    ],
)
@pytest.mark.parametrize("order", [0, 1])
def test_isotropic_plane_is_bit_identical_with_spacing(spacing, axes, order, rng):
    image = rng.integers(-1000, 2000, size=(9, 31, 34), dtype=np.int16)
    for angle in (17.3, -90.0, 200.5):
        kw = {"order": order, "n_threads": 2}
        plain = rotate(image, angle, axes, **kw)
        with_spacing = rotate(image, angle, axes, spacing=spacing, **kw)
        assert with_spacing.dtype == plain.dtype
        assert with_spacing.tobytes() == plain.tobytes()
        # and so is the geometry: the rotation of voxel indices, D R
        g = Geometry(spacing, (1.0, 2.0, 3.0), _direction_about_z(30.0))
        new = g.rotated(image.shape, angle, axes)
        a, b = axes
        t = np.deg2rad(angle)
        rot = np.eye(3)
        rot[a, a], rot[a, b], rot[b, a], rot[b, b] = np.cos(t), np.sin(t), -np.sin(t), np.cos(t)
        c = (np.asarray(image.shape) - 1) / 2
        np.testing.assert_allclose(new.direction, g.direction @ rot, atol=1e-12)
        np.testing.assert_allclose(new.origin, g.voxel_to_world(c - rot @ c), atol=1e-9)


def test_spacing_just_outside_the_tolerance_rotates_millimetres(rng):
    image = rng.normal(size=(3, 40, 40)).astype(np.float32)
    spacing = (1.0, 0.7, 0.7 * (1 + 1e-5))
    assert not np.array_equal(rotate(image, 30.0, spacing=spacing), rotate(image, 30.0))
    # the shear is tiny: a thousandth of a voxel at the edge
    np.testing.assert_allclose(rotate(image, 30.0, spacing=spacing), rotate(image, 30.0), atol=1e-3)


@pytest.mark.parametrize("axes", [(1, 2), (0, 2), (0, 1)])
@pytest.mark.parametrize("order", [0, 1])
def test_anisotropic_threads_give_identical_result(axes, order, rng):
    image = rng.integers(-1000, 1000, size=(37, 24, 29), dtype=np.int16)
    kw = {"order": order, "spacing": (2.5, 0.73, 0.68)}
    one = rotate(image, 8.0, axes, **kw)
    for n in (2, 3, 64):
        np.testing.assert_array_equal(rotate(image, 8.0, axes, n_threads=n, **kw), one)


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 1.0), (1.0, float("nan"), 1.0), (1.0, 2.0), "a"])
def test_bad_spacing(spacing):
    with pytest.raises(InvalidParameterError, match="rotate: spacing must be 3 positive floats"):
        rotate(np.zeros((2, 4, 4), np.int16), 10.0, spacing=spacing)
