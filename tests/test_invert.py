"""invert(): after reorient -> unify_spacing -> crop -> pad -> rotate, one resampling pass puts
images and labels back on the loaded grid: geometry exactly the loaded scan's, per-label Dice
within 0.03 of a SimpleITK nearest round trip through the same final grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.geometry import Geometry, direction_from_sitk, direction_to_sitk
from ctflow.io.writer import write_scan
from ctflow.metrics import dice
from ctflow.synthetic import make_phantom


def _sitk(arr, g: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(g.spacing[::-1].tolist()))
    img.SetOrigin(tuple(g.origin[::-1].tolist()))
    img.SetDirection(direction_to_sitk(g.direction))
    return img


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A phantom stored RAS (x and y reversed) with a label map {0, 1, 2, 5}."""
    scan, _ = make_phantom((40, 72, 64), (2.5, 0.8, 0.85), n_nodules=3, seed=12)
    img = scan.images
    labels = np.zeros(img.shape, np.uint8)
    labels[img > -500] = 1  # body
    labels[(img > -980) & (img <= -500)] = 2  # lung parenchyma and partial volume
    labels[img > 150] = 5  # bone and vessels' bright parts
    g = scan.geometry
    ras = Geometry(
        g.spacing, g.voxel_to_world((0, img.shape[1] - 1, img.shape[2] - 1)),
        g.direction @ np.diag([1.0, -1.0, -1.0]),
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("pair")
    write_scan(folder / "img.nii.gz", img[:, ::-1, ::-1], ras)
    write_scan(folder / "lab.nii.gz", labels[:, ::-1, ::-1], ras)
    return folder


def test_invert_restores_the_loaded_grid_and_labels(pair):
    ds = cf.Dataset.from_paths({"p": {"images": pair / "img.nii.gz", "masks": pair / "lab.nii.gz"}})
    batch = ds.create_batch(["p"]).load()
    loaded = batch.subset([0])
    grids = []  # the grid after each step, for the SimpleITK round trip through the same grids
    for step in (
        lambda b: b.reorient("LPS"),
        lambda b: b.unify_spacing((1.3, 1.1, 1.1), order=1),
        lambda b: b.crop((5, 4, 3), (60, 44, 40)),
        lambda b: b.pad((66, 50, 46)),
        lambda b: b.rotate(12.0),
    ):
        step(batch)
        grids.append((batch.geometry(0), tuple(int(v) for v in batch.shapes[0])))
    batch.invert(dtype=np.int16)
    ref = sitk.ReadImage(str(pair / "img.nii.gz"))
    assert batch.shapes[0].tolist() == list(ref.GetSize()[::-1])
    np.testing.assert_array_equal(batch.spacing[0], loaded.spacing[0])
    np.testing.assert_array_equal(batch.origin[0], loaded.origin[0])
    np.testing.assert_array_equal(batch.direction[0], loaded.direction[0])
    np.testing.assert_allclose(
        batch.direction[0], direction_from_sitk(ref.GetDirection()), atol=1e-6
    )
    # SimpleITK: the original labels through the same grids, step by step, and back to the
    # loaded grid, nearest every time (what the crop dropped is lost there too)
    original = loaded[0].masks
    g_src = loaded.geometry(0)
    current = _sitk(original, g_src)
    for geometry, shape in grids:
        grid = _sitk(np.zeros(shape, np.uint8), geometry)
        current = sitk.Resample(current, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    back = sitk.GetArrayFromImage(
        sitk.Resample(
            current, _sitk(original, g_src), sitk.Transform(), sitk.sitkNearestNeighbor, 0
        )
    )
    ours = dice(batch[0].masks, original)
    theirs = dice(back, original)
    assert set(ours) == {1, 2, 5}
    for label in ours:
        assert abs(ours[label] - theirs[label]) <= 0.03, (label, ours[label], theirs[label])
        assert ours[label] > 0.6
    # the image comes back too (interpolated twice: unify_spacing and invert; rotate once)
    inside = back > 0
    diff = np.abs(batch[0].images.astype(float) - loaded[0].images.astype(float))[inside]
    assert np.median(diff) < 60


def test_invert_is_the_identity_on_a_freshly_loaded_scan_and_exact_after_flips(pair):
    ds = cf.Dataset.from_paths({"p": {"images": pair / "img.nii.gz", "masks": pair / "lab.nii.gz"}})
    fresh = ds.create_batch(["p"]).load()
    batch = ds.create_batch(["p"]).load().invert()
    np.testing.assert_array_equal(batch[0].images, fresh[0].images)
    flipped = (
        ds.create_batch(["p"]).load().reorient("LPS").flip((0, 2)).crop((0, 0, 0), (40, 72, 60))
    )
    flipped.invert(dtype=np.int16)
    # reorient reversed the stored x and flip reversed it back: the crop kept stored x 0..59
    np.testing.assert_array_equal(flipped[0].images[:, :, :60], fresh[0].images[:, :, :60])
    np.testing.assert_array_equal(flipped[0].masks[:, :, :60], fresh[0].masks[:, :, :60])
    assert np.all(flipped[0].masks[:, :, 60:] == 0)  # what the crop dropped is empty
    assert np.all(flipped[0].images[:, :, 60:] == -1000)


def test_invert_refuses_items_without_a_loaded_grid():
    b = cf.CTBatch.from_arrays([np.zeros((4, 4, 4), np.int16)])
    with pytest.raises(cf.InvalidScanError, match="no loaded grid"):
        b.invert()


def test_exported_inverted_labels_overlay_the_original_file(pair, tmp_path):
    """export after invert: a viewer (SimpleITK here) puts the labels on the original scan."""
    ds = cf.Dataset.from_paths({"p": {"images": pair / "img.nii.gz", "masks": pair / "lab.nii.gz"}})
    batch = ds.create_batch(["p"]).load().reorient("LPS").unify_spacing((2.0, 1.0, 1.0)).invert()
    out = batch.export(0, tmp_path / "pred.nii.gz", component="masks")
    pred, original = sitk.ReadImage(str(out)), sitk.ReadImage(str(pair / "img.nii.gz"))
    assert pred.GetSize() == original.GetSize()
    np.testing.assert_allclose(pred.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(pred.GetSpacing(), original.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(pred.GetDirection(), original.GetDirection(), atol=1e-6)
    values = sitk.GetArrayFromImage(pred)
    assert values.dtype == np.uint8
    assert set(np.unique(values).tolist()) == {0, 1, 2, 5}
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(pair / "lab.nii.gz")))
    assert dice(values, stored)[2] > 0.8
    hot = ds.create_batch(["p"]).load().one_hot(values=(0, 1, 2, 5))
    with pytest.raises(cf.InvalidParameterError, match=r"channel=0\.\.3"):
        hot.export(0, tmp_path / "x.nii.gz", component="masks")
    hot.export(0, tmp_path / "c2.nii.gz", component="masks", channel=2)
    c2 = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "c2.nii.gz")))
    np.testing.assert_array_equal(c2, (stored == 2).astype(np.uint8))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small synthetic scan stored RAS with its label map (0..4) beside it."""
    from ctflow.synthetic import make_dataset

    folder = tmp_path_factory.mktemp("phantom")
    make_dataset(
        folder, n_scans=1, shape=(24, 48, 48), seed=4, fmt="nifti", orientations=["RAS"],
        labels=True,
    )  # fmt: skip
    return cf.Dataset.from_glob(str(folder / "*.nii.gz"), masks=str(folder / "labels/{id}.nii.gz"))


def _lungs_from_labels(b):
    return b.set_component("lungs", [np.isin(b[0].masks, (2, 3)).astype(np.uint8)])


STEPS = {
    "resize": lambda b: b.resize((20, 40, 56)),
    "central_crop": lambda b: b.central_crop((20, 40, 40)),
    "crop_to_lungs": lambda b: _lungs_from_labels(b).crop_to_lungs(margin_mm=2.0),
    "random_flip": lambda b: b.random_flip(p=1.0),
    "random_affine": lambda b: b.random_affine(degrees=10.0, translation_mm=3.0),
    "unify_spacing onehot": lambda b: b.unify_spacing(
        (1.7, 1.1, 0.9), labels_interpolation="onehot"
    ),
    "sample_crops": lambda b: b.sample_crops(2, (8, 16, 16), ratios={2: 1.0}),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_invert_after_each_action_restores_the_loaded_grid_exactly(phantom, step):
    loaded = phantom.create_batch(phantom.ids).load()
    batch = phantom.create_batch(phantom.ids).load()
    batch.set_random_state(5, 0)
    moved = STEPS[step](batch)
    assert moved[0].masks.shape != loaded[0].masks.shape or step.startswith("random")
    if step.startswith("random"):  # the shape stays; the labels move
        assert not np.array_equal(moved[0].masks, loaded[0].masks)
    cuts = [dict(info) for info in moved.info] if step == "sample_crops" else []
    moved.invert()
    g0, kept = loaded.geometry(0), set(np.unique(loaded[0].masks).tolist())
    assert kept == {0, 1, 2, 3, 4}
    for i in range(len(moved)):
        assert moved.shapes[i].tolist() == loaded.shapes[0].tolist()
        np.testing.assert_array_equal(moved.spacing[i], g0.spacing)
        np.testing.assert_array_equal(moved.origin[i], g0.origin)
        np.testing.assert_array_equal(moved.direction[i], g0.direction)
        masks = moved[i].masks
        assert masks.dtype == np.uint8 and set(np.unique(masks).tolist()) <= kept
        if step == "sample_crops":  # a crop comes back where it was cut: exactly, 0 around it
            lo = np.maximum(cuts[i]["start"], 0)
            hi = np.minimum(np.add(cuts[i]["start"], (8, 16, 16)), loaded.shapes[0])
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            np.testing.assert_array_equal(masks[box], loaded[0].masks[box])
            assert masks[tuple(np.add(cuts[i]["start"], (4, 8, 8)))] == 2  # its centre's label
            assert masks.sum() == masks[box].sum()
        else:
            assert dice(masks, loaded[0].masks, labels=[2])[2] > 0.8
