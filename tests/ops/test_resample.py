"""Tests of ctflow.ops.resample against SimpleITK, scipy.ndimage and numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry, direction_to_sitk
from ctflow.ops.resample import resample, resize, unify_spacing

ROTATED = Rotation.from_euler("xyz", [10.0, -20.0, 30.0], degrees=True).as_matrix()
GEOM = Geometry((2.0, 0.8, 0.7), (-10.0, 5.0, 100.0), ROTATED)
# (output shape, output spacing): up-, down- and mixed anisotropic resampling
CASES = [
    ((36, 20, 61), (1.1, 1.3, 0.45)),
    ((9, 50, 17), (3.4, 0.5, 1.6)),
    ((13, 13, 13), (2.9, 1.7, 2.1)),
]


# -- references ---------------------------------------------------------------------------------
def _to_sitk(arr: np.ndarray, g: Geometry) -> sitk.Image:
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing([float(v) for v in g.spacing[::-1]])
    im.SetOrigin([float(v) for v in g.origin[::-1]])
    im.SetDirection(direction_to_sitk(g.direction))
    return im


def _sitk_resample(
    arr: np.ndarray, g: Geometry, out_g: Geometry, shape: tuple[int, ...], interp: int, cval: float
) -> np.ndarray:
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing([float(v) for v in out_g.spacing[::-1]])
    f.SetOutputOrigin([float(v) for v in out_g.origin[::-1]])
    f.SetOutputDirection(direction_to_sitk(out_g.direction))
    f.SetSize([int(v) for v in shape[::-1]])
    f.SetInterpolator(interp)
    f.SetDefaultPixelValue(cval)
    f.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(f.Execute(_to_sitk(arr, g)))


def _positions(old_shape, old_sp, new_shape, new_sp) -> list[np.ndarray]:
    """Source index sampled by each output index, per axis (the documented convention)."""
    return [
        (n_old - 1) / 2 + (np.arange(n) - (n - 1) / 2) * s / o
        for n_old, n, s, o in zip(old_shape, new_shape, new_sp, old_sp)
    ]


def _outer_and(masks: list[np.ndarray]) -> np.ndarray:
    return masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]


def _interior(old_shape, pos) -> np.ndarray:
    return _outer_and([(p >= 0) & (p <= n - 1) for p, n in zip(pos, old_shape)])


def _hu_volume(rng: np.random.Generator, shape=(21, 31, 41)) -> np.ndarray:
    return rng.integers(-1024, 1500, size=shape).astype(np.int16)


# -- agreement with SimpleITK ------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["edge", "reflect", "constant"])
@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_linear_matches_simpleitk_on_interior(rng, shape, spacing, padding):
    arr = _hu_volume(rng)
    out, out_g = resample(arr, GEOM, shape, spacing, order=1, padding=padding)
    assert out.shape == shape and out.dtype == np.float32
    assert out_g == GEOM.resampled(arr.shape, shape, spacing)
    ref = _sitk_resample(arr, GEOM, out_g, shape, sitk.sitkLinear, -1000.0)
    inside = _interior(arr.shape, _positions(arr.shape, GEOM.spacing, shape, spacing))
    assert inside.mean() > 0.8
    np.testing.assert_allclose(out[inside], ref[inside], rtol=0, atol=1e-3)


@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_nearest_label_mask_matches_simpleitk(rng, shape, spacing):
    labels = np.array([0, 1, 2, 5], dtype=np.uint8)
    mask = labels[rng.integers(0, 4, size=(21, 31, 41))]
    out, out_g = resample(mask, GEOM, shape, spacing, order=0, padding="constant", cval=0)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) <= set(labels.tolist())
    ref = _sitk_resample(mask, GEOM, out_g, shape, sitk.sitkNearestNeighbor, 0.0)
    pos = _positions(mask.shape, GEOM.spacing, shape, spacing)
    # exact .5 ties may round either way after SimpleITK's physical-point round trip
    not_tie = _outer_and([np.abs(p - np.floor(p) - 0.5) > 1e-6 for p in pos])
    near_inside = _outer_and([(p >= -0.49) & (p <= n - 0.51) for p, n in zip(pos, mask.shape)])
    check = not_tie & near_inside
    assert check.mean() > 0.5
    np.testing.assert_array_equal(out[check], ref[check].astype(np.uint8))


def test_cubic_matches_scipy_mirror_and_simpleitk(rng):
    vol = ndi.gaussian_filter(rng.normal(0.0, 300.0, size=(21, 31, 41)), 1.5).astype(np.float32)
    for shape, spacing in CASES:
        out, out_g = resample(vol, GEOM, shape, spacing, order=3, padding="reflect")
        pos = _positions(vol.shape, GEOM.spacing, shape, spacing)
        grid = np.meshgrid(*pos, indexing="ij")
        ref = ndi.map_coordinates(vol.astype(np.float64), grid, order=3, mode="mirror")
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)
        ref_itk = _sitk_resample(vol, GEOM, out_g, shape, sitk.sitkBSpline, -1000.0)
        inside = _interior(vol.shape, pos)
        np.testing.assert_allclose(out[inside], ref_itk[inside], rtol=0, atol=1e-3)


@pytest.mark.parametrize("old_shape", [(1, 7, 9), (2, 3, 16), (4, 5, 6)])
def test_cubic_tiny_axes_match_scipy(rng, old_shape):
    vol = rng.normal(0.0, 100.0, size=old_shape).astype(np.float32)
    g = Geometry((1.0, 1.0, 1.0))
    shape, spacing = (5, 9, 11), (0.37, 0.6, 1.3)
    out, _ = resample(vol, g, shape, spacing, order=3, padding="reflect")
    grid = np.meshgrid(*_positions(old_shape, g.spacing, shape, spacing), indexing="ij")
    ref = ndi.map_coordinates(vol.astype(np.float64), grid, order=3, mode="mirror")
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)


# -- geometry -----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 3])
def test_world_point_keeps_its_anatomy(order):
    g = Geometry((2.5, 0.7, 0.8), (-120.0, 30.0, -60.0), ROTATED)
    shape = (24, 60, 56)
    centre_vox = np.array([11.3, 27.6, 30.2])
    centre_world = g.voxel_to_world(centre_vox)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    d_mm = (idx - centre_vox) * g.spacing  # direction is orthonormal: world distance = this
    blob = (1000.0 * np.exp(-0.5 * (d_mm**2).sum(-1) / 4.0**2)).astype(np.float32)
    out, out_g = unify_spacing(blob, g, (1.0, 1.0, 1.0), order=order)
    out_idx = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), axis=-1)
    w = np.clip(out, 0, None).astype(np.float64)
    centroid_vox = (out_idx * w[..., None]).sum((0, 1, 2)) / w.sum()
    np.testing.assert_allclose(out_g.voxel_to_world(centroid_vox), centre_world, atol=0.01)
    peak = np.unravel_index(np.argmax(out), out.shape)
    assert np.linalg.norm(out_g.voxel_to_world(np.array(peak)) - centre_world) < 1.0


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resize_to_same_shape_is_identity(rng, order):
    arr = _hu_volume(rng, (9, 12, 10))
    out, out_g = resize(arr, GEOM, arr.shape, order=order)
    assert out_g == GEOM
    if order == 3:
        np.testing.assert_allclose(out, arr, rtol=0, atol=1e-3)
    else:
        np.testing.assert_array_equal(out, arr)


def test_resize_spacing_and_scipy_zoom(rng):
    arr = _hu_volume(rng, (10, 16, 12))
    g = Geometry((2.0, 0.5, 0.75), (4.0, -3.0, 2.0))
    new_shape = (25, 8, 17)
    out, out_g = resize(arr, g, new_shape)
    np.testing.assert_allclose(out_g.spacing, g.spacing * np.array(arr.shape) / new_shape)
    old_centre = g.voxel_to_world((np.array(arr.shape) - 1) / 2)
    np.testing.assert_allclose(out_g.voxel_to_world((np.array(new_shape) - 1) / 2), old_centre)
    zoom = np.array(new_shape) / np.array(arr.shape)
    ref = ndi.zoom(arr.astype(np.float64), zoom, order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)


def test_unify_spacing_default_shape_and_exact_spacing():
    arr = np.zeros((10, 21, 3), dtype=np.int16)
    g = Geometry((2.5, 0.7, 0.1))
    out, out_g = unify_spacing(arr, g, (1.0, 0.9, 1.0))
    # round(10 * 2.5) = 25, round(21 * 0.7 / 0.9) = round(16.33) = 16, max(1, round(0.3)) = 1
    assert out.shape == (25, 16, 1)
    np.testing.assert_array_equal(out_g.spacing, [1.0, 0.9, 1.0])


def test_unify_spacing_with_shape_is_the_centred_crop_or_pad(rng):
    arr = _hu_volume(rng, (10, 20, 20))
    g = Geometry((2.5, 0.7, 0.7), (1.0, 2.0, 3.0))
    full, full_g = unify_spacing(arr, g, 1.0)
    assert full.shape == (25, 14, 14)
    crop, crop_g = unify_spacing(arr, g, 1.0, shape=(21, 10, 12))
    np.testing.assert_array_equal(crop, full[2:23, 2:12, 1:13])
    np.testing.assert_allclose(crop_g.origin, full_g.voxel_to_world(np.array([2, 2, 1])))
    padded, pad_g = unify_spacing(arr, g, 1.0, shape=(29, 18, 14), padding="constant")
    full_constant, _ = unify_spacing(arr, g, 1.0, padding="constant")
    np.testing.assert_array_equal(padded[2:27, 2:16], full_constant)
    assert np.all(padded[0] == -1000.0) and np.all(padded[:, -1] == -1000.0)
    np.testing.assert_allclose(pad_g.origin, full_g.voxel_to_world(np.array([-2, -2, 0])))


# -- padding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["edge", "reflect", "constant"])
@pytest.mark.parametrize("half", [False, True])
def test_padding_modes_match_numpy_pad(rng, padding, half):
    arr = rng.integers(-500, 500, size=(3, 4, 5)).astype(np.int16)
    g = Geometry((1.0, 1.0, 1.0))
    pad = 3
    # same spacing, bigger grid: integer positions (-2 .. n+1) or half-integer ones
    extra = 5 if half else 4
    shape = tuple(n + extra for n in arr.shape)
    out, _ = resample(arr, g, shape, 1.0, order=1, padding=padding, cval=-77.0)
    kw = {"constant_values": -77} if padding == "constant" else {}
    padded = np.pad(arr.astype(np.float64), pad, mode=padding, **kw)
    pos = _positions(arr.shape, g.spacing, shape, g.spacing)
    grid = np.meshgrid(*[p + pad for p in pos], indexing="ij")
    assert min(float(p.min()) for p in pos) >= -pad  # every tap inside the padded array
    ref = ndi.map_coordinates(padded, grid, order=1)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    if not half:
        crop = padded[1:-1, 1:-1, 1:-1]
        np.testing.assert_array_equal(out, crop.astype(np.float32))


@pytest.mark.parametrize("padding", ["edge", "reflect", "constant"])
def test_nearest_padding_matches_numpy_pad(rng, padding):
    arr = rng.integers(1, 200, size=(3, 4, 5)).astype(np.uint8)
    shape = tuple(n + 4 for n in arr.shape)
    out, _ = resample(arr, Geometry((1.0, 1.0, 1.0)), shape, 1.0, order=0, padding=padding, cval=0)
    kw = {"constant_values": 0} if padding == "constant" else {}
    np.testing.assert_array_equal(out, np.pad(arr, 2, mode=padding, **kw))


# -- dtypes -------------------------------------------------------------------------------------
def test_dtype_rules(rng):
    g = Geometry((1.0, 1.0, 1.0))
    i16 = _hu_volume(rng, (4, 5, 6))
    assert resample(i16, g, (6, 6, 6), 0.8)[0].dtype == np.float32
    assert resample(i16, g, (6, 6, 6), 0.8, order=3)[0].dtype == np.float32
    assert resample(i16, g, (6, 6, 6), 0.8, order=0)[0].dtype == np.int16
    mask = rng.integers(0, 2, size=(4, 5, 6)).astype(np.uint8)
    assert resample(mask, g, (6, 6, 6), 0.8, order=0)[0].dtype == np.uint8
    as_bool, _ = resample(mask.astype(bool), g, (6, 6, 6), 0.8, order=0)
    as_u8, _ = resample(mask, g, (6, 6, 6), 0.8, order=0)
    assert as_bool.dtype == np.bool_
    np.testing.assert_array_equal(as_bool, as_u8.astype(bool))
    f64 = rng.normal(size=(4, 5, 6))
    for order in (0, 1, 3):
        assert resample(f64, g, (6, 6, 6), 0.8, order=order)[0].dtype == np.float32
    out, _ = resample(mask, g, (6, 6, 6), 0.8, order=1, dtype=np.uint8)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}


def test_int16_output_rounds_half_away_from_zero_and_clips():
    a = np.array([0, -1, 1, 3, -3, 32767, -32768, 10], dtype=np.float32)
    b = np.array([1, 0, 2, 4, -4, 40000, -40000, 11], dtype=np.float32)
    arr = np.stack([a, b]).reshape(2, 1, -1)
    g = Geometry((1.0, 1.0, 1.0))
    out, _ = resample(arr, g, (3, 1, a.size), (0.5, 1.0, 1.0), dtype=np.int16)
    mid = (a.astype(np.float64) + b) / 2  # the sample half-way between the two slices
    expected = np.clip(np.sign(mid) * np.floor(np.abs(mid) + 0.5), -32768, 32767)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out[1, 0], expected.astype(np.int16))
    np.testing.assert_array_equal(out[0, 0], np.clip(a, -32768, 32767).astype(np.int16))


# -- threads ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("order", "padding", "anti_alias"),
    [(0, "constant", False), (1, "constant", False), (1, "reflect", True), (3, "edge", False)],
)
def test_threads_give_identical_output(rng, order, padding, anti_alias):
    arr = _hu_volume(rng, (30, 64, 64))
    g = Geometry((1.25, 0.7, 0.7))
    kw = {"order": order, "padding": padding, "anti_alias": anti_alias, "shape": (48, 70, 66)}
    one, g1 = unify_spacing(arr, g, (0.9, 1.1, 1.6), n_threads=1, **kw)
    for n in (2, 3):
        many, gn = unify_spacing(arr, g, (0.9, 1.1, 1.6), n_threads=n, **kw)
        assert gn == g1
        np.testing.assert_array_equal(many, one)


# -- anti-aliasing ------------------------------------------------------------------------------
def test_anti_alias_is_gaussian_then_resample(rng):
    arr = rng.normal(0.0, 300.0, size=(21, 31, 41)).astype(np.float32)
    g = Geometry((1.0, 0.5, 0.7))
    spacing = np.array([3.0, 1.5, 0.6])  # down x3, down x3, up
    out, _ = unify_spacing(arr, g, spacing, anti_alias=True)
    ref = arr.astype(np.float64)
    for axis, f in enumerate(spacing / g.spacing):
        if f > 1:
            ref = ndi.gaussian_filter1d(ref, (f - 1) / 2, axis=axis, mode="mirror")
    expected, _ = unify_spacing(ref.astype(np.float32), g, spacing)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3)
    plain, _ = unify_spacing(arr, g, spacing)
    assert plain.std() > 1.5 * out.std()  # smoothing removed most of the white noise
    labels, _ = unify_spacing(arr > 0, g, spacing, order=0, anti_alias=True)
    np.testing.assert_array_equal(labels, unify_spacing(arr > 0, g, spacing, order=0)[0])


# -- errors -------------------------------------------------------------------------------------
GOOD = np.zeros((4, 5, 6), dtype=np.int16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((4, 5))}, r"resample: image must be a 3-D"),
        ({"image": [[[1]]]}, r"resample: image must be a 3-D .* got list"),
        ({"image": np.zeros((0, 5, 6))}, r"resample: image must be a non-empty"),
        ({"image": np.zeros((2, 2, 2), np.complex64)}, r"got dtype complex64"),
        ({"image": np.zeros((2, 2, 2), np.float16)}, r"got dtype float16"),
        ({"geometry": (1.0, 1.0, 1.0)}, r"resample: geometry must be a ctflow Geometry"),
        ({"shape": (0, 5, 6)}, r"resample: shape must be 3 positive integers"),
        ({"shape": (4.5, 5, 6)}, r"resample: shape must be 3 positive integers"),
        ({"shape": (4, 5)}, r"resample: shape must be 3 positive integers"),
        ({"spacing": (0.0, 0.7, 0.7)}, r"resample: spacing must be 3 positive floats"),
        ({"spacing": (1.0, np.nan, 1.0)}, r"resample: spacing must be 3 positive floats"),
        ({"order": 2}, r"resample: order must be one of 0, 1, 3; got 2"),
        ({"order": True}, r"resample: order must be"),
        ({"padding": "wrap"}, r"resample: padding must be one of 'edge', 'reflect', 'constant'"),
        ({"cval": float("nan")}, r"resample: cval must be a finite number"),
        ({"cval": "air"}, r"resample: cval must be a finite number"),
        ({"dtype": np.float64}, r"resample: dtype must be None or one of"),
        ({"dtype": np.bool_}, r"resample: dtype must be None or one of"),
        ({"dtype": "nonsense"}, r"resample: dtype must be None or one of"),
        ({"n_threads": 0}, r"resample: n_threads must be an integer >= 1; got 0"),
        ({"anti_alias": "yes"}, r"resample: anti_alias must be True or False"),
        (
            {"padding": "constant", "dtype": np.uint8, "cval": -1000},
            r"resample: cval must fit the output dtype uint8",
        ),
    ],
)
def test_resample_rejects_bad_arguments(kwargs, match):
    args = {"image": GOOD, "geometry": Geometry((1.0, 1.0, 1.0)), "shape": (4, 5, 6)}
    args["spacing"] = 1.0
    args.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        resample(
            args.pop("image"), args.pop("geometry"), args.pop("shape"), args.pop("spacing"), **args
        )


def test_resize_and_unify_spacing_name_themselves_in_errors():
    g = Geometry((1.0, 1.0, 1.0))
    with pytest.raises(InvalidParameterError, match=r"^resize: shape must be 3 positive"):
        resize(GOOD, g, (4, -1, 6))
    with pytest.raises(InvalidParameterError, match=r"^resize: order must be"):
        resize(GOOD, g, (4, 5, 6), order=5)
    with pytest.raises(InvalidParameterError, match=r"^unify_spacing: spacing must be 3 positive"):
        unify_spacing(GOOD, g, (0.0, 0.7, 0.7))
    with pytest.raises(InvalidParameterError, match=r"^unify_spacing: shape must be 3 positive"):
        unify_spacing(GOOD, g, 1.0, shape=(1, 2))
    with pytest.raises(InvalidParameterError, match=r"^unify_spacing: padding must be one of"):
        unify_spacing(GOOD, g, 1.0, padding="mirror")
    with pytest.raises(InvalidParameterError, match=r"^unify_spacing: image must be a 3-D"):
        unify_spacing(np.zeros(5), g, 1.0)


@pytest.mark.parametrize(("order", "anti_alias"), [(1, True), (3, False), (3, True)])
def test_input_is_never_modified(rng, order, anti_alias):
    arr = rng.normal(0.0, 100.0, size=(12, 14, 16)).astype(np.float32)
    before = arr.copy()
    unify_spacing(arr, Geometry((1.0, 1.0, 1.0)), 2.5, order=order, anti_alias=anti_alias)
    np.testing.assert_array_equal(arr, before)


@pytest.mark.parametrize("old_shape", [(2, 3, 40), (40, 1, 3), (3, 40, 2)])
def test_anti_alias_on_short_axes_matches_scipy(rng, old_shape):
    arr = rng.normal(0.0, 300.0, size=old_shape).astype(np.float32)
    g = Geometry((1.0, 1.0, 1.0))
    out, _ = unify_spacing(arr, g, 4.0, anti_alias=True, padding="edge")
    ref = arr.astype(np.float64)
    for axis in range(3):
        ref = ndi.gaussian_filter1d(ref, 1.5, axis=axis, mode="mirror")
    expected, _ = unify_spacing(ref.astype(np.float32), g, 4.0, padding="edge")
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3)
