"""Batch actions against independent references, and world-coordinate invariants through chains.

References: scipy.ndimage (rotate, label/centroids), numpy expressions (MIP, noise statistics),
the phantom generator's known nodule positions (world mm), and hand-computed geometry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi

import ctflow as cf
from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops.lungs import segment_lungs
from ctflow.synthetic import make_phantom


def _phantom_batch(seed: int = 3, n_nodules: int = 3, **kw) -> tuple[cf.CTBatch, pd.DataFrame]:
    scan, table = make_phantom(
        kw.pop("shape", (48, 96, 96)),
        kw.pop("spacing", (2.0, 0.75, 0.75)),
        n_nodules=n_nodules,
        seed=seed,
        **kw,
    )
    batch = cf.CTBatch.from_arrays(
        [scan.images],
        ids=[table["seriesuid"].iloc[0] if len(table) else "p"],
        spacing=scan.geometry.spacing,
        origin=scan.geometry.origin,
        direction=scan.geometry.direction,
    )
    return batch.fetch_nodules(table), table


def _blob_centroid_world(batch: cf.CTBatch, world: np.ndarray, radius_vox: float) -> np.ndarray:
    """World position of the bright blob (nodule tissue) nearest a world point."""
    item = batch[0]
    c = item.world_to_voxel(world)
    img = np.asarray(item.images, dtype=np.float32)
    lo = np.maximum(np.floor(c - radius_vox - 2).astype(int), 0)
    hi = np.minimum(np.ceil(c + radius_vox + 3).astype(int), img.shape)
    box = img[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    labels, _ = ndi.label(box > -300)
    lab = labels[tuple(np.clip(np.rint(c - lo).astype(int), 0, np.array(box.shape) - 1))]
    assert lab > 0, "the nodule centre voxel is not nodule tissue"
    com = np.array(ndi.center_of_mass(labels == lab)) + lo
    return item.voxel_to_world(com)


# --------------------------------------------------------------------------- rotate
def test_rotate_voxels_equal_scipy_and_anatomy_keeps_its_world_position():
    batch, _ = _phantom_batch(shape=(24, 96, 96), spacing=(2.0, 0.75, 0.75))
    before = batch.images.astype(np.float32)
    nod = batch.nodules.iloc[0]
    world = np.array([nod.z, nod.y, nod.x])
    r_vox = nod.diameter / 2 / 0.75
    blob_before = _blob_centroid_world(batch, world, r_vox)

    batch.rotate(25.0, axes=(1, 2), order=1)
    ref = ndi.rotate(before, 25.0, axes=(1, 2), reshape=False, order=1, mode="constant", cval=-1000)
    assert batch.images.dtype == np.float32
    np.testing.assert_allclose(batch.images[:, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=0.05)

    # the nodule tissue moved in voxels but its world position (via the new geometry) did not
    blob_after = _blob_centroid_world(batch, world, r_vox)
    assert np.linalg.norm(blob_after - blob_before) < 0.5 * 0.75
    d = batch.direction[0]
    np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-12)


def test_rotate_masks_are_labels_and_match_a_world_mask():
    batch, _ = _phantom_batch(shape=(24, 96, 96))
    batch.create_mask().rotate(40.0)
    assert batch.masks.dtype == np.uint8 and set(np.unique(batch.masks)) <= {0, 1}
    rotated = batch.masks.copy()
    fresh = batch.create_mask().masks  # rasterised from world mm with the rotated geometry
    agree = (rotated == fresh).mean()
    dice = 2 * np.sum(rotated & fresh) / (rotated.sum() + fresh.sum())
    assert agree > 0.999 and dice > 0.8


def test_rotate_random_is_reproducible_and_per_item():
    vols = [np.random.default_rng(i).normal(0, 100, (4, 32, 32)).astype(np.int16) for i in range(2)]

    def run(seed: int, n_workers: int) -> cf.CTBatch:
        b = cf.CTBatch.from_arrays(vols, n_workers=n_workers)
        b.set_random_state(seed, position=5)
        return b.rotate(30.0, random=True)

    a, b, c = run(1, 1), run(1, 2), run(2, 1)
    np.testing.assert_array_equal(a.images, b.images)
    angles = [h[-1]["params"]["angle"] for h in a.history]  # drawn, and recorded per item
    assert all(-30 <= v <= 30 for v in angles) and angles[0] != angles[1]
    assert [h[-1]["params"]["angle"] for h in c.history] != angles


def test_rotate_refuses_a_bad_angle():
    b = cf.CTBatch.from_arrays([np.zeros((4, 8, 8), np.int16)], spacing=(2.5, 0.7, 0.7), ids=["s"])
    with pytest.raises(InvalidParameterError, match="finite"):
        b.rotate(float("nan"))


@pytest.mark.parametrize(("axes", "angle"), [((1, 2), 23.0), ((0, 2), -12.0)])
def test_rotate_on_anisotropic_pixels_matches_simpleitk_and_keeps_nodules(axes, angle):
    """0.68 x 0.73 mm pixels (and a plane including z at 2.5 mm): rotation in millimetres."""
    import SimpleITK as sitk

    from ctflow.geometry import direction_to_sitk

    batch, _ = _phantom_batch(seed=5, n_nodules=2, shape=(24, 96, 88), spacing=(2.5, 0.73, 0.68))
    batch.create_mask()
    g = batch.geometry(0)
    before = batch.images.astype(np.float32)
    img = sitk.GetImageFromArray(before)
    img.SetSpacing(tuple(g.spacing[::-1].tolist()))
    img.SetOrigin(tuple(g.origin[::-1].tolist()))
    img.SetDirection(direction_to_sitk(g.direction))
    centre = img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()])
    euler = sitk.Euler3DTransform()
    euler.SetCenter(centre)
    t = np.deg2rad(angle)  # ctflow's angle in (1, 2) is +t about z; in (0, 2) it is -t about y
    euler.SetRotation(0.0, -t, 0.0) if axes == (0, 2) else euler.SetRotation(0.0, 0.0, t)
    ref = sitk.GetArrayFromImage(sitk.Resample(img, img, euler, sitk.sitkLinear, -1000.0))
    batch.rotate(angle, axes=axes)
    out = batch.images
    inside = (out != -1000.0) & (ref != -1000.0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], ref[inside], atol=0.05)  # float32 rounding (HU)
    # every voxel keeps the world position of the anatomy it shows: masks drawn from the world
    # table after the rotation equal the rotated masks (nearest) almost everywhere
    rotated_masks = batch.masks.copy()
    batch.create_mask()
    assert rotated_masks.sum() > 0
    agree = np.mean(rotated_masks == batch.masks)
    assert agree > 0.999, agree
    dice = 2 * np.sum(rotated_masks & batch.masks) / (rotated_masks.sum() + batch.masks.sum())
    assert dice > 0.85, dice


# --------------------------------------------------------------------------- chain invariant
@pytest.mark.parametrize("angle", [0.0, 17.0])
def test_chain_keeps_nodules_on_their_world_position(angle):
    """load -> unify_spacing -> rotate -> central_crop -> create_mask: centroid within 1 voxel."""
    direction = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])  # a flipped y axis, too
    batch, table = _phantom_batch(
        seed=11, n_nodules=3, shape=(40, 112, 112), spacing=(2.5, 0.7, 0.7), direction=direction
    )
    (
        batch.unify_spacing((1.0, 1.0, 1.0), order=1)
        .rotate(angle)
        .central_crop((90, 70, 70))
        .create_mask()
    )
    labels, n = ndi.label(batch.masks)
    centres = np.array(ndi.center_of_mass(batch.masks, labels, range(1, n + 1))).reshape(-1, 3)
    truth = table[["coordZ", "coordY", "coordX"]].to_numpy()
    inside = 0
    for w in truth:
        v = batch.world_to_voxel(0, w)
        if np.any(v < 3) or np.any(v > np.array(batch.images.shape) - 4):
            continue  # cropped away
        inside += 1
        nearest = centres[np.argmin(np.linalg.norm(centres - v, axis=1))]
        assert np.linalg.norm(nearest - v) <= 1.0
        # and the image shows nodule tissue at that world position
        assert batch.images[tuple(np.rint(v).astype(int))] > -300
    assert inside >= 1


def test_sampled_crops_are_centred_on_their_nodules():
    batch, _ = _phantom_batch(seed=5, n_nodules=4, shape=(48, 96, 96), spacing=(1.0, 0.8, 0.8))
    batch.set_random_state(0, position=0)
    variance = (4.0, 9.0, 9.0)
    crops = batch.create_mask().sample_nodules(
        batch_size=12, nodule_size=(24, 32, 32), share=0.5, variance=variance
    )
    assert len(crops) == 12
    parent = batch.nodules[["z", "y", "x", "diameter"]].to_numpy()
    n_nodule = 0
    for k, info in enumerate(crops.info):
        item = crops[k]
        if info["kind"] != "nodule":
            assert item.masks.sum() == 0  # random crops contain no nodule voxel
            continue
        n_nodule += 1
        centre_world = item.voxel_to_world((np.array(item.shape) - 1) / 2)
        vox = np.abs(batch.world_to_voxel(0, parent[:, :3]) - batch.world_to_voxel(0, centre_world))
        offset = vox[np.argmin(vox.sum(axis=1))]
        assert np.all(offset <= 3 * np.sqrt(variance) + 1.0)
        assert item.masks.sum() > 0 and len(item.nodules) >= 1
    assert n_nodule == 6
    # every crop lists exactly the parent's nodules whose centre lies in it, under its own id
    for k in range(len(crops)):
        item = crops[k]
        vox = item.geometry.world_to_voxel(parent[:, :3])
        inside = np.all((vox >= -0.5) & (vox <= np.array(item.shape) - 0.5), axis=1)
        got = item.nodules[["z", "y", "x", "diameter"]].to_numpy()
        np.testing.assert_array_equal(got, parent[inside])
        assert (item.nodules["id"] == crops.ids[k]).all()
    assert list(crops.nodules.columns) == list(batch.nodules.columns)


# --------------------------------------------------------------------------- anatomy
def test_segment_equals_the_op_and_crop_to_lungs_keeps_world_positions():
    batch, _ = _phantom_batch(seed=2, shape=(32, 96, 96))
    ref = segment_lungs(batch.images, batch.geometry(0))
    batch.segment()
    assert batch.lungs.dtype == np.uint8
    np.testing.assert_array_equal(batch.lungs, ref)
    assert ref.sum() > 0
    lung_world = batch.voxel_to_world(0, np.argwhere(ref)[[0, -1]])
    n_lung = int(ref.sum())
    batch.crop_to_lungs(margin_mm=4.0)
    assert int(batch.lungs.sum()) == n_lung  # the box holds every lung voxel
    back = np.rint(batch.world_to_voxel(0, lung_world)).astype(int)
    assert all(batch.lungs[tuple(v)] == 1 for v in back)
    assert batch.images.shape[1] < 96 and batch.images.shape[2] < 96


def test_segment_blank_and_refuses_normalised_images():
    batch, _ = _phantom_batch(seed=2, shape=(32, 96, 96))
    batch.segment(blank=True, blank_value=-1000)
    assert np.all(batch.images[batch.lungs == 0] == -1000)
    batch.normalize_hu()
    with pytest.raises(InvalidScanError, match="before normalize_hu"):
        batch.segment()


def test_crop_to_lungs_with_shape_gives_one_batch_of_equal_shapes():
    b1, _ = _phantom_batch(seed=2, shape=(32, 96, 96))
    b2, _ = _phantom_batch(seed=4, shape=(28, 96, 96), spacing=(2.5, 0.9, 0.9))
    batch = cf.CTBatch.from_arrays(
        [b1.images, b2.images],
        ids=["a", "b"],
        spacing=[b1.spacing[0], b2.spacing[0]],
        origin=[b1.origin[0], b2.origin[0]],
    )
    lungs_world = []
    for i, b in enumerate((b1, b2)):
        lungs = segment_lungs(b.images, b.geometry(0))
        lungs_world.append(batch.voxel_to_world(i, np.argwhere(lungs)[::97]))
    boxes = batch.subset([0, 1]).segment().crop_to_lungs(margin_mm=2.0)  # own lung boxes
    assert boxes.shapes[0].tolist() != boxes.shapes[1].tolist()  # a ragged batch
    with pytest.raises(InvalidScanError, match="in-plane"):
        boxes.images  # noqa: B018 - no (ΣZ, Y, X) view of items of different in-plane sizes
    batch.segment().crop_to_lungs(margin_mm=2.0, shape=(24, 64, 72))
    assert batch.images.shape == (48, 64, 72)
    for i in range(2):  # lung voxels still sit at their world positions
        v = np.rint(batch.world_to_voxel(i, lungs_world[i])).astype(int)
        ok = np.all((v >= 0) & (v < (24, 64, 72)), axis=1)
        assert ok.mean() > 0.5
        assert np.all(batch[i].lungs[tuple(v[ok].T)] == 1)


# --------------------------------------------------------------------------- projections
def test_make_xip_equals_numpy_and_geometry_is_the_window_centre():
    rng = np.random.default_rng(0)
    img = rng.integers(-1000, 400, (20, 8, 9)).astype(np.int16)
    b = cf.CTBatch.from_arrays([img], spacing=(1.5, 0.7, 0.7), origin=(-50.0, 10.0, 20.0))
    b.masks = (img > 300).astype(np.uint8)
    b.make_xip(depth=4, stride=3, mode="max")
    ref = np.stack([img[k : k + 4].max(axis=0) for k in range(0, 17, 3)])
    np.testing.assert_array_equal(b.images, ref)
    mref = np.stack([(img[k : k + 4] > 300).max(axis=0) for k in range(0, 17, 3)])
    np.testing.assert_array_equal(b.masks, mref)
    assert b.spacing[0].tolist() == [4.5, 0.7, 0.7]
    np.testing.assert_allclose(b.origin[0], (-50.0 + 1.5 * 1.5, 10.0, 20.0))

    c = cf.CTBatch.from_arrays([img]).make_xip(depth=3, stride=1, mode="mean", projection="coronal")
    np.testing.assert_allclose(
        c.images, np.stack([img[:, k : k + 3].mean(axis=1) for k in range(6)], axis=1), rtol=1e-6
    )
    assert c.images.dtype == np.float32


# --------------------------------------------------------------------------- masks
def test_binarize_and_fetch_nodules_from_mask_recover_the_annotations():
    batch, _ = _phantom_batch(seed=4, n_nodules=3, shape=(48, 96, 96), spacing=(1.0, 0.7, 0.7))
    truth = batch.nodules.sort_values("z").reset_index(drop=True)
    c, r = truth[["z", "y", "x"]].to_numpy(), truth["diameter"].to_numpy() / 2
    assert all(np.linalg.norm(c[i] - c[j]) > r[i] + r[j] + 2 for i in range(3) for j in range(i))
    batch.create_mask()
    batch.masks = batch.masks.astype(np.float32) * 0.9  # like predicted probabilities
    batch.binarize_mask(0.5)
    assert batch.masks.dtype == np.uint8 and set(np.unique(batch.masks)) <= {0, 1}
    found = batch.fetch_nodules_from_mask().nodules.sort_values("z").reset_index(drop=True)
    assert len(found) == len(truth) and (found["id"] == batch.ids[0]).all()
    np.testing.assert_allclose(found[["z", "y", "x"]], truth[["z", "y", "x"]], atol=0.7)
    np.testing.assert_allclose(found["diameter"], truth["diameter"], rtol=0.2)


# --------------------------------------------------------------------------- inference
def test_patches_round_trip_exactly_and_predict_on_scan():
    rng = np.random.default_rng(1)
    vols = [rng.integers(-1000, 1000, (13, 17, 19)).astype(np.int16) for _ in range(2)]
    b = cf.CTBatch.from_arrays(vols)
    b.get_patches((4, 8, 8), stride=(3, 5, 6))
    assert b.patches.shape[1:] == (4, 8, 8) and b.patches.dtype == np.int16
    b.load_from_patches(dst="masks")
    np.testing.assert_array_equal(b.masks, np.concatenate(vols))
    assert b.masks.dtype == np.float32

    b.predict_on_scan(lambda x: (x > 0).astype(np.float32), (4, 8, 8), (2, 4, 4), batch_size=5)
    np.testing.assert_array_equal(b.masks, (np.concatenate(vols) > 0).astype(np.float32))
    with pytest.raises(InvalidParameterError, match="expected"):
        b.load_from_patches(b.patches[:-1])


# --------------------------------------------------------------------------- augmentation
def test_noise_statistics_reproducibility_and_cutout():
    vols = [np.zeros((8, 64, 64), np.int16) for _ in range(3)]

    def noisy(seed: int, workers: int) -> np.ndarray:
        b = cf.CTBatch.from_arrays(vols, n_workers=workers)
        b.set_random_state(seed, position=2)
        return b.apply_noise(sigma=20.0).images

    a = noisy(0, 1)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, noisy(0, 3))
    assert abs(float(a.std()) - 20.0) < 0.5 and abs(float(a.mean())) < 0.5
    assert not np.array_equal(a[:8], a[8:16])  # items draw different noise

    b = cf.CTBatch.from_arrays([np.ones((6, 10, 10), np.int16)])
    b.set_random_state(0, 0)
    out = b.cutout((2, 3, 4), n_boxes=1, fill=-5).images
    assert out.dtype == np.int16 and int((out == -5).sum()) == 24


def test_no_action_upcasts_to_float64():
    batch, _ = _phantom_batch(seed=1, shape=(24, 64, 64), spacing=(1.0, 0.8, 0.8))
    batch.set_random_state(0, 0)
    steps = [
        lambda b: b.unify_spacing((1.0, 1.0, 1.0)),
        lambda b: b.segment(),
        lambda b: b.create_mask(),
        lambda b: b.rotate(10.0, random=True),
        lambda b: b.apply_noise(5.0),
        lambda b: b.cutout((2, 4, 4)),
        lambda b: b.make_xip(2, 1),
        lambda b: b.normalize_hu(),
        lambda b: b.flip(2),
        lambda b: b.pad((30, 70, 70)),
    ]
    for step in steps:
        step(batch)
        for comp in ("images", "masks", "lungs"):
            arr = getattr(batch, comp)
            assert arr is None or arr.dtype != np.float64, (step, comp)


def test_normalize_hu_works_in_place_only_on_arrays_the_batch_owns():
    user = np.linspace(-1200, 600, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    kept = user.copy()
    b = cf.CTBatch.from_arrays([user]).normalize_hu()
    np.testing.assert_array_equal(user, kept)  # the caller's array is untouched
    ref = (np.clip(kept, -1000, 400) + 1000) / 1400
    np.testing.assert_allclose(b.images, ref, rtol=1e-6)

    b = cf.CTBatch.from_arrays([user], spacing=(2.0, 1.0, 1.0)).unify_spacing((1.0, 1.0, 1.0))
    resampled = b.images
    hu = resampled.copy()
    b.normalize_hu()
    assert np.shares_memory(b.images, resampled)  # the resampled volume was reused
    np.testing.assert_allclose(b.images, (np.clip(hu, -1000, 400) + 1000) / 1400, rtol=1e-6)
    b2 = cf.CTBatch.from_arrays([user], spacing=(2.0, 1.0, 1.0)).unify_spacing((1.0, 1.0, 1.0))
    before = b2.images
    b2.normalize_hu(inplace=False)
    assert b2.images is not before and before.min() < -900


def test_crops_larger_than_their_scan_are_padded_with_that_scans_air():
    a = np.full((6, 10, 10), 50, np.int16)
    a[0, 0, 0] = -1000
    b = np.full((6, 10, 10), 50, np.int16)
    b[0, 0, 0] = -1024
    batch = cf.CTBatch.from_arrays([a, b], ids=["a", "b"], origin=(10.0, -5.0, 3.0))
    batch.set_random_state(0, 0)
    crops = batch.sample_nodules(4, (8, 12, 12), share=0.0)
    for k, info in enumerate(crops.info):
        item = crops[k]
        parent = batch[info["parent"]]
        start = np.array(info["start"])
        assert np.all(start <= 0)  # the crop is larger: it starts before the scan
        air = parent.images.min()
        outside = np.ones(item.shape, bool)
        box = tuple(slice(-s, -s + n) for s, n in zip(start, parent.shape))
        outside[box] = False
        assert np.all(item.images[outside] == air)
        np.testing.assert_array_equal(item.images[box], parent.images)
        # the crop's geometry keeps the anatomy at its world position
        np.testing.assert_allclose(item.voxel_to_world(-start), parent.voxel_to_world((0, 0, 0)))
