"""Random geometric augmentation and fused geometry, against SimpleITK and the unfused chain."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import ctflow as cf
from ctflow.actions import CentralCrop, RandomAffine, RandomFlip, UnifySpacing
from ctflow.actions.fusion import Fused, fuse
from ctflow.geometry import Geometry
from ctflow.metrics import dice
from ctflow.synthetic import make_dataset

SPACING = (2.5, 0.7, 0.8)
ORIGIN = (-10.0, 5.0, 3.0)
XYZ = np.eye(4)[[2, 1, 0, 3]]  # (z, y, x) <-> SimpleITK's (x, y, z), homogeneous


@pytest.fixture(scope="module")
def smooth():
    """A smooth volume (so one or two interpolations differ little) and a blob label map."""
    rng = np.random.default_rng(0)
    img = (ndimage.gaussian_filter(rng.normal(0, 300, (40, 64, 64)), 3) * 10).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[ndimage.gaussian_filter(rng.random(img.shape), 3) > 0.5] = 1
    lab[img > 50] = 3
    return img, lab


def _batch(img, lab=None, direction=None):
    b = cf.CTBatch.from_arrays([img], spacing=SPACING, origin=ORIGIN, direction=direction)
    return b if lab is None else b.set_component("masks", [lab])


def _sitk(arr, geometry):
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(geometry.spacing[::-1].tolist())
    im.SetOrigin(geometry.origin[::-1].tolist())
    im.SetDirection((XYZ[:3, :3] @ geometry.direction @ XYZ[:3, :3]).ravel().tolist())
    return im


def _sitk_affine(world):
    """A SimpleITK transform of a (z, y, x) 4x4 world map (output point -> input point)."""
    w = XYZ @ np.asarray(world) @ XYZ
    t = sitk.AffineTransform(3)
    t.SetMatrix(w[:3, :3].ravel().tolist())
    t.SetTranslation(w[:3, 3].tolist())
    return t


@pytest.mark.parametrize("direction", [None, np.diag([1.0, -1.0, -1.0])])
def test_random_affine_equals_simpleitk_with_the_drawn_transform(smooth, direction):
    img, lab = smooth
    b = _batch(img, lab, direction)
    b.set_random_state(3, 0)
    b = b.random_affine(degrees=(20, 10, 5), scales=0.1, shear=5, translation_mm=4)
    params = b.history[0][-1]["params"]
    assert params["applied"] and len(params["degrees"]) == 3
    g = Geometry(SPACING, ORIGIN, direction)
    transform = _sitk_affine(params["world"])
    ref = sitk.Resample(_sitk(img, g), _sitk(img, g), transform, sitk.sitkLinear, -1000.0)
    np.testing.assert_allclose(b.images, sitk.GetArrayFromImage(ref), atol=1e-3)
    ref_lab = sitk.Resample(_sitk(lab, g), _sitk(lab, g), transform, sitk.sitkNearestNeighbor, 0)
    assert np.mean(b.masks != sitk.GetArrayFromImage(ref_lab)) < 1e-3
    assert set(np.unique(b.masks).tolist()) <= {0, 1, 3}
    # the grid is the item's own; the content moved
    assert b.geometry(0) == g and np.abs(b.images - img).max() > 100


def test_random_affine_rotation_is_in_millimetres_on_anisotropic_voxels():
    """A 90-degree turn of the (y, x) plane maps a point at (dy, dx) mm to (-dx, dy) mm."""
    img = np.full((3, 41, 41), -1000, np.float32)
    sp = (1.0, 0.5, 1.0)  # y voxels half as long as x voxels
    # a bright voxel 8 mm along +x from the centre (x index 20 + 8)
    img[1, 20, 28] = 1000
    sp = np.asarray(sp)
    action = RandomAffine(degrees=(90, 0, 0), scales=0)
    step = action.grid_step(
        _state(img.shape, Geometry(sp)),
        {"applied": True, "degrees": [90, 0, 0], "scales": [1, 1, 1], "shear": [0, 0, 0],
         "translation_mm": [0, 0, 0]},
    )  # fmt: skip
    # R_z(90) takes +x to -y: the output voxel 8 mm along -y (y index 20 - 16) shows it
    src = step.matrix @ np.array([1, 4, 20, 1.0])
    np.testing.assert_allclose(src[:3], [1, 20, 28], atol=1e-9)


def _state(shape, geometry):
    from ctflow.actions.fusion import GridState

    return GridState("x", tuple(shape), geometry, np.random.default_rng(0))


def test_random_affine_moves_the_nodule_table_with_the_anatomy(tmp_path):
    paths, csv = make_dataset(tmp_path, n_scans=1, shape=(48, 96, 96), seed=2)
    ds = cf.Dataset.from_paths(paths)
    pipe = (
        cf.Pipeline()
        .load()
        .fetch_nodules(cf.read_annotations(csv))
        .random_affine(degrees=15, scales=0.1, translation_mm=5)
        .create_mask()
    )
    b = (ds >> pipe).next_batch(1, seed=4)
    plain = (ds >> cf.Pipeline(pipe.actions[:2]).create_mask()).next_batch(1)
    assert len(b.nodules) == len(plain.nodules) >= 1
    moved = b.images[b.masks > 0].mean()  # the moved spheres on the moved scan
    before = plain.images[plain.masks > 0].mean()  # the spheres on the scan as loaded
    stale = b.images[plain.masks > 0].mean()  # the old spheres on the moved scan
    # the phantom's nodules are soft tissue in dark lung: the moved spheres still hit them
    assert abs(moved - before) < 60, (moved, before, stale)
    assert stale < before - 150, (moved, before, stale)
    assert not np.allclose(b.nodules[["z", "y", "x"]], plain.nodules[["z", "y", "x"]])


def test_p_zero_is_the_identity_and_the_record_says_so(smooth):
    img, lab = smooth
    b = _batch(img, lab).random_affine(p=0).random_flip(p=0)
    np.testing.assert_array_equal(b.images, img)
    np.testing.assert_array_equal(b.masks, lab)
    assert b.history[0][-2]["params"] == {"applied": False}
    assert b.history[0][-1]["params"] == {"axes": []}


def test_random_flip_is_exact_and_keeps_world_positions(smooth):
    img, _ = smooth
    b = _batch(img)
    b.set_random_state(1, 0)
    b = b.random_flip(axes=(0, 1, 2), p=1.0)
    assert b.history[0][-1]["params"]["axes"] == [0, 1, 2]
    np.testing.assert_array_equal(b.images, img[::-1, ::-1, ::-1])
    far_corner = Geometry(SPACING, ORIGIN).voxel_to_world([39, 63, 63])
    np.testing.assert_allclose(b.voxel_to_world(0, (0, 0, 0)), far_corner)


@pytest.mark.parametrize(
    "bad",
    [
        {"degrees": -1},
        {"degrees": (1, 2)},
        {"scales": 1.0},
        {"shear": 75},
        {"translation_mm": "far"},
        {"p": 1.5},
        {"order": 3},
    ],
)
def test_bad_values_are_refused_when_written(bad):
    (name,) = bad
    with pytest.raises(cf.InvalidParameterError, match=f"random_affine: {name}"):
        cf.Pipeline().random_affine(**bad)


def test_the_planner_groups_geometry_and_moves_crops_before_voxelwise_actions():
    p = (
        cf.Pipeline()
        .load()
        .unify_spacing(1.0)
        .random_affine()
        .normalize_hu()
        .central_crop((8, 8, 8))
        .random_flip()
        .apply_noise()
        .rotate(10)
    )
    assert [a.label for a in p.planned] == [
        "load",
        "unify_spacing + random_affine + central_crop + random_flip",
        "normalize_hu",
        "apply_noise",
        "rotate",
    ]
    assert [a.label for a in cf.Pipeline(p.actions, fuse=False).planned] == p.action_names
    # settings that cannot be one pass are not fused: cubic, anti-aliasing, reflect padding
    assert len(fuse((UnifySpacing(1.0, order=3), CentralCrop((4, 4, 4))))) == 2
    assert len(fuse((UnifySpacing(1.0, shape=(4, 4, 4)), CentralCrop((4, 4, 4))))) == 2
    # only moves of whole voxels are left as they are
    assert all(not isinstance(a, Fused) for a in fuse((RandomFlip(), CentralCrop((4, 4, 4)))))


def test_fused_equals_unfused_where_the_unfused_chain_interpolates_once(smooth):
    img, lab = smooth
    p = cf.Pipeline().unify_spacing(1.0).normalize_hu().central_crop((30, 30, 30)).flip(1)
    fused = p.execute(_batch(img, lab), seed=1)
    plain = cf.Pipeline(p.actions, fuse=False).execute(_batch(img, lab), seed=1)
    np.testing.assert_allclose(fused.images, plain.images, atol=1e-6)
    np.testing.assert_array_equal(fused.masks, plain.masks)
    assert fused.geometry(0) == plain.geometry(0)
    assert [h["action"] for h in fused.history[0]] == [
        "unify_spacing",
        "central_crop",
        "flip",
        "normalize_hu",
    ]


@pytest.mark.parametrize(
    "pipeline",
    [
        cf.Pipeline().resize((20, 24, 24), dtype="uint8").flip(0),
        cf.Pipeline().unify_spacing(1.5, dtype="uint8").flip(2),
        cf.Pipeline().resize((20, 24, 24), dtype="int8").flip(1),
    ],
    ids=["resize-uint8", "unify_spacing-uint8", "resize-int8"],
)
def test_fused_small_integer_outputs_need_no_fill_value_they_cannot_hold(smooth, pipeline):
    """resize / unify_spacing pad by their edges: fused with a flip into a uint8 output, the
    pass must not refuse air (-1000) as a fill it never uses."""
    img, _ = smooth
    img = np.clip(img, 0, 100).astype(np.int16)
    fused = pipeline.execute(_batch(img), seed=0)
    plain = cf.Pipeline(pipeline.actions, fuse=False).execute(_batch(img), seed=0)
    assert fused.images.dtype == plain.images.dtype
    assert fused.geometry(0) == plain.geometry(0)
    diff = np.abs(fused.images.astype(np.int16) - plain.images.astype(np.int16))
    if pipeline.actions[0].name == "resize":  # whole-voxel flips after one resampling: exact
        assert diff.max() == 0
    else:  # one trilinear pass against separable passes: close, and never a fill value
        assert diff.mean() < 0.05
        assert fused.images.min() >= img.min() and fused.images.max() <= img.max()


def test_fused_random_chain_draws_what_the_unfused_chain_draws_and_equals_one_sitk_pass(smooth):
    img, lab = smooth
    p = (
        cf.Pipeline()
        .unify_spacing(1.0)
        .random_affine(degrees=10, scales=0.05, translation_mm=3)
        .rotate(8, random=True)
        .central_crop((30, 40, 40))
    )
    fused = p.execute(_batch(img, lab), seed=7)
    plain = cf.Pipeline(p.actions, fuse=False).execute(_batch(img, lab), seed=7)
    drawn = [h["params"] for h in fused.history[0]]
    assert drawn == [h["params"] for h in plain.history[0]]
    assert fused.geometry(0) == plain.geometry(0)
    # unfused interpolates three times: close, not equal
    inner = (slice(4, -4),) * 3
    assert np.abs(fused.images - plain.images)[inner].max() < 0.05 * np.ptp(img)
    assert dice(fused.masks, plain.masks)[3] > 0.85  # thin blobs, nearest three times
    # the fused pass is one resample with the composed transform: rebuild it from the record
    g0 = Geometry(SPACING, ORIGIN)
    final = fused.geometry(0)
    world = np.asarray(drawn[1]["world"])  # the only step that moves the anatomy
    ref = sitk.Resample(
        _sitk(img, g0),
        _sitk(np.zeros(fused.images.shape, np.float32), final),
        _sitk_affine(world),
        sitk.sitkLinear,
        -1000.0,
    )
    np.testing.assert_allclose(fused.images, sitk.GetArrayFromImage(ref), atol=2e-3)


def test_augmentation_is_the_same_whatever_threads_and_prefetch(tmp_path):
    paths, _ = make_dataset(tmp_path, n_scans=3, shape=(24, 48, 48), seed=5)
    ds = cf.Dataset.from_paths(paths)
    pipe = (
        cf.Pipeline()
        .load()
        .random_flip()
        .random_affine(degrees=10, scales=0.1)
        .central_crop((16, 32, 32))
    )
    runs = []
    for prefetch, n_workers in [(0, 1), (2, 2), (0, 2)]:
        batches = (ds >> pipe).gen_batch(
            batch_size=2, seed=11, prefetch=prefetch, n_workers=n_workers
        )
        runs.append([np.asarray(b.images).copy() for b in batches])
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_invert_undoes_random_affine_onto_the_loaded_grid(tmp_path):
    make_dataset(tmp_path, n_scans=1, shape=(32, 64, 64), seed=3, labels=True)
    ds = cf.Dataset.from_glob(str(tmp_path / "*.mhd"), masks=str(tmp_path / "labels/{id}.nii.gz"))
    loaded = (ds >> cf.Pipeline().load()).next_batch(1)
    pipe = (
        cf.Pipeline()
        .load()
        .unify_spacing(1.2)
        .random_affine(degrees=12, scales=0.1, translation_mm=4)
        .central_crop((16, 32, 32))
        .invert()
    )
    back = (ds >> pipe).next_batch(1, seed=2)
    assert back.geometry(0) == loaded.geometry(0)
    assert back.images.shape == loaded.images.shape
    scores = dice(back.masks, loaded.masks)
    covered = back.images > -1000  # what the crop kept
    assert covered.mean() > 0.2
    body = dice(back.masks[covered], loaded.masks[covered])
    assert min(body[k] for k in (1, 2, 3)) > 0.85, (scores, body)


def _sitk_bspline(coef, origin, step):
    """The recorded field as an ITK BSplineTransform (x, y, z order; x-coefficients first)."""
    coef = np.asarray(coef, np.float32)
    t = sitk.BSplineTransform(3, 3)
    size = [float(n) for n in coef.shape[1:][::-1]]
    t.SetFixedParameters([*size, *origin[::-1], *step[::-1], 1, 0, 0, 0, 1, 0, 0, 0, 1])
    params = np.concatenate([coef[2].ravel(), coef[1].ravel(), coef[0].ravel()])
    t.SetParameters(params.astype(np.float64).tolist())
    return t


@pytest.fixture(scope="module")
def elastic_volume():
    rng = np.random.default_rng(1)
    img = (ndimage.gaussian_filter(rng.normal(0, 300, (48, 112, 112)), 3) * 10).astype(np.float32)
    return img, (2.0, 0.8, 0.8)


def test_random_elastic_equals_simpleitk_bspline_with_the_drawn_field(elastic_volume):
    img, sp = elastic_volume
    b = cf.CTBatch.from_arrays([img], spacing=sp)
    b.set_random_state(5, 0)
    b = b.random_elastic(control_points=6, max_displacement_mm=6.0)
    params = b.history[0][-1]["params"]
    assert params["applied"] and np.asarray(params["coef"]).shape == (3, 6, 6, 6)
    # the frame is index * spacing: an image of origin 0 and identity direction in SimpleITK
    im = sitk.GetImageFromArray(img)
    im.SetSpacing(sp[::-1])
    field = _sitk_bspline(params["coef"], params["grid_origin"], params["grid_step"])
    ref = sitk.GetArrayFromImage(sitk.Resample(im, im, field, sitk.sitkLinear, -1000.0))
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(b.images[inner], ref[inner], atol=1e-3 * np.ptp(img))
    assert np.abs(b.images - img)[inner].mean() > 1.0  # it did move
    # no folding at the drawn field: the displacement is smooth and small
    assert np.abs(params["coef"]).max() <= 6.0


def test_random_elastic_refuses_settings_that_could_fold(elastic_volume):
    img, sp = elastic_volume
    small = cf.CTBatch.from_arrays([img[:8, :32, :32]], spacing=sp)
    with pytest.raises(cf.InvalidParameterError, match=r"fold|limit"):
        small.random_elastic(control_points=7, max_displacement_mm=7.5)


def test_random_elastic_moves_masks_and_nodules_with_the_anatomy(tmp_path):
    paths, csv = make_dataset(tmp_path, n_scans=1, shape=(64, 128, 128), seed=2)
    ds = cf.Dataset.from_paths(paths)
    pipe = (
        cf.Pipeline()
        .load()
        .fetch_nodules(cf.read_annotations(csv))
        .create_mask()
        .random_elastic(control_points=5, max_displacement_mm=8.0)
    )
    b = (ds >> pipe).next_batch(1, seed=4)
    plain = (ds >> cf.Pipeline(pipe.actions[:3])).next_batch(1)
    moved_mask = b.images[b.masks > 0].mean()
    before = plain.images[plain.masks > 0].mean()
    assert abs(moved_mask - before) < 60
    # the table moved too: masks drawn from it after the deformation hit the nodules
    redrawn = b.create_mask()
    assert dice(redrawn.masks, b.masks)[1] > 0.7
    with pytest.raises(cf.InvalidScanError, match="random_elastic"):
        b.invert()


def test_fused_elastic_chain_draws_like_the_unfused_chain(elastic_volume):
    img, sp = elastic_volume
    p = (
        cf.Pipeline()
        .unify_spacing(1.0)
        .random_elastic(control_points=6, max_displacement_mm=6.0)
        .central_crop((40, 64, 64))
    )
    assert [a.label for a in p.planned] == ["unify_spacing + random_elastic + central_crop"]
    make = lambda: cf.CTBatch.from_arrays([img], spacing=sp)  # noqa: E731
    fused = p.execute(make(), seed=3)
    plain = cf.Pipeline(p.actions, fuse=False).execute(make(), seed=3)
    assert [h["params"] for h in fused.history[0]] == [h["params"] for h in plain.history[0]]
    assert fused.geometry(0) == plain.geometry(0)
    inner = (slice(3, -3),) * 3
    assert np.abs(fused.images - plain.images)[inner].max() < 0.05 * np.ptp(img)
