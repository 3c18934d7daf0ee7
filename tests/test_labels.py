"""Label maps onto their scan's grid against SimpleITK's nearest-neighbour resample, and image +
label pairs through Dataset and load."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.geometry import Geometry, direction_from_sitk, direction_to_sitk
from ctflow.io.writer import write_scan
from ctflow.labels import labels_on_grid, to_labels


def _sitk(arr, g: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(g.spacing[::-1].tolist()))
    img.SetOrigin(tuple(g.origin[::-1].tolist()))
    img.SetDirection(direction_to_sitk(g.direction))
    return img


def _labels(shape, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    for value in (1, 2, 5, 200):
        c = rng.integers(2, np.array(shape) - 2)
        r = rng.integers(2, 6)
        z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
        lab[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) < r * r] = value
    return lab


def _rot(deg):
    a = np.deg2rad(deg)
    d = np.eye(3)
    d[1:, 1:] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return d


IMAGE = Geometry((2.0, 0.8, 0.75), (-40.0, -60.0, -50.0))


def _permuted(perm, flips, shape=(20, 40, 48)):
    """The image grid (``IMAGE`` x ``shape``) stored with its axes permuted and flipped: stored
    axis ``i`` runs along world axis ``perm[i]`` (z, y, x = 0, 1, 2), reversed where
    ``flips[i]`` is -1 (the direction is a signed permutation matrix). Returns the label file's
    geometry, its stored shape, and the stored array as the image grid holds it (by hand)."""
    direction = np.zeros((3, 3))
    for i, (p, f) in enumerate(zip(perm, flips, strict=True)):
        direction[p, i] = f
    first = [0, 0, 0]  # image voxel of the stored voxel (0, 0, 0)
    for p, f in zip(perm, flips, strict=True):
        first[p] = 0 if f > 0 else shape[p] - 1
    g = Geometry([IMAGE.spacing[p] for p in perm], IMAGE.voxel_to_world(first), direction)
    reversed_axes = tuple(p for p, f in zip(perm, flips, strict=True) if f < 0)

    def on_image_grid(lab):
        return np.flip(np.transpose(lab, np.argsort(perm)), reversed_axes)

    return g, tuple(shape[p] for p in perm), on_image_grid


GRIDS = {
    "flipped x and y (RAS storage)": (
        Geometry((2.0, 0.8, 0.75), IMAGE.voxel_to_world((0, 39, 47)), np.diag([1.0, -1, -1])),
        (20, 40, 48),
        lambda lab: lab[:, ::-1, ::-1],
    ),
    "axes stored (x, z, y)": _permuted((2, 0, 1), (1, 1, 1)),
    "axes stored (y, -x, z)": _permuted((1, 2, 0), (1, -1, 1)),
    "axes stored (-z, x, -y)": _permuted((0, 2, 1), (-1, 1, -1)),
    "coarser and shifted": (Geometry((3.0, 1.1, 1.0), (-38.0, -57.0, -51.5)), (14, 30, 37), None),
    "rotated": (Geometry((2.5, 0.9, 0.9), (-35.0, -62.0, -45.0), _rot(12.0)), (16, 36, 40), None),
}


@pytest.mark.parametrize("name", list(GRIDS))
def test_labels_on_grid_equal_simpleitk_nearest(name):
    g, shape, exact = GRIDS[name]
    lab = _labels(shape)
    ours = labels_on_grid(lab, g, IMAGE, (20, 40, 48))
    ref_grid = _sitk(np.zeros((20, 40, 48), np.uint8), IMAGE)
    ref = sitk.GetArrayFromImage(
        sitk.Resample(_sitk(lab, g), ref_grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    )
    assert ours.dtype == np.uint8 and set(np.unique(ours)) <= {0, 1, 2, 5, 200}
    if exact is not None:  # a pure flip or axis permutation: exact, and known by hand
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_array_equal(ours, exact(lab))
    else:
        assert np.mean(ours == ref) >= 0.999
        assert set(np.unique(ours)) == set(np.unique(ref))


def test_labels_are_kept_as_uint16_above_255_and_refused_when_not_integer():
    assert to_labels(np.array([0, 256, 1000])).dtype == np.uint16
    with pytest.raises(cf.InvalidScanError, match="integers"):
        to_labels(np.array([0.0, 0.5, 1.0]))
    with pytest.raises(cf.InvalidScanError, match=r"\[0, 65535\]"):
        to_labels(np.array([-1, 3]))
    far = Geometry((1, 1, 1), (1000.0, 1000.0, 1000.0))
    with pytest.raises(cf.InvalidScanError, match="does not overlap"):
        labels_on_grid(np.ones((4, 4, 4), np.uint8), far, IMAGE, (20, 40, 48))


def test_dataset_pairs_and_load_reads_labels_onto_the_image_grid(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(-1000, 400, (20, 40, 48)).astype(np.int16)
    lab_g, lab_shape, _ = GRIDS["flipped x and y (RAS storage)"]
    lab = _labels(lab_shape, seed=3)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "labels").mkdir()
    write_scan(tmp_path / "imgs" / "case1.nii.gz", img, IMAGE)
    write_scan(tmp_path / "labels" / "case1.nii.gz", lab, lab_g)
    ds = cf.Dataset.from_glob(
        str(tmp_path / "imgs" / "*.nii.gz"), masks=str(tmp_path / "labels" / "{id}.nii.gz")
    )
    batch = ds.create_batch(ds.ids).load()
    ref = sitk.GetArrayFromImage(
        sitk.Resample(
            sitk.ReadImage(str(tmp_path / "labels" / "case1.nii.gz")),
            sitk.ReadImage(str(tmp_path / "imgs" / "case1.nii.gz")),
            sitk.Transform(),
            sitk.sitkNearestNeighbor,
            0,
        )
    )
    np.testing.assert_array_equal(batch[0].masks, ref)
    assert set(np.unique(batch[0].masks)) == {0, 1, 2, 5, 200}
    same = cf.Dataset.from_paths(
        {
            "case1": {
                "images": tmp_path / "imgs/case1.nii.gz",
                "masks": tmp_path / "labels/case1.nii.gz",
            }
        }
    )
    again = same.create_batch(["case1"]).load()
    np.testing.assert_array_equal(again[0].masks, batch[0].masks)
    with pytest.raises(cf.InvalidParameterError, match="do not exist"):
        cf.Dataset.from_glob(str(tmp_path / "imgs" / "*.nii.gz"), masks="nowhere/{id}.nii.gz")
    sitk_dir = sitk.ReadImage(str(tmp_path / "imgs" / "case1.nii.gz")).GetDirection()
    np.testing.assert_allclose(batch.direction[0], direction_from_sitk(sitk_dir), atol=1e-6)


def test_synthetic_label_maps_load_onto_scans_of_any_stored_orientation(tmp_path):
    """make_dataset(labels=True): labels stored RAS beside LPS/RAS scans land on the scans'
    grids exactly (a pure flip), equal to SimpleITK's nearest resample, and describe the
    anatomy: lungs are air-like, the body is not."""
    from ctflow.synthetic import PHANTOM_LABELS, make_dataset

    paths, _ = make_dataset(
        tmp_path, n_scans=2, shape=(20, 48, 48), seed=4, orientations=["LPS", "RAS"], labels=True
    )
    ds = cf.Dataset.from_glob(str(tmp_path / "*.mhd"), masks=str(tmp_path / "labels/{id}.nii.gz"))
    batch = ds.create_batch(ds.ids).load()
    for i, item_id in enumerate(batch.ids):
        label_file = tmp_path / "labels" / f"{item_id}.nii.gz"
        image_file = next(p for p in paths if p.name.startswith(item_id))
        ref = sitk.GetArrayFromImage(
            sitk.Resample(
                sitk.ReadImage(str(label_file)), sitk.ReadImage(str(image_file)),
                sitk.Transform(), sitk.sitkNearestNeighbor, 0,
            )
        )  # fmt: skip
        masks, images = batch[i].masks, batch[i].images
        np.testing.assert_array_equal(masks, ref)
        assert set(np.unique(masks).tolist()) <= set(PHANTOM_LABELS)
        assert {1, 2, 3} <= set(np.unique(masks).tolist())
        assert np.median(images[masks == 2]) < -700 and np.median(images[masks == 3]) < -700
        assert np.median(images[masks == 1]) > -200
        assert np.all(images[masks == 0] < -900)  # outside the body: air


def test_a_dataset_where_only_some_items_have_label_files_is_refused_when_built(tmp_path):
    with pytest.raises(cf.InvalidParameterError, match=r"\['b'\] have no label file"):
        cf.Dataset.from_paths(
            {"a": {"images": tmp_path / "a.nii.gz", "masks": tmp_path / "la.nii.gz"},
             "b": {"images": tmp_path / "b.nii.gz"}}
        )  # fmt: skip
