"""Interop with PyTorch, MONAI and TorchIO, checked against what those libraries load themselves.

The references are MONAI's own ``LoadImaged`` (nibabel reader) and ``torchio.ScalarImage`` on
files written by SimpleITK: ctflow's converted item must hold the same voxels with the same
RAS affine, and converting their output back must give SimpleITK's LPS geometry.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import torchio as tio
from monai import transforms as monai_transforms

import ctflow as cf
from ctflow.interop import geometry_from_ras_affine, ras_affine
from ctflow.interop.monai import from_monai, to_monai
from ctflow.interop.torchio import from_torchio, to_torchio

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

SPACING = (2.5, 0.7, 0.8)  # z, y, x


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])  # (z, y, x): oblique in-plane


DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS-stored": np.diag([1.0, -1.0, -1.0]),
    "oblique": _rotation(0.4),
}


def _write(tmp_path: Path, direction: np.ndarray, name: str = "scan.nii.gz") -> Path:
    """A 7x9x11 (z, y, x) int16 volume with distinct voxels, written by SimpleITK."""
    arr = (np.arange(7 * 9 * 11).reshape(7, 9, 11) - 300).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING[::-1])
    img.SetOrigin((-120.5, 33.25, -400.0))
    img.SetDirection(cf.geometry.direction_to_sitk(direction))
    path = tmp_path / name
    sitk.WriteImage(img, str(path))
    return path


def _item(path: Path, label: np.ndarray | None = None) -> cf.CTItem:
    scan = cf.read_scan(path)
    batch = cf.CTBatch.from_arrays(
        [scan.images],
        ids=["s"],
        spacing=scan.geometry.spacing,
        origin=scan.geometry.origin,
        direction=scan.geometry.direction,
        masks=None if label is None else [label],
    )
    return batch[0]


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_to_monai_equals_monai_loader(tmp_path, direction):
    path = _write(tmp_path, direction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's notes about optional GPU decoders
        loader = monai_transforms.LoadImaged(
            keys=["image"], reader="NibabelReader", ensure_channel_first=True, dtype=None
        )
        ref = loader({"image": str(path)})["image"]
    ours = to_monai(_item(path))
    assert ours["image"].shape == tuple(ref.shape) and ours["image"].dtype == np.int16
    np.testing.assert_array_equal(ours["image"], ref.numpy())
    np.testing.assert_allclose(ours["affine"], ref.affine.numpy(), atol=1e-4)
    # and as MetaTensors, MONAI's own type
    meta = to_monai(_item(path), meta_tensor=True)["image"]
    assert type(meta).__name__ == "MetaTensor"
    np.testing.assert_allclose(meta.affine.numpy(), ref.affine.numpy(), atol=1e-4)
    # back: MONAI's dict (MetaTensor with affine) -> SimpleITK's geometry and voxels
    batch = from_monai({"image": ref})
    img = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(batch.images, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(batch.spacing[0], img.GetSpacing()[::-1], rtol=1e-5)
    np.testing.assert_allclose(batch.origin[0], img.GetOrigin()[::-1], atol=1e-3)
    np.testing.assert_allclose(
        batch.direction[0], cf.geometry.direction_from_sitk(img.GetDirection()), atol=1e-5
    )


def test_ras_affine_maps_voxels_where_simpleitk_does():
    g = cf.Geometry(SPACING, (-100.0, 20.0, 30.0), _rotation(-0.7))
    img = sitk.Image(11, 9, 7, sitk.sitkInt16)
    img.SetSpacing(SPACING[::-1])
    img.SetOrigin(g.origin[::-1].tolist())
    img.SetDirection(cf.geometry.direction_to_sitk(g.direction))
    a = ras_affine(g)
    for ijk in [(0, 0, 0), (10, 8, 6), (3, 7, 2)]:  # (x, y, z) indices
        lps = np.array(img.TransformIndexToPhysicalPoint(ijk))
        ras = a @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
    back = geometry_from_ras_affine(a)
    np.testing.assert_allclose(back.spacing, g.spacing)
    np.testing.assert_allclose(back.origin, g.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, g.direction, atol=1e-12)
    with pytest.raises(cf.InvalidScanError, match="not orthogonal"):
        geometry_from_ras_affine([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def test_monai_round_trip_keeps_masks_lungs_and_dtype(tmp_path):
    nodules = pd.DataFrame({"id": ["a"], "z": [4.0], "y": [5.0], "x": [6.0], "diameter": [5.0]})
    vol = np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32)
    batch = cf.CTBatch.from_arrays(
        [vol], ids=["a"], spacing=SPACING, origin=(1.0, 2.0, 3.0), nodules=nodules
    ).create_mask()
    batch.lungs = (batch.images > 0).astype(np.uint8)
    d = to_monai(batch[0])
    assert set(d) >= {"image", "label", "lungs", "affine", "id"}
    assert d["image"].dtype == np.float32 and d["label"].dtype == np.uint8
    back = from_monai(d)
    np.testing.assert_array_equal(back.images, vol)
    np.testing.assert_array_equal(back.masks, batch.masks)
    np.testing.assert_array_equal(back.lungs, batch.lungs)
    assert back.ids == ["a"] and back.geometry(0) == batch.geometry(0)
    with pytest.raises(cf.InvalidParameterError, match="no affine"):
        from_monai({"image": d["image"]})
    with pytest.raises(cf.InvalidParameterError, match=r"\(1, X, Y, Z\)"):
        from_monai({"image": vol, "affine": np.eye(4)})


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_to_torchio_equals_torchio_loader(tmp_path, direction):
    path = _write(tmp_path, direction)
    ref = tio.ScalarImage(path)
    label = (cf.read_scan(path).images > 0).astype(np.uint8)
    subject = to_torchio(_item(path, label))
    ours = subject["image"]
    assert ours.data.dtype == ref.data.dtype == torch.int16
    np.testing.assert_array_equal(ours.data.numpy(), ref.data.numpy())
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-4)
    assert isinstance(subject["label"], tio.LabelMap) and subject["id"] == "s"
    # TorchIO's transforms work in the right world frame: resample to 2 mm and come back
    resampled = tio.Resample(2.0)(subject)
    batch = from_torchio(resampled)
    np.testing.assert_allclose(batch.spacing[0], [2.0, 2.0, 2.0], rtol=1e-6)
    # the centre of the field of view stays at the same world point
    before = _item(path).geometry.voxel_to_world((np.array(label.shape) - 1) / 2)
    after = batch.geometry(0).voxel_to_world((np.array(batch.images.shape) - 1) / 2)
    np.testing.assert_allclose(after, before, atol=2.0)
    # back from TorchIO's own loader: SimpleITK's geometry
    back = from_torchio(tio.Subject(image=ref))
    img = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(back.images, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(back.origin[0], img.GetOrigin()[::-1], atol=1e-3)
    np.testing.assert_allclose(
        back.direction[0], cf.geometry.direction_from_sitk(img.GetDirection()), atol=1e-5
    )


# ------------------------------------------------------------------------------- PyTorch
@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    from ctflow.io.metaimage import write_metaimage

    folder = tmp_path_factory.mktemp("torch_scans")
    rng = np.random.default_rng(5)
    for k in range(5):
        arr = rng.integers(-1000, 400, size=(6 + k, 12, 12)).astype(np.int16)
        write_metaimage(folder / f"s{k}.mhd", arr, cf.Geometry((2.0, 1.0, 1.0), (k, 0, 0)))
    return cf.Dataset.from_glob(str(folder / "*.mhd"))


def _prep() -> cf.Pipeline:
    return cf.Pipeline().load().resize((4, 8, 8)).normalize_hu(-1000, 400)


def test_pipeline_dataset_yields_the_pipelines_batches_as_tensors(scans):
    from torch.utils.data import DataLoader, IterableDataset

    from ctflow.interop.torch import PipelineDataset

    pipe = scans >> _prep()
    ds = PipelineDataset(pipe, batch_size=2, seed=0)
    assert isinstance(ds, IterableDataset)
    got = list(DataLoader(ds, batch_size=None))
    ref = list(pipe.gen_batch(batch_size=2, seed=0))
    assert [b["ids"] for b in got] == [b.ids for b in ref] == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    for tensors, batch in zip(got, ref, strict=True):
        assert tensors["images"].dtype == torch.float32
        assert tuple(tensors["images"].shape) == (len(batch), 1, 4, 8, 8)
        np.testing.assert_array_equal(tensors["images"][:, 0].numpy(), batch.unstack())
        np.testing.assert_allclose(tensors["spacing"].numpy(), batch.spacing)
        assert "masks" not in tensors  # the pipeline makes none


def test_pipeline_dataset_items_collate_and_workers_share_the_dataset(scans):
    from torch.utils.data import DataLoader

    from ctflow.interop.torch import PipelineDataset

    ds = PipelineDataset(scans >> _prep(), batch_size=2, mode="item")
    batches = list(DataLoader(ds, batch_size=3))
    assert [b["id"] for b in batches] == [["s0", "s1", "s2"], ["s3", "s4"]]
    assert tuple(batches[0]["images"].shape) == (3, 1, 4, 8, 8)
    # two loader processes: every item exactly once
    loader = DataLoader(
        PipelineDataset(scans >> _prep(), batch_size=1), batch_size=None, num_workers=2
    )
    seen = sorted(i for b in loader for i in b["ids"])
    assert seen == ["s0", "s1", "s2", "s3", "s4"]


def test_pipeline_dataset_errors_are_clear(scans):
    from ctflow.interop.torch import PipelineDataset

    with pytest.raises(cf.InvalidParameterError, match="no dataset"):
        PipelineDataset(_prep(), batch_size=2)
    with pytest.raises(cf.InvalidParameterError, match="mode must be"):
        PipelineDataset(scans >> _prep(), mode="epoch")
    unequal = PipelineDataset(scans >> cf.Pipeline().load(), batch_size=2)
    with pytest.raises(cf.InvalidParameterError, match=r"different shapes .*mode='list'"):
        next(iter(unequal))


def test_ragged_batches_reach_torch_per_item_with_their_geometry(tmp_path):
    from ctflow.interop.torch import PipelineDataset
    from ctflow.synthetic import make_dataset

    paths, _ = make_dataset(tmp_path, n_scans=3, shape=(16, 40, 40), seed=6, mixed=True)
    ds = cf.Dataset.from_paths(paths)
    pipe = ds >> cf.Pipeline().load()
    refs = {}
    for p in paths:
        img = sitk.ReadImage(str(p))
        refs[cf.Dataset.from_paths([p]).ids[0]] = img
    listed = list(PipelineDataset(pipe, batch_size=3, mode="list"))
    assert len(listed) == 1
    batch = listed[0]
    assert len({tuple(t.shape) for t in batch["images"]}) == 3  # three different shapes
    for k, item_id in enumerate(batch["ids"]):
        ref = refs[item_id]
        np.testing.assert_array_equal(batch["images"][k][0].numpy(), sitk.GetArrayFromImage(ref))
        assert batch["shapes"][k].tolist() == list(ref.GetSize()[::-1])
        want_dir = np.array(ref.GetDirection()).reshape(3, 3)[::-1, ::-1]
        np.testing.assert_allclose(batch["direction"][k].numpy(), want_dir, atol=1e-12)
        np.testing.assert_allclose(batch["origin"][k].numpy(), ref.GetOrigin()[::-1], atol=1e-6)
    items = list(PipelineDataset(pipe, batch_size=3, mode="item"))
    assert [it["id"] for it in items] == batch["ids"]
    for it, img in zip(items, batch["images"], strict=True):
        assert torch.equal(it["images"], img)
        assert tuple(it["direction"].shape) == (3, 3)


def test_torch_stays_optional():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import ctflow, ctflow.interop, ctflow.interop.monai\n"
        "try:\n"
        "    import ctflow.interop.torch\n"
        "except ctflow.MissingDependencyError as e:\n"
        "    print('missing:', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "missing: ctflow.interop.torch needs the optional package 'torch'" in res.stdout
    assert "pip install 'ctflow[torch]'" in res.stdout
    clean = subprocess.run(
        [sys.executable, "-c", "import sys, ctflow, ctflow.interop; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert clean.stdout.strip() == "False", clean.stderr


# -------------------------------------------------------------- label maps keep their labels
def _labelled(dtype, values, direction=None) -> cf.CTBatch:
    """A 7x9x11 item: HU images and a label map with one block per value of ``values``."""
    images = (np.arange(7 * 9 * 11).reshape(7, 9, 11) - 300).astype(np.int16)
    masks = np.zeros(images.shape, dtype)
    blocks = [np.s_[1:3, 2:5, 1:4], np.s_[3:6, 4:8, 5:9], np.s_[5:7, 0:3, 7:11]]
    for block, value in zip(blocks, values, strict=True):
        masks[block] = value
    return cf.CTBatch.from_arrays(
        [images],
        ids=["lab"],
        spacing=SPACING,
        origin=(-120.5, 33.25, -400.0),
        direction=np.eye(3) if direction is None else direction,
        masks=[masks],
    )


def _sitk_label(batch: cf.CTBatch) -> sitk.Image:
    """The batch's label map as SimpleITK holds it: its voxels at their world positions."""
    img = sitk.GetImageFromArray(batch.masks)
    g = batch.geometry(0)
    img.SetSpacing(g.spacing[::-1].tolist())
    img.SetOrigin(g.origin[::-1].tolist())
    img.SetDirection(cf.geometry.direction_to_sitk(g.direction))
    return img


def _sitk_on_grid(label: sitk.Image, batch: cf.CTBatch) -> np.ndarray:
    """SimpleITK's nearest-neighbour resample of ``label`` onto ``batch``'s grid (0 outside)."""
    g = batch.geometry(0)
    ref = sitk.Image(list(batch.masks.shape[::-1]), label.GetPixelID())
    ref.SetSpacing(g.spacing[::-1].tolist())
    ref.SetOrigin(g.origin[::-1].tolist())
    ref.SetDirection(cf.geometry.direction_to_sitk(g.direction))
    out = sitk.Resample(label, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(out)


def _assert_same_geometry(a: cf.Geometry, b: cf.Geometry) -> None:
    """Equal up to the rounding of the 4x4 affine (an oblique direction is not exact)."""
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-12)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-9)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-12)


LABELS = {
    "uint8 {1,2,5}": (np.uint8, (1, 2, 5)),
    "uint16 {1,2,300}": (np.uint16, (1, 2, 300)),
}


@pytest.mark.parametrize(("dtype", "values"), LABELS.values(), ids=LABELS.keys())
def test_label_maps_round_trip_exactly(dtype, values):
    batch = _labelled(dtype, values, DIRECTIONS["oblique"])
    want = {0, *values}
    subject = to_torchio(batch[0])
    assert isinstance(subject["label"], tio.LabelMap)
    assert set(subject["label"].data.unique().tolist()) == want
    for back in (
        from_torchio(subject),
        from_monai(to_monai(batch[0])),
        from_monai(to_monai(batch[0], meta_tensor=True)),
        from_monai(to_monai(batch[0], channel_first=False), channel_first=False),
    ):
        assert back.masks.dtype == dtype
        np.testing.assert_array_equal(back.masks, batch.masks)
        np.testing.assert_array_equal(back.images, batch.images)
        _assert_same_geometry(back.geometry(0), batch.geometry(0))
    # plain torch tensors: the same values (uint16 as int32, which torch can flip and add)
    from ctflow.interop.torch import batch_to_tensors

    tensors = batch_to_tensors(batch)
    assert tensors["masks"].dtype == (torch.uint8 if dtype == np.uint8 else torch.int32)
    np.testing.assert_array_equal(tensors["masks"][0, 0].numpy(), batch.masks)
    assert set(torch.flip(tensors["masks"], [2]).unique().tolist()) == want
    # MONAI, given plain tensors and no record: integer labels come back as uint8 / uint16
    plain = {
        "image": torch.from_numpy(to_monai(batch[0])["image"].copy()),
        "affine": ras_affine(batch.geometry(0)),
    }
    plain["label"] = tensors["masks"][0].permute(0, 3, 2, 1).to(torch.int64)
    back = from_monai(plain)
    assert back.masks.dtype == dtype
    np.testing.assert_array_equal(back.masks, batch.masks)


def test_float_probabilities_and_one_hot_channels_round_trip():
    batch = _labelled(np.uint8, (1, 2, 5))
    probs = np.random.default_rng(1).random(batch.images.shape).astype(np.float32)
    soft = cf.CTBatch.from_arrays([batch.images], masks=[probs], spacing=SPACING)
    for back in (
        from_torchio(to_torchio(soft[0])),
        from_monai(to_monai(soft[0], meta_tensor=True)),
    ):
        assert back.masks.dtype == np.float32
        np.testing.assert_array_equal(back.masks, probs)
    labels = batch.masks.copy()
    hot = batch.one_hot(values=(0, 1, 2, 5))
    assert hot[0].masks.shape == (4, 7, 9, 11)
    d = to_monai(hot[0])
    assert d["label"].shape == (4, 11, 9, 7)  # MONAI's channel-first (C, X, Y, Z)
    subject = to_torchio(hot[0])
    assert tuple(subject["label"].shape) == (4, 11, 9, 7)
    for back in (from_monai(d), from_torchio(subject)):
        np.testing.assert_array_equal(back[0].masks, hot[0].masks)
        np.testing.assert_array_equal(back.argmax(values=(0, 1, 2, 5)).masks, labels)
    from ctflow.interop.torch import batch_to_tensors

    assert tuple(batch_to_tensors(hot)["masks"].shape) == (1, 4, 7, 9, 11)


@pytest.mark.parametrize(("dtype", "values"), LABELS.values(), ids=LABELS.keys())
@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_torchio_transforms_keep_labels_and_world_positions(dtype, values, direction):
    batch = _labelled(dtype, values, direction)
    label = _sitk_label(batch)
    subject = to_torchio(batch[0])
    # a flip of every axis: the voxels reversed, the grid unchanged (TorchIO flips the data)
    flipped = from_torchio(tio.RandomFlip(axes=(0, 1, 2), flip_probability=1.0)(subject))
    assert flipped.masks.dtype == dtype
    _assert_same_geometry(flipped.geometry(0), batch.geometry(0))
    np.testing.assert_array_equal(flipped.masks, batch.masks[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(flipped.images, batch.images[::-1, ::-1, ::-1])
    # crop x, pad y and z: every voxel keeps its label at its world position (SimpleITK)
    cropped = from_torchio(tio.CropOrPad((6, 12, 10))(subject))
    assert cropped.masks.shape == (10, 12, 6) and cropped.masks.dtype == dtype
    np.testing.assert_array_equal(cropped.masks, _sitk_on_grid(label, cropped))
    assert set(np.unique(cropped.masks).tolist()) <= {0, *values}
    # resampling to 1 mm (nearest neighbour for label maps) and a random affine (float32 labels
    # inside TorchIO) keep exactly the label set
    resampled = from_torchio(tio.Resample(1.0)(subject))
    np.testing.assert_allclose(resampled.spacing[0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(resampled.masks, _sitk_on_grid(label, resampled))
    assert set(np.unique(resampled.masks).tolist()) == {0, *values}
    moved = tio.RandomAffine(degrees=8, translation=1)(subject)
    back = from_torchio(moved)
    assert back.masks.dtype == dtype and set(np.unique(back.masks).tolist()) <= {0, *values}


@pytest.mark.parametrize(("dtype", "values"), LABELS.values(), ids=LABELS.keys())
@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_monai_spacing_nearest_keeps_labels_and_world_positions(dtype, values, direction):
    batch = _labelled(dtype, values, direction)
    label = _sitk_label(batch)
    d = to_monai(batch[0], meta_tensor=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spacing = monai_transforms.Spacingd(
            keys=["image", "label"], pixdim=(1.6, 1.4, 2.0), mode=("bilinear", "nearest")
        )
        out = spacing(d)
    assert out["label"].dtype == torch.float32  # MONAI hands labels back as float ...
    back = from_monai(out)
    assert back.masks.dtype == dtype  # ... and they come back exactly, in their dtype
    np.testing.assert_allclose(back.spacing[0], [2.0, 1.4, 1.6], rtol=1e-6)
    np.testing.assert_allclose(back.direction[0], batch.direction[0], atol=1e-6)
    np.testing.assert_allclose(back.origin[0], batch.origin[0], atol=1e-4)  # voxel 0 kept
    np.testing.assert_array_equal(back.masks, _sitk_on_grid(label, back))
    assert set(np.unique(back.masks).tolist()) == {0, *values}


def test_labels_that_cannot_go_back_exactly_are_refused(tmp_path):
    batch = _labelled(np.uint16, (1, 2, 300))
    d = to_monai(batch[0])
    blended = dict(d, label=d["label"].astype(np.float32) * 0.5)  # linear interpolation
    with pytest.raises(cf.InvalidScanError, match=r"not whole numbers.*nearest"):
        from_monai(blended)
    with pytest.raises(cf.InvalidScanError, match=r"do not fit in uint8"):
        from_monai(d, label_dtype="uint8")
    # a label file loaded by MONAI as float32 (LoadImaged's default): label_dtype brings it back
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(_sitk_label(batch), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = monai_transforms.LoadImaged(
            keys=["image", "label"], reader="NibabelReader", ensure_channel_first=True
        )({"image": str(path), "label": str(path)})
    assert loaded["label"].dtype == torch.float32
    img = sitk.ReadImage(str(path))  # the file's geometry, as SimpleITK reads it
    back = from_monai(loaded, label_dtype=np.uint16)
    # TorchIO reading the same file (no record): integer labels above 255 come back as uint16
    read = from_torchio(tio.Subject(image=tio.ScalarImage(path), label=tio.LabelMap(path)))
    for got in (back, read):
        assert got.masks.dtype == np.uint16
        np.testing.assert_array_equal(got.masks, sitk.GetArrayFromImage(img))
        np.testing.assert_array_equal(got.masks, batch.masks)
        np.testing.assert_allclose(got.origin[0], img.GetOrigin()[::-1], atol=1e-4)
        np.testing.assert_allclose(got.spacing[0], img.GetSpacing()[::-1], rtol=1e-6)
