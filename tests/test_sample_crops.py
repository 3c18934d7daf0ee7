"""Crops by class: every crop is centred on a voxel of its label (a real lobe label map), shares
per label, uniform crops without ratios, replay from the record."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.ops.crop import LabelVoxels

LOBES = [
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
]


@pytest.fixture(scope="module")
def lobes(real_data, tmp_path_factory):
    """The TotalSegmentator example CT and its five lobe masks as one label map (1..5)."""
    folder = real_data / "totalsegmentator_examples"
    ref = sitk.ReadImage(str(folder / "example_seg_fast" / f"{LOBES[0]}.nii.gz"))
    labels = np.zeros(sitk.GetArrayFromImage(ref).shape, np.uint8)
    for value, name in enumerate(LOBES, start=1):
        mask = sitk.GetArrayFromImage(
            sitk.ReadImage(str(folder / "example_seg_fast" / f"{name}.nii.gz"))
        )
        labels[mask > 0] = value
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(ref)
    path = tmp_path_factory.mktemp("lobes") / "lobes.nii.gz"
    sitk.WriteImage(out, str(path))
    ds = cf.Dataset.from_paths({"ct": {"images": folder / "example_ct_sm.nii.gz", "masks": path}})
    return ds, labels


def test_every_crop_is_centred_on_its_label_of_a_real_lobe_map(lobes):
    ds, labels = lobes
    batch = ds.create_batch(ds.ids).load()
    np.testing.assert_array_equal(batch[0].masks, labels)  # the label map on its own grid
    batch.set_random_state(4, 0)
    present = sorted(int(v) for v in np.unique(labels))
    assert present == [0, 1, 2, 5]  # the example's field of view holds three of the lobes
    ratios = {0: 1.0, 1: 2.0, 2: 1.0, 5: 1.0}
    crops = batch.sample_crops(25, (8, 16, 16), ratios=ratios)
    assert len(crops) == 25 and crops.uniform
    kinds = Counter(info["kind"] for info in crops.info)
    assert kinds == {"label 0": 5, "label 1": 10, "label 2": 5, "label 5": 5}  # the shares
    for k, info in enumerate(crops.info):
        label = int(info["kind"].split()[1])
        assert crops[k].masks[4, 8, 8] == label  # the centre voxel has the crop's label
        centre = np.add(info["start"], (4, 8, 8))
        assert labels[tuple(centre)] == label
        np.testing.assert_allclose(
            crops[k].voxel_to_world((4, 8, 8)), batch[0].voxel_to_world(centre), atol=1e-9
        )
    assert all(h[-1]["action"] == "sample_crops" for h in crops.history)


def test_label_voxels_are_drawn_uniformly_without_a_coordinate_list():
    rng = np.random.default_rng(0)
    labels = np.zeros((6, 8, 8), np.uint8)
    cells = [(1, 2, 3), (4, 0, 7), (5, 7, 0)]
    for cell in cells:
        labels[cell] = 9
    vox = LabelVoxels(labels)
    assert vox.count(9) == 3 and vox.present() == [0, 9]
    drawn = Counter(tuple(vox.draw(9, rng).tolist()) for _ in range(3000))
    assert set(drawn) == set(cells)
    assert all(800 < c < 1200 for c in drawn.values())  # uniform over the 3 voxels


def test_uniform_crops_lie_inside_and_absent_labels_are_warned():
    b = cf.CTBatch.from_arrays([np.zeros((10, 30, 30), np.int16), np.zeros((12, 20, 40), np.int16)])
    b.set_random_state(1, 0)
    crops = b.sample_crops(20, (6, 10, 10))
    for info in crops.info:
        start = np.asarray(info["start"])
        parent = b[info["parent"]]
        assert np.all(start >= 0) and np.all(np.add(start, (6, 10, 10)) <= parent.shape)
    masks = [np.zeros((10, 30, 30), np.uint8), np.zeros((12, 20, 40), np.uint8)]
    masks[1][5, 10, 20] = 2
    b.set_component("masks", masks)
    crops = b.sample_crops(4, (6, 10, 10), ratios={2: 1.0, 7: 1.0})
    assert all(info["kind"] == "label 2" for info in crops.info)
    assert any("label(s) [7] are in no item" in w for w in b.warnings[0])
    with pytest.raises(cf.InvalidScanError, match="none of the labels"):
        b.sample_crops(2, (6, 10, 10), ratios={7: 1.0})
    with pytest.raises(cf.InvalidParameterError, match="ratios"):
        cf.Pipeline().sample_crops(2, (6, 10, 10), ratios={1: -1.0})


def test_label_crops_replay_from_their_record(lobes):
    ds, _ = lobes
    batch = ds.create_batch(ds.ids).load()
    batch.set_random_state(9, 0)
    crops = batch.sample_crops(3, (8, 16, 16), ratios={5: 1.0})
    for k in range(3):
        again = cf.replay(crops.history[k])
        np.testing.assert_array_equal(again[0].images, crops[k].images)
        np.testing.assert_array_equal(again[0].masks, crops[k].masks)


@pytest.mark.parametrize("dtype", [bool, np.int32, np.float32])
def test_masks_of_other_integer_dtypes_give_the_crops_of_the_uint8_map(dtype):
    images = [np.arange(12 * 16 * 16, dtype=np.int16).reshape(12, 16, 16), np.zeros((10, 14, 18))]
    masks = [np.zeros((12, 16, 16), np.uint8), np.zeros((10, 14, 18), np.uint8)]
    masks[0][2:5, 3:9, 4:6] = 1
    masks[1][6:9, 1:4, 10:17] = 1
    if dtype is not bool:
        masks[0][7:10, 10:14, 2:5] = 3
        masks[1][0:2, 8:12, 0:3] = 3
    ratios = {0: 1.0, 1: 2.0} if dtype is bool else {0: 1.0, 1: 2.0, 3: 1.0}

    def crops_of(maps):
        b = cf.CTBatch.from_arrays([im.astype(np.int16) for im in images])
        b.set_component("masks", maps)
        b.set_random_state(3, 0)
        return b.sample_crops(12, (4, 6, 6), ratios=ratios)

    want = crops_of(masks)
    got = crops_of([m.astype(dtype) for m in masks])
    assert got.info == want.info  # the same parents, starts and labels
    for k in range(len(want)):
        np.testing.assert_array_equal(got[k].images, want[k].images)
        np.testing.assert_array_equal(got[k].masks.astype(np.uint8), want[k].masks)


def test_probability_and_channel_masks_are_refused_naming_sample_crops():
    b = cf.CTBatch.from_arrays([np.zeros((8, 10, 10), np.int16)], ids=["p"])
    prob = np.zeros((8, 10, 10), np.float32)
    prob[2:5, 2:5, 2:5] = 0.7
    b.set_component("masks", [prob])
    with pytest.raises(cf.InvalidScanError, match=r"sample_crops: the masks of item 'p'.*fraction"):
        b.sample_crops(2, (4, 4, 4), ratios={1: 1.0})
    b.set_component("masks", [np.stack([prob < 0.5, prob >= 0.5]).astype(np.float32)])
    with pytest.raises(cf.InvalidParameterError, match=r"sample_crops.*'p'.*argmax\(\)"):
        b.sample_crops(2, (4, 4, 4), ratios={1: 1.0})
