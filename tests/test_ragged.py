"""Batches of scans of different shapes and stored orientations ("ragged" batches).

Every action of the design's action table runs on a batch of three scans of three different
(Z, Y, X), stored LPS and RAS, and gives for each item exactly what it gives on a batch of that
item alone. References: SimpleITK (loading, export), the one-item batch (every action), and
hand-computed crop geometry (sample_nodules).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.geometry import direction_from_sitk
from ctflow.ragged import Ragged
from ctflow.synthetic import make_dataset

SHAPES = [(20, 40, 48), (24, 48, 36), (16, 56, 56)]
ORIENTATIONS = ["LPS", "RAS", "RAS"]
FORMATS = ["mhd", "nifti", "mhd"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    dst = tmp_path_factory.mktemp("mixed")
    return make_dataset(
        dst, n_scans=3, shapes=SHAPES, orientations=ORIENTATIONS, fmt=FORMATS, seed=6
    )


@pytest.fixture(scope="module")
def loaded(mixed: tuple[list[Path], Path]) -> cf.CTBatch:
    paths, csv = mixed
    ds = cf.Dataset.from_paths(paths)
    batch = ds.create_batch(ds.ids).load().fetch_nodules(csv)
    batch.set_random_state(3, 5)
    return batch


def _fresh(batch: cf.CTBatch) -> cf.CTBatch:
    """A copy of the loaded batch (actions change their batch in place)."""
    out = batch.subset(range(len(batch)))
    out.set_random_state(3, 5)
    return out


def _single(batch: cf.CTBatch, k: int) -> cf.CTBatch:
    """Item ``k`` alone, at its position of the batch (so its random draws are its own)."""
    out = batch.subset([k])
    out.set_random_state(3, 5)
    out._positions = [k]
    return out


def test_three_shapes_two_orientations_load_voxel_identical_to_simpleitk(mixed, loaded):
    paths, _ = mixed
    assert len({tuple(s) for s in loaded.shapes.tolist()}) == 3
    assert len({tuple(np.sign(np.diag(d)).tolist()) for d in loaded.direction}) == 2
    data = loaded.ragged("images")
    assert data.buffer.size == sum(int(np.prod(s)) for s in SHAPES)  # one buffer for all
    for k, path in enumerate(paths):
        ref = sitk.ReadImage(str(path))
        item = loaded[k]
        assert np.shares_memory(item.images, data.buffer)
        np.testing.assert_array_equal(item.images, sitk.GetArrayFromImage(ref))
        np.testing.assert_allclose(item.spacing, ref.GetSpacing()[::-1], rtol=1e-6)
        np.testing.assert_allclose(item.origin, ref.GetOrigin()[::-1], atol=1e-4)
        np.testing.assert_allclose(
            item.direction, direction_from_sitk(ref.GetDirection()), atol=1e-6
        )
    with pytest.raises(cf.InvalidScanError, match="different in-plane sizes"):
        loaded.images  # noqa: B018
    with pytest.raises(cf.InvalidScanError, match="different shapes"):
        loaded.unstack()


def _with_masks(b: cf.CTBatch) -> cf.CTBatch:
    return b.create_mask()


def _patches_round_trip(b: cf.CTBatch) -> cf.CTBatch:
    b.get_patches((8, 16, 16), (6, 12, 12))
    return b.load_from_patches(dst="lungs")


ACTIONS: dict[str, Callable[[cf.CTBatch], cf.CTBatch]] = {
    "resize": lambda b: b.resize((18, 30, 36)),
    "unify_spacing": lambda b: b.unify_spacing((1.5, 1.1, 1.1)),  # each keeps its own FOV
    "unify_spacing_shape": lambda b: b.unify_spacing((1.5, 1.1, 1.1), shape=(None, 40, 40)),
    "rotate": lambda b: b.rotate(12.0),
    "rotate_random": lambda b: b.rotate(15.0, random=True),
    "rotate_zx": lambda b: b.rotate(8.0, axes=(0, 2)),
    "flip": lambda b: b.flip((0, 2)),
    "crop": lambda b: b.crop((2, 3, 4), (8, 16, 20)),
    "central_crop": lambda b: b.central_crop((10, 20, 24)),
    "pad": lambda b: b.pad((30, 60, 64)),
    "pad_edge": lambda b: b.pad((30, 60, 64), mode="edge"),
    "normalize_hu": lambda b: b.normalize_hu(),
    "normalize_hu_uint8": lambda b: b.normalize_hu(-1200, 600, dtype="uint8"),
    "apply_noise": lambda b: b.apply_noise(5.0),
    "cutout": lambda b: b.cutout((4, 6, 6), n_boxes=2),
    "segment": lambda b: b.segment(),
    "segment_blank": lambda b: b.segment(blank=True),
    "crop_to_lungs": lambda b: b.segment().crop_to_lungs(margin_mm=3.0),
    "crop_to_lungs_shape": lambda b: b.segment().crop_to_lungs(shape=(16, 32, 32)),
    "make_xip": lambda b: b.make_xip(depth=3, stride=2),
    "make_xip_coronal": lambda b: b.make_xip(depth=4, stride=3, projection="coronal"),
    "create_mask": _with_masks,
    "create_mask_cuboid": lambda b: b.create_mask(mode="cuboid"),
    "binarize_mask": lambda b: b.create_mask().normalize_hu().binarize_mask(0.5),
    "fetch_nodules_from_mask": lambda b: b.create_mask().fetch_nodules_from_mask(),
    "patches": _patches_round_trip,
    "predict_on_scan": lambda b: b.predict_on_scan(lambda x: x * 0.5, (8, 16, 16), (6, 12, 12)),
    "reorient": lambda b: b.reorient("RAS"),
    "reorient_oblique_code": lambda b: b.segment().reorient("SLA"),
    "chain": lambda b: b.unify_spacing((1.2, 1.0, 1.0)).create_mask().flip(1).rotate(5.0),
}


def _assert_items_equal(got: cf.CTBatch, want: cf.CTBatch, k: int) -> None:
    a, b = got[k], want[0]
    for comp in ("images", "masks", "lungs"):
        x, y = getattr(a, comp), getattr(b, comp)
        assert (x is None) == (y is None), comp
        if x is not None:
            assert x.dtype == y.dtype, comp
            np.testing.assert_array_equal(x, y, err_msg=comp)
    np.testing.assert_array_equal(a.spacing, b.spacing)
    np.testing.assert_array_equal(a.origin, b.origin)
    np.testing.assert_array_equal(a.direction, b.direction)
    cols = ["z", "y", "x", "diameter"]
    pd.testing.assert_frame_equal(
        a.nodules[cols].reset_index(drop=True), b.nodules[cols].reset_index(drop=True)
    )
    assert got.warnings[k] == want.warnings[0]


@pytest.mark.parametrize("name", list(ACTIONS))
def test_every_action_gives_per_item_what_it_gives_on_one_item(loaded, name):
    action = ACTIONS[name]
    ragged = action(_fresh(loaded))
    assert ragged.ids == loaded.ids
    for k in range(len(loaded)):
        _assert_items_equal(ragged, action(_single(loaded, k)), k)


def test_unify_spacing_without_shape_keeps_each_field_of_view(loaded):
    b = _fresh(loaded).unify_spacing((1.0, 1.0, 1.0))
    for k in range(len(loaded)):
        fov_before = loaded.shapes[k] * loaded.spacing[k]
        fov_after = b.shapes[k] * b.spacing[k]
        assert np.all(np.abs(fov_after - fov_before) <= 1.0 + 1e-9)  # within one new voxel
        np.testing.assert_allclose(b.spacing[k], 1.0)


def test_sample_nodules_crops_items_of_different_sizes_in_one_batch(loaded):
    batch = _fresh(loaded).create_mask()
    crops = batch.sample_nodules(24, (8, 16, 16), share=0.5)
    assert crops.uniform and crops.images.shape == (24 * 8, 16, 16)
    parents = {info["parent"] for info in crops.info}
    assert parents == set(loaded.ids)  # every item, whatever its shape, gave crops
    for k, info in enumerate(crops.info):
        parent = batch[info["parent"]]
        start = np.array(info["start"])
        inside = np.all(start >= 0) and np.all(start + np.array((8, 16, 16)) <= parent.shape)
        if inside:
            box = tuple(slice(s, s + n) for s, n in zip(start, (8, 16, 16), strict=True))
            np.testing.assert_array_equal(crops[k].images, parent.images[box])
            np.testing.assert_array_equal(crops[k].masks, parent.masks[box])
        np.testing.assert_allclose(
            crops[k].origin, parent.geometry.voxel_to_world(start), atol=1e-9
        )
        np.testing.assert_array_equal(crops[k].direction, parent.direction)
    nodule_crops = [k for k, info in enumerate(crops.info) if info["kind"] == "nodule"]
    assert nodule_crops and all(crops[k].masks.any() for k in nodule_crops)


def test_dump_and_load_back_a_ragged_batch(loaded, tmp_path):
    batch = _fresh(loaded).create_mask()
    batch.dump(tmp_path / "out")
    back = cf.Dataset.from_glob(str(tmp_path / "out" / "*"), dirs=True)
    again = back.create_batch(batch.ids).load()
    for k in range(len(batch)):
        np.testing.assert_array_equal(again[k].images, batch[k].images)
        np.testing.assert_array_equal(again[k].masks, batch[k].masks)
        np.testing.assert_array_equal(again.direction[k], batch.direction[k])
        np.testing.assert_array_equal(again.origin[k], batch.origin[k])
    pd.testing.assert_frame_equal(again.nodules, batch.nodules)


def test_export_and_show_each_item_of_a_ragged_batch(loaded, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for k in range(len(loaded)):
        path = loaded.export(k, tmp_path / "new" / "folder" / f"{k}.nii.gz")  # folders made
        ref = sitk.ReadImage(str(path))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), loaded[k].images)
        np.testing.assert_allclose(ref.GetOrigin()[::-1], loaded[k].origin, atol=1e-4)
        fig = loaded.show(k)
        single = _single(loaded, k).show(0)
        for ax_a, ax_b in zip(fig.axes, single.axes, strict=True):
            for im_a, im_b in zip(ax_a.images, ax_b.images, strict=True):
                np.testing.assert_array_equal(im_a.get_array(), im_b.get_array())
        plt.close(fig)
        plt.close(single)


def test_monai_and_torchio_items_of_a_ragged_batch(loaded):
    from ctflow.interop.monai import to_monai
    from ctflow.interop.torchio import to_torchio

    for k in range(len(loaded)):
        d = to_monai(loaded[k])
        single = to_monai(_single(loaded, k)[0])
        np.testing.assert_array_equal(np.asarray(d["image"]), np.asarray(single["image"]))
        np.testing.assert_array_equal(d["affine"], single["affine"])
        subject = to_torchio(loaded[k])
        assert tuple(subject["image"].shape[1:]) == tuple(loaded.shapes[k][::-1])


def test_ragged_storage_views_and_errors():
    a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    b = np.arange(5 * 2 * 2, dtype=np.int16).reshape(5, 2, 2)
    r = Ragged.from_items([a, b])
    assert r.buffer.flags.c_contiguous and r.buffer.size == 44
    np.testing.assert_array_equal(r.item(0), a)
    np.testing.assert_array_equal(r.item(1), b)
    assert not r.uniform_yx
    with pytest.raises(cf.InvalidScanError, match=r"#0 \(2, 3, 4\), #1 \(5, 2, 2\)"):
        r.stacked()
    mixed = Ragged.from_items([a, b.astype(np.float32)])
    assert mixed.dtype == np.float32  # never float64 unless asked
    same = Ragged.from_items([a, a + 1])
    assert same.stacked().shape == (4, 3, 4) and same.unstack().shape == (2, 2, 3, 4)
    assert np.shares_memory(same.stacked(), same.item(1))
    with pytest.raises(cf.InvalidScanError, match="cannot hold"):
        Ragged(np.zeros(5), [(1, 2, 2)])


def test_setting_a_component_follows_the_items_shapes(loaded):
    batch = _fresh(loaded)
    masks = [np.ones(s, np.uint8) for s in SHAPES]
    batch.set_component("masks", masks)
    assert [int(batch[k].masks.sum()) for k in range(3)] == [int(np.prod(s)) for s in SHAPES]
    with pytest.raises(cf.InvalidScanError, match=r"masks of item .* has shape \(20, 40, 47\)"):
        batch.set_component("masks", [np.ones((20, 40, 47), np.uint8), *masks[1:]])
    with pytest.raises(cf.InvalidScanError, match=r"stacked images|different in-plane"):
        batch.lungs = np.zeros((60, 40, 48), np.uint8)


def _mixed_with_a_broken_file(mixed, tmp_path: Path) -> cf.Dataset:
    paths, _ = mixed
    broken = tmp_path / "broken.mhd"
    broken.write_text(paths[0].read_text().replace(paths[0].stem + ".raw", "broken.raw"))
    (tmp_path / "broken.raw").write_bytes(b"\x00" * 100)  # far shorter than the header says
    return cf.Dataset.from_paths({"a": paths[1], "broken": broken, "c": paths[2]})


def test_one_broken_file_fails_alone_under_skip(mixed, tmp_path):
    ds = _mixed_with_a_broken_file(mixed, tmp_path)
    pipe = ds >> cf.Pipeline().load().unify_spacing((1.5, 1.5, 1.5)).normalize_hu().dump(
        tmp_path / "out"
    )
    report = pipe.run(batch_size=3, on_error="skip")
    assert [i for i, _ in report.failed] == ["broken"]
    assert "load: CorruptFileError" in report.failed[0][1] and "broken.raw" in report.failed[0][1]
    assert sorted(report.done) == ["a", "c"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c"]


def test_an_item_failing_a_batch_level_action_fails_alone(mixed, tmp_path):
    """normalize_hu works on the whole buffer at once: a failure there is retried per item."""

    class Picky(cf.CTBatch):
        @cf.action
        def refuse_tall(self, max_z: int) -> cf.CTBatch:
            tall = [i for i, s in zip(self.ids, self.shapes.tolist()) if s[0] > max_z]
            if tall:
                raise cf.InvalidScanError(f"too tall: {tall}")
            return self

    paths, _ = mixed
    ds = cf.Dataset.from_paths(paths, batch_class=Picky)
    pipe = ds >> cf.Pipeline().load().refuse_tall(22).normalize_hu()
    batches = list(pipe.gen_batch(batch_size=3, on_error="skip"))
    assert len(batches) == 1
    batch = batches[0]
    tall_id = ds.ids[1]  # (24, 48, 36): the only item taller than 22 slices
    assert batch.ids == [i for i in ds.ids if i != tall_id]
    assert [f.id for f in batch.failed] == [tall_id]
    for k, item_id in enumerate(batch.ids):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(paths[ds.ids.index(item_id)])))
        want = (np.clip(ref.astype(np.float32), -1000, 400) + 1000) / 1400
        np.testing.assert_allclose(batch[k].images, want, rtol=1e-6)
    with pytest.raises(cf.InvalidScanError, match="too tall") as info:
        list(pipe.gen_batch(batch_size=3, on_error="raise"))
    assert "refuse_tall" in "\n".join(info.value.__notes__)


def test_under_raise_the_original_error_names_item_and_action(mixed, tmp_path):
    ds = _mixed_with_a_broken_file(mixed, tmp_path)
    with pytest.raises(cf.CorruptFileError, match=r"broken\.raw") as info:
        (ds >> cf.Pipeline().load()).run(batch_size=3)
    notes = "\n".join(info.value.__notes__)
    assert "in action 'load' on item 'broken'" in notes


REAL_FILES = [
    "invesalius_cranium/cranium.mhd",
    "pyradiomics_lung/lung1_image.nrrd",
    "totalsegmentator_examples/example_ct_sm.nii.gz",
]


@pytest.mark.parametrize("code", ["LPS", "RAS", "SLA", "IPR"])
def test_real_scans_of_three_shapes_reorient_in_one_batch_like_dicomorient(real_data, code):
    paths = [real_data / p for p in REAL_FILES]
    ds = cf.Dataset.from_paths(paths)
    batch = ds.create_batch(ds.ids).load()
    assert len({tuple(s) for s in batch.shapes.tolist()}) == 3
    batch.lungs = None
    batch.set_component("masks", [(it.images > 0).astype(np.uint8) for it in batch])
    batch.reorient(code)
    for k, path in enumerate(paths):
        ref = sitk.DICOMOrient(sitk.ReadImage(str(path)), code)
        np.testing.assert_array_equal(batch[k].images, sitk.GetArrayFromImage(ref))
        np.testing.assert_array_equal(batch[k].masks, sitk.GetArrayFromImage(ref) > 0)
        np.testing.assert_allclose(batch.spacing[k], ref.GetSpacing()[::-1], rtol=1e-6)
        np.testing.assert_allclose(batch.origin[k], ref.GetOrigin()[::-1], atol=1e-4)
        np.testing.assert_allclose(
            batch.direction[k], direction_from_sitk(ref.GetDirection()), atol=1e-6
        )
