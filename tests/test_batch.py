"""CTBatch: skyscraper bookkeeping, item views, geometry against SimpleITK, geometric actions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.geometry import direction_to_sitk


def _volumes(zs, yx=(6, 5), dtype=np.int16):
    return [
        np.arange(z * yx[0] * yx[1], dtype=dtype).reshape(z, *yx) + 100 * k
        for k, z in enumerate(zs)
    ]


def test_skyscraper_bounds_and_views_with_different_z():
    vols = _volumes([3, 5, 2])
    b = cf.CTBatch.from_arrays(vols, ids=["a", "b", "c"])
    assert b.images.shape == (10, 6, 5)
    assert b.bounds.tolist() == [0, 3, 8, 10]
    assert b.shapes.tolist() == [[3, 6, 5], [5, 6, 5], [2, 6, 5]]
    for k, v in enumerate(vols):
        item = b[k]
        np.testing.assert_array_equal(item.images, v)
        assert np.shares_memory(item.images, b.images)
    # by id, and writing through a view writes the batch
    b["b"].images[0, 0, 0] = -7
    assert b.images[3, 0, 0] == -7
    assert b.get("c", "images").shape == (2, 6, 5)
    with pytest.raises(KeyError, match="no item 'zz'"):
        b["zz"]
    with pytest.raises(IndexError):
        b[3]


def test_unstack_is_a_view_and_refuses_ragged():
    b = cf.CTBatch.from_arrays(_volumes([4, 4, 4]))
    u = b.unstack()
    assert u.shape == (3, 4, 6, 5)
    assert np.shares_memory(u, b.images)
    np.testing.assert_array_equal(u[1], b[1].images)
    ragged = cf.CTBatch.from_arrays(_volumes([4, 3]))
    with pytest.raises(cf.InvalidScanError, match=r"different shapes \('0' \(4, 6, 5\), '1' \(3"):
        ragged.unstack()


def test_mixed_inplane_sizes_share_one_buffer_and_name_both_items():
    a = np.arange(2 * 6 * 5, dtype=np.int16).reshape(2, 6, 5)
    c = -np.arange(3 * 7 * 4, dtype=np.int16).reshape(3, 7, 4)
    b = cf.CTBatch.from_arrays([a, c], ids=["a", "b"])
    assert b.shapes.tolist() == [[2, 6, 5], [3, 7, 4]]
    data = b.ragged("images")
    assert data.buffer.size == a.size + c.size  # one allocation for both items
    np.testing.assert_array_equal(b["a"].images, a)
    np.testing.assert_array_equal(b["b"].images, c)
    assert np.shares_memory(b["a"].images, data.buffer)
    assert np.shares_memory(b["b"].images, data.buffer)
    with pytest.raises(cf.InvalidScanError, match=r"'a' \(2, 6, 5\), 'b' \(3, 7, 4\)"):
        b.images  # noqa: B018
    with pytest.raises(cf.InvalidScanError, match="different shapes"):
        b.unstack()


def test_duplicate_ids_rejected():
    with pytest.raises(cf.InvalidParameterError, match="repeated"):
        cf.CTBatch(["a", "a"])


def test_radio_aliases():
    assert cf.CTImagesBatch is cf.CTBatch
    assert cf.CTImagesMaskedBatch is cf.CTBatch


def _sitk_image(arr, spacing_zyx, origin_zyx, direction_zyx):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(v) for v in spacing_zyx[::-1]))
    img.SetOrigin(tuple(float(v) for v in origin_zyx[::-1]))
    img.SetDirection(direction_to_sitk(direction_zyx))
    return img


def _rotation_zyx(angle_deg: float) -> np.ndarray:
    """A rotation about world z with the x axis flipped, written in (z, y, x) order."""
    a = np.deg2rad(angle_deg)
    d = np.eye(3)
    d[1:, 1:] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    d[:, 2] *= -1
    return d


@pytest.mark.parametrize("direction", [np.eye(3), _rotation_zyx(30.0)], ids=["identity", "rotated"])
def test_geometry_round_trip_against_simpleitk(tmp_path, rng, direction):
    spacing = np.array([2.5, 0.7, 0.65])
    origin = np.array([-312.5, -180.2, 95.75])
    arr = rng.integers(-1000, 1000, size=(12, 20, 18)).astype(np.int16)
    path = tmp_path / "scan.mhd"
    sitk.WriteImage(_sitk_image(arr, spacing, origin, direction), str(path))
    ds = cf.Dataset.from_paths([path])
    batch = (ds >> cf.Pipeline().load()).next_batch(1)
    np.testing.assert_array_equal(batch.images, arr)
    ref = sitk.ReadImage(str(path))
    idx = rng.uniform(-2, 20, size=(200, 3))
    ours = batch.voxel_to_world(0, idx)
    theirs = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(v[::-1])) for v in idx])[
        :, ::-1
    ]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(batch.world_to_voxel(0, ours), idx, atol=1e-9)
    item = batch[0]
    np.testing.assert_allclose(item.world_to_voxel(item.voxel_to_world(idx)), idx, atol=1e-9)


def test_crop_pad_central_crop_keep_world_positions(rng):
    arr = rng.integers(-1000, 1000, size=(10, 12, 14)).astype(np.int16)
    spacing, origin = (2.0, 0.5, 0.8), (-100.0, 20.0, 30.0)
    base = cf.Geometry(spacing, origin, _rotation_zyx(20))

    def value_at_world(batch, world):
        v = np.rint(batch.world_to_voxel(0, world)).astype(int)
        return batch.images[tuple(v)]

    probe_vox = np.array([5.0, 6.0, 7.0])
    world = base.voxel_to_world(probe_vox)
    for pipeline in [
        cf.Pipeline().crop((2, 3, 4), (6, 6, 6)),
        cf.Pipeline().central_crop((6, 8, 8)),
        cf.Pipeline().pad((14, 15, 20)),
        cf.Pipeline().flip(0),
        cf.Pipeline().flip((1, 2)),
        cf.Pipeline().pad((12, 12, 15), mode="edge").crop((1, 0, 0), (10, 12, 15)),
    ]:
        b = cf.CTBatch.from_arrays([arr], spacing=spacing, origin=origin, direction=base.direction)
        out = pipeline.execute(b)
        assert value_at_world(out, world) == arr[tuple(probe_vox.astype(int))], pipeline


def test_crop_geometry_hand_computed():
    b = cf.CTBatch.from_arrays(
        [np.zeros((10, 10, 10), np.int16)], spacing=(2.0, 1.0, 0.5), origin=(1.0, 2.0, 3.0)
    )
    b.crop((1, 2, 4), (3, 3, 3))
    np.testing.assert_allclose(b.origin[0], [3.0, 4.0, 5.0])
    b = cf.CTBatch.from_arrays(
        [np.zeros((4, 4, 4), np.int16)], spacing=(2.0, 1.0, 0.5), origin=(1.0, 2.0, 3.0)
    )
    b.pad((7, 4, 6))
    np.testing.assert_allclose(b.origin[0], [1.0 - 2.0, 2.0, 3.0 - 0.5])
    assert b.images.shape == (7, 4, 6)
    assert b.images[0, 0, 0] == -1000


def test_crop_outside_is_an_error_naming_the_item():
    b = cf.CTBatch.from_arrays([np.zeros((4, 4, 4), np.int16)], ids=["scan7"])
    with pytest.raises(cf.InvalidParameterError, match="scan7") as info:
        b.crop((2, 0, 0), (3, 4, 4))
    assert any("crop" in n for n in getattr(info.value, "__notes__", []))
    with pytest.raises(cf.InvalidParameterError, match="larger than item 'scan7'"):
        b.central_crop((5, 4, 4))


def test_masks_and_nodules_follow_geometric_actions():
    img = np.zeros((20, 20, 20), np.int16)
    nod = pd.DataFrame({"id": ["a"], "z": [10.0], "y": [8.0], "x": [12.0], "diameter": [5.0]})
    b = cf.CTBatch.from_arrays([img], ids=["a"], nodules=nod).create_mask()
    before = np.argwhere(b.masks).mean(axis=0)
    b.flip(2).crop((2, 2, 2), (16, 16, 16))
    after = np.argwhere(b.masks).mean(axis=0)
    world_before = cf.Geometry((1, 1, 1)).voxel_to_world(before)
    np.testing.assert_allclose(b.voxel_to_world(0, after), world_before, atol=1e-9)
    # the nodule table is in world mm and needs no update
    np.testing.assert_allclose(b.nodules[["z", "y", "x"]].to_numpy()[0], [10.0, 8.0, 12.0])


def test_batch_repr_and_actions_listing():
    b = cf.CTBatch.from_arrays([np.zeros((2, 3, 3), np.int16)], ids=["x"])
    assert "CTBatch(n=1, ids=[x], images=(2, 3, 3) int16" in repr(b)
    names = cf.CTBatch.action_names()
    for name in (
        "load",
        "dump",
        "unify_spacing",
        "normalize_hu",
        "fetch_nodules",
        "create_mask",
        "sample_nodules",
    ):
        assert name in names
