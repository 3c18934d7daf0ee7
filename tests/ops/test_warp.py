"""warp against SimpleITK (an affine, a BSplineTransform of order 3, an affine, resampled in
one pass), the identity and affine cases against resample_to, and random_elastic_field: its
grid is ITK's BSplineTransformInitializer's, and its fields never fold (Jacobian determinant
> 0 on the whole volume) at the default settings."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.kernels.warp import MIN_SEGMENT, row_axis
from ctflow.ops.affine import affine_matrix, resample_to
from ctflow.ops.warp import (
    FOLDING_K,
    elastic_displacement,
    random_elastic_field,
    warp,
)

SRC_SHAPE = (24, 28, 26)
OUT_SHAPE = (20, 24, 22)
SP_OUT = np.array([1.3, 1.1, 1.2])
SP_SRC = np.array([1.0, 0.9, 0.95])


def _smooth_volume(seed: int, shape=SRC_SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = ndi.gaussian_filter(rng.normal(0.0, 1.0, shape), 2.0)
    return (v / np.abs(v).max() * 1000.0).astype(np.float32)


def _maps(rotated: bool):
    """P: output index -> frame (the output grid's mm, rotated 12 degrees in the (y, x) plane
    or not: rows oblique to the control grid or along it); Q: frame -> source index (another
    spacing, shifted)."""
    lin = np.diag(SP_OUT)
    if rotated:
        a = np.deg2rad(12.0)
        r = np.array([[1.0, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        lin = r @ lin
    half_out = (np.asarray(OUT_SHAPE) - 1) / 2
    c_out = half_out * SP_OUT
    p = np.hstack([lin, (c_out - lin @ half_out)[:, None]])
    c_src = (np.asarray(SRC_SHAPE) - 1) / 2
    q = np.hstack([np.diag(1.0 / SP_SRC), (c_src - c_out / SP_SRC + 0.3)[:, None]])
    return p, q


def _sitk_affine(m: np.ndarray) -> sitk.AffineTransform:
    """A (z, y, x) 3x4 map as an ITK transform on (x, y, z) points."""
    t = sitk.AffineTransform(3)
    t.SetMatrix(m[::-1, :3][:, ::-1].ravel().tolist())
    t.SetTranslation(m[::-1, 3].tolist())
    return t


def _sitk_bspline(coef, origin, step) -> sitk.BSplineTransform:
    """The same field as an ITK BSplineTransform: fixed parameters (grid size, origin,
    spacing, direction) in x, y, z order; parameters all x-coefficients, then y, then z, each
    x-fastest (the C order of our (z, y, x) arrays)."""
    t = sitk.BSplineTransform(3, 3)
    size = [float(n) for n in coef.shape[1:][::-1]]
    t.SetFixedParameters([*size, *origin[::-1], *step[::-1], 1, 0, 0, 0, 1, 0, 0, 0, 1])
    params = np.concatenate([coef[2].ravel(), coef[1].ravel(), coef[0].ravel()])
    t.SetParameters(params.astype(np.float64).tolist())
    return t


def _sitk_warp(src, p, q, coef, origin, step, order, cval):
    # CompositeTransform([a, b, c]) maps x to a(b(c(x))): output index -> frame -> +D -> source
    chain = sitk.CompositeTransform([_sitk_affine(q), _sitk_bspline(coef, origin, step)])
    chain.AddTransform(_sitk_affine(p))
    ref = sitk.GetImageFromArray(np.zeros(OUT_SHAPE, np.float32))  # spacing 1: point = index
    interp = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
    out = sitk.Resample(sitk.GetImageFromArray(src), ref, chain, interp, cval, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _comparable(p, q, coef, origin, step):
    """Voxels whose frame point has all 64 control points in the grid (ITK's valid region,
    where it does not set D to 0) and whose source lies a voxel inside the volume."""
    o = np.indices(OUT_SHAPE).reshape(3, -1).T.astype(np.float64)
    f = o @ p[:, :3].T + p[:, 3]
    u = (f - origin) / step
    full = np.all((u >= 1.0) & (u < np.asarray(coef.shape[1:]) - 2.0), axis=1)
    s = (f + elastic_displacement(f, coef, origin, step)) @ q[:, :3].T + q[:, 3]
    inner = np.all((s >= 1.0) & (s <= np.asarray(SRC_SHAPE) - 2.0), axis=1)
    return full & inner


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("control_points", [5, 8])
@pytest.mark.parametrize("locked", [0, 2])
def test_warp_equals_simpleitk_bspline_resampling(rotated, control_points, locked):
    rng = np.random.default_rng(control_points + 10 * locked)
    src = _smooth_volume(1)
    p, q = _maps(rotated)
    coef, origin, step = random_elastic_field(
        OUT_SHAPE, SP_OUT, rng, control_points, max_displacement_mm=1.8, locked_borders=locked
    )
    assert row_axis(p, step, OUT_SHAPE[2]) == (-1 if rotated else 2)
    if rotated:  # the cell polynomials (coarse grid) or the 64-point sums (fine grid)
        assert (np.abs(p[:, 2] / step).max() * MIN_SEGMENT <= 1.0) == (control_points == 5)
    out = warp(src, p, q, OUT_SHAPE, coef=coef, grid_origin=origin, grid_step=step, n_threads=2)
    ref = _sitk_warp(src, p, q, coef, origin, step, 1, -1000.0)
    mask = _comparable(p, q, coef, origin, step).reshape(OUT_SHAPE)
    assert mask.mean() > 0.4
    diff = np.abs(out - ref)[mask].max() / np.ptp(src)
    assert diff < 1e-3, diff  # measured: ~2e-8 of the range (float32 rounding)
    # the displacement itself, at frame points with full support
    pts = rng.uniform(origin + step, origin + step * (np.asarray(coef.shape[1:]) - 2), (200, 3))
    t = _sitk_bspline(coef, origin, step)
    itk = np.array([np.subtract(t.TransformPoint(tuple(x[::-1])), x[::-1]) for x in pts])
    np.testing.assert_allclose(
        elastic_displacement(pts, coef, origin, step), itk[:, ::-1], atol=1e-6
    )


@pytest.mark.parametrize("rotated", [False, True])
def test_nearest_labels_equal_simpleitk_nearest(rotated):
    rng = np.random.default_rng(3)
    labels = (np.abs(_smooth_volume(2)) // 150).astype(np.uint8)  # blobs of labels 0..6
    p, q = _maps(rotated)
    coef, origin, step = random_elastic_field(OUT_SHAPE, SP_OUT, rng, 6, 2.0)
    out = warp(labels, p, q, OUT_SHAPE, coef=coef, grid_origin=origin, grid_step=step, order=0,
               cval=0)  # fmt: skip
    assert out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(labels))
    ref = _sitk_warp(labels.astype(np.float32), p, q, coef, origin, step, 0, 0.0)
    mask = _comparable(p, q, coef, origin, step).reshape(OUT_SHAPE)
    agree = (out == ref)[mask].mean()
    assert agree > 0.999  # only exact rounding ties may go either way


def test_zero_coefficients_are_the_identity_and_the_affine_resampling():
    img = _smooth_volume(4)
    eye = np.eye(4)
    zeros = np.zeros((3, 6, 6, 6), np.float32)
    grid = {"coef": zeros, "grid_origin": (-5.0, -5.0, -5.0), "grid_step": (7.0, 7.0, 7.0)}
    same = warp(img, eye, eye, img.shape, **grid)
    np.testing.assert_array_equal(same, img)
    np.testing.assert_array_equal(warp(img, eye, eye, img.shape, order=0, **grid), img)
    np.testing.assert_array_equal(warp(img, eye, eye, img.shape), img)
    # through two geometries, as resample_to: P = target voxel -> world, Q = world -> source voxel
    src_g = Geometry((1.0, 0.9, 0.95), (3.0, -2.0, 1.0))
    a = np.deg2rad(20.0)
    rot = np.array([[1.0, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    dst_g = Geometry((1.3, 1.1, 1.2), (4.0, -1.0, 0.0), rot)
    p = dst_g.affine[:3]
    q = np.linalg.inv(src_g.affine)[:3]
    ref = resample_to(img, src_g, dst_g, OUT_SHAPE)
    np.testing.assert_allclose(warp(img, p, q, OUT_SHAPE), ref, atol=1e-4)
    world = {"coef": zeros, "grid_origin": (-20.0, -20.0, -20.0), "grid_step": (9.0, 9.0, 9.0)}
    np.testing.assert_allclose(warp(img, p, q, OUT_SHAPE, **world), ref, atol=1e-3)
    lab = (img > 0).astype(np.uint8)
    np.testing.assert_array_equal(
        warp(lab, p, q, OUT_SHAPE, order=0, cval=0),
        resample_to(lab, src_g, dst_g, OUT_SHAPE, order=0, cval=0),
    )
    np.testing.assert_allclose(affine_matrix(src_g, dst_g), q @ dst_g.affine, atol=1e-12)


def test_threads_and_dtypes():
    img = (_smooth_volume(5)).astype(np.int16)
    p, q = _maps(True)
    coef, origin, step = random_elastic_field(OUT_SHAPE, SP_OUT, np.random.default_rng(0), 6, 2.0)
    kw = {"coef": coef, "grid_origin": origin, "grid_step": step}
    one = warp(img, p, q, OUT_SHAPE, **kw)
    assert one.dtype == np.float32 and one.shape == OUT_SHAPE and one.flags.c_contiguous
    np.testing.assert_array_equal(warp(img, p, q, OUT_SHAPE, n_threads=3, **kw), one)
    ints = warp(img, p, q, OUT_SHAPE, dtype=np.int16, n_threads=2, **kw)
    assert ints.dtype == np.int16
    expected = np.sign(one) * np.floor(np.abs(one) + 0.5)  # half away from zero
    assert np.abs(ints - expected).max() <= 1  # float noise at exact .5 only
    assert (ints == expected).mean() > 0.999
    mask = np.zeros(SRC_SHAPE, bool)
    mask[5:15, 6:20, 4:18] = True
    warped = warp(mask, p, q, OUT_SHAPE, order=0, cval=0, **kw)
    assert warped.dtype == np.bool_ and 0 < warped.sum() < warped.size
    f64 = warp(img.astype(np.float64), p, q, OUT_SHAPE, order=0, **kw)
    assert f64.dtype == np.float32


def _min_jacobian(coef, origin, step, shape, spacing, n=22, seed=0):
    """Smallest det(I + dD/dp) over a lattice of n^3 points and as many random points of the
    volume (central differences; D is a cubic, h = 1e-3 mm)."""
    extent = (np.asarray(shape) - 1) * spacing
    axes = [np.linspace(0.0, e, n) for e in extent]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    rand = np.random.default_rng(seed).uniform(0.0, extent, (n**3, 3))
    pts = np.concatenate([lattice, rand])
    h = 1e-3
    jac = np.empty((len(pts), 3, 3))
    for b in range(3):
        e = np.zeros(3)
        e[b] = h
        hi = elastic_displacement(pts + e, coef, origin, step)
        lo = elastic_displacement(pts - e, coef, origin, step)
        jac[:, :, b] = (hi - lo) / (2 * h)
    return float(np.linalg.det(jac + np.eye(3)).min())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_fields_do_not_fold_at_the_default_settings(seed):
    # 96 x 77 x 77 mm: the default 7.5 mm is near the limit (7.77 mm for the 19.3 mm control
    # spacing of y and x) — the hardest volume the defaults accept
    shape, spacing = (64, 96, 96), np.array([1.5, 0.8, 0.8])
    coef, origin, step = random_elastic_field(shape, spacing, np.random.default_rng(seed))
    assert coef.shape == (3, 7, 7, 7) and coef.dtype == np.float32
    limit = step / FOLDING_K
    assert np.all(limit > 7.5) and limit.min() < 7.5 * 1.04
    assert np.abs(coef).max() <= 7.5 and np.abs(coef).max() > 5.0
    assert _min_jacobian(coef, origin, step, shape, spacing, seed=seed) > 0.0


def test_folding_is_refused_and_real():
    shape, spacing = (32, 32, 32), np.ones(3)
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidParameterError, match=r"must be below 3\.2\d* mm"):
        random_elastic_field(shape, spacing, rng)  # 32 mm / 4 cells: 8.06 mm / 2.48
    with pytest.raises(InvalidParameterError, match="axis 2"):
        random_elastic_field(shape, spacing, rng, max_displacement_mm=(1.0, 1.0, 4.0))
    coef, origin, step = random_elastic_field(shape, spacing, rng, 5, 6.0)  # fewer points: ok
    assert _min_jacobian(coef, origin, step, shape, spacing) > 0.0
    # the bound is not vacuous: alternating coefficients of 1.2 control spacings fold
    bad = np.zeros((3, 7, 7, 7), np.float32)
    bad[2] = 1.2 * step[2] * (-1.0) ** np.arange(7)[None, None, :]
    assert _min_jacobian(bad, origin, step, shape, spacing) < 0.0


def test_the_grid_is_itk_bspline_transform_initializer_s():
    """The grid TorchIO's RandomElasticDeformation uses (ITK's initializer on the image)."""
    shape, spacing = (20, 30, 40), (1.5, 0.9, 0.8)
    coef, origin, step = random_elastic_field(
        shape, spacing, np.random.default_rng(0), (6, 7, 8), 1.0, locked_borders=1
    )
    img = sitk.Image(list(shape[::-1]), sitk.sitkFloat32)
    img.SetSpacing(spacing[::-1])
    itk = sitk.BSplineTransformInitializer(img, [n - 3 for n in coef.shape[1:][::-1]])
    fixed = np.asarray(itk.GetFixedParameters())
    np.testing.assert_array_equal(fixed[:3][::-1], coef.shape[1:])
    np.testing.assert_allclose(fixed[3:6][::-1], origin, rtol=1e-6)
    np.testing.assert_allclose(fixed[6:9][::-1], step, rtol=1e-6)
    # locked layers are 0 on every side of every axis, the rest is drawn
    for axis in (1, 2, 3):
        edge = np.take(coef, [0, -1], axis=axis)
        assert not edge.any()
    assert np.all(coef[:, 1:-1, 1:-1, 1:-1] != 0)


def test_random_fields_follow_the_generator():
    a = random_elastic_field((64, 64, 64), 1.5, np.random.default_rng(7))
    b = random_elastic_field((64, 64, 64), 1.5, np.random.default_rng(7))
    c = random_elastic_field((64, 64, 64), 1.5, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    per_axis = random_elastic_field(
        (64, 64, 64), 1.5, np.random.default_rng(7), (5, 6, 7), (1, 2, 3)
    )
    assert per_axis[0].shape == (3, 5, 6, 7)
    assert [np.abs(per_axis[0][k]).max() <= m for k, m in enumerate((1, 2, 3))] == [True] * 3


BAD_WARP = [
    ({"P": np.eye(3)}, "P must be a finite 3x4"),
    ({"Q": np.full((3, 4), np.nan)}, "Q must be a finite 3x4"),
    ({"P": np.diag([1.0, 1.0, 1.0, 2.0])}, "last row 0, 0, 0, 1"),
    ({"coef": np.zeros((3, 4, 4, 4))}, "coef needs grid_origin and grid_step"),
    ({"grid_step": (1.0, 1.0, 1.0)}, "grid_origin and grid_step need coef"),
    ({"coef": np.zeros((2, 4, 4, 4)), "grid_origin": 0, "grid_step": 1}, "coef must be a real"),
    ({"coef": np.full((3, 4, 4, 4), np.inf), "grid_origin": (0, 0, 0), "grid_step": 1},
     "coef must be finite"),
    ({"coef": np.zeros((3, 4, 4, 4)), "grid_origin": (0, 0, 0), "grid_step": (1, 0, 1)},
     "grid_step must be 3 positive"),
    ({"coef": np.zeros((3, 4, 4, 4)), "grid_origin": (0, 0), "grid_step": 1}, "grid_origin"),
    ({"order": 3}, "order must be one of 0, 1"),
    ({"dtype": np.uint8, "cval": -1000.0}, "does not fit the output dtype uint8"),
    ({"shape": (4, 0, 4)}, "shape must be 3 positive integers"),
    ({"n_threads": 0}, "n_threads must be an integer >= 1"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), BAD_WARP)
def test_warp_refuses_bad_arguments(change, message):
    args = {"P": np.eye(4), "Q": np.eye(4), "shape": (4, 4, 4)} | change
    with pytest.raises(InvalidParameterError, match=message):
        warp(np.zeros((4, 4, 4), np.float32), **args)


def test_warp_refuses_bad_volumes_and_field_arguments():
    with pytest.raises(InvalidScanError, match="warp: image must be a 3-D"):
        warp(np.zeros((4, 4), np.float32), np.eye(4), np.eye(4), (4, 4, 4))
    rng = np.random.default_rng(0)
    big = (128, 128, 128)
    with pytest.raises(InvalidParameterError, match=r"rng must be a numpy\.random\.Generator"):
        random_elastic_field(big, 1.0, 0)
    with pytest.raises(InvalidParameterError, match="control_points must be an integer >= 5"):
        random_elastic_field(big, 1.0, rng, control_points=4)
    random_elastic_field(big, 1.0, rng, control_points=4, locked_borders=1)
    with pytest.raises(InvalidParameterError, match="control_points must be an integer or 3"):
        random_elastic_field(big, 1.0, rng, control_points=(5, 5))
    with pytest.raises(InvalidParameterError, match="locked_borders must be an integer in"):
        random_elastic_field(big, 1.0, rng, locked_borders=3)
    with pytest.raises(InvalidParameterError, match="max_displacement_mm must be one or 3"):
        random_elastic_field(big, 1.0, rng, max_displacement_mm=-1.0)
    with pytest.raises(InvalidParameterError, match="spacing must be 3 positive"):
        random_elastic_field(big, 0.0, rng)
    with pytest.raises(InvalidParameterError, match="points must be finite"):
        elastic_displacement(np.zeros((2, 2)), np.zeros((3, 4, 4, 4)), 0, 1)
