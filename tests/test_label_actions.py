"""Every action is label-aware: label maps keep their values through resampling (nearest, or
one-hot linear + argmax), probabilities are linear, channels (C, Z, Y, X) follow every action,
and nothing merges classes silently. References: SimpleITK resampling on the same grids, numpy."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.geometry import Geometry, direction_to_sitk
from ctflow.ops.affine import affine_matrix
from ctflow.synthetic import make_phantom


def _sitk(arr, g: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(g.spacing[::-1].tolist()))
    img.SetOrigin(tuple(g.origin[::-1].tolist()))
    img.SetDirection(direction_to_sitk(g.direction))
    return img


def _resample(arr, src: Geometry, dst: Geometry, shape, interp, default=0.0):
    ref = _sitk(np.zeros(shape, np.uint8), dst)
    out = sitk.Resample(_sitk(arr, src), ref, sitk.Transform(), interp, default)
    return sitk.GetArrayFromImage(out)


@pytest.fixture(scope="module")
def labelled():
    """A phantom with a label map {0, 1, 2, 5} (body, lungs, bright structures)."""
    scan, _ = make_phantom((30, 64, 60), (2.5, 0.7, 0.75), n_nodules=2, seed=3)
    img = scan.images
    labels = np.zeros(img.shape, np.uint8)
    labels[img > -500] = 1
    labels[(img > -980) & (img <= -500)] = 2
    labels[img > 150] = 5
    return img, labels, scan.geometry


def _batch(labelled):
    img, labels, g = labelled
    b = cf.CTBatch.from_arrays([img], spacing=g.spacing, origin=g.origin)
    return b.set_component("masks", [labels])


@pytest.mark.parametrize("action", ["unify_spacing", "resize", "rotate"])
def test_resampling_keeps_label_values_and_agrees_with_sitk_nearest(labelled, action):
    _, labels, g = labelled
    b = _batch(labelled)
    if action == "unify_spacing":
        b.unify_spacing((1.7, 1.1, 1.3))
    elif action == "resize":
        b.resize((40, 50, 44))
    else:
        b.rotate(17.0)
    out = b[0].masks
    assert out.dtype == np.uint8
    assert set(np.unique(out).tolist()) == {0, 1, 2, 5}
    ref = _resample(labels, g, b.geometry(0), out.shape, sitk.sitkNearestNeighbor)
    if action == "rotate":
        # rotate samples inside [0, n - 1] per axis (scipy.ndimage's rule), SimpleITK's nearest
        # inside [-0.5, n - 0.5): compare where both sample the scan
        m = affine_matrix(g, b.geometry(0))
        idx = np.indices(out.shape).reshape(3, -1).T @ m[:, :3].T + m[:, 3]
        inside = np.all((idx >= 0) & (idx <= np.asarray(labels.shape) - 1), axis=1)
        agree = np.mean(out.reshape(-1)[inside] == ref.reshape(-1)[inside])
        assert np.all(out.reshape(-1)[~inside] == 0)
    else:
        agree = np.mean(out == ref)
    assert agree >= 0.999, agree


@pytest.mark.parametrize("action", ["unify_spacing", "rotate"])
def test_onehot_interpolation_equals_per_label_linear_then_argmax(labelled, action):
    _, labels, g = labelled
    b = _batch(labelled)
    if action == "unify_spacing":
        b.unify_spacing((1.0, 0.5, 0.5), labels_interpolation="onehot")
    else:
        b.rotate(17.0, labels_interpolation="onehot")
    out = b[0].masks
    assert set(np.unique(out).tolist()) == {0, 1, 2, 5}
    # reference: SimpleITK linear resample of each label's indicator, then the largest wins
    values = [0, 1, 2, 5]
    probs = np.stack(
        [
            _resample(
                (labels == v).astype(np.float32), g, b.geometry(0), out.shape,
                sitk.sitkLinear, 1.0 if v == 0 else 0.0,
            )
            for v in values
        ]
    )  # fmt: skip
    ref = np.asarray(values)[np.argmax(probs, axis=0)]
    assert np.mean(out == ref) >= 0.995
    # smoother than nearest: on a 2x finer grid one-hot labels are not blocky copies
    nearest = _batch(labelled)
    if action == "unify_spacing":
        nearest.unify_spacing((1.0, 0.5, 0.5))
        assert not np.array_equal(nearest[0].masks, out)


def test_probability_masks_are_interpolated_linearly(labelled):
    img, labels, g = labelled
    probs = (labels == 2).astype(np.float32) * 0.8
    b = cf.CTBatch.from_arrays([img], spacing=g.spacing, origin=g.origin)
    b.set_component("masks", [probs]).unify_spacing((1.6, 1.0, 1.0))
    out = b[0].masks
    assert out.dtype == np.float32
    assert np.any((out > 1e-3) & (out < 0.8 - 1e-3))  # blended edges exist
    ref = _resample(probs, g, b.geometry(0), out.shape, sitk.sitkLinear)
    inner = tuple(slice(2, -2) for _ in range(3))
    np.testing.assert_allclose(out[inner], ref[inner], atol=1e-4)


def test_one_hot_channels_follow_every_geometric_action_and_argmax_restores(labelled):
    _, labels, _ = labelled
    plain = _batch(labelled)
    hot = _batch(labelled).one_hot(values=(0, 1, 2, 5))
    assert hot[0].masks.shape == (4, *labels.shape) and hot[0].masks.dtype == np.uint8
    assert hot.ragged("masks").channels == 4
    for b in (plain, hot):
        (
            b.reorient("RAS")
            .flip((0, 2))
            .crop((2, 3, 4), (24, 50, 50))
            .pad((28, 56, 56))
            .rotate(90.0, order=0)
        )  # exact steps: no interpolation, so one-hot and labels must agree voxel for voxel
    np.testing.assert_array_equal(hot.geometry(0).direction, plain.geometry(0).direction)
    back = hot.argmax(values=(0, 1, 2, 5))
    np.testing.assert_array_equal(back[0].masks, plain[0].masks)


def test_channel_masks_are_refused_where_a_label_map_is_needed(labelled):
    b = _batch(labelled).one_hot(values=(0, 1, 2, 5))
    with pytest.raises(cf.InvalidScanError, match="4 channels each"):
        _ = b.masks
    assert b.unstack("masks").shape == (1, 4, *b.shapes[0])
    with pytest.raises(cf.InvalidParameterError, match="argmax"):
        b.fetch_nodules_from_mask()
    with pytest.raises(cf.InvalidParameterError, match="expected a label map"):
        b.one_hot(n_classes=2)


def test_one_hot_refuses_labels_without_a_channel(labelled):
    with pytest.raises(cf.CTFlowError, match=r"labels \[5\] have no channel"):
        _batch(labelled).one_hot(n_classes=3)
    with pytest.raises(cf.InvalidParameterError, match="n_classes or values"):
        cf.actions.OneHot()


def test_binarize_mask_never_merges_classes_silently(labelled):
    _, labels, _ = labelled
    with pytest.raises(cf.InvalidParameterError, match="label map"):
        _batch(labelled).binarize_mask()
    b = _batch(labelled).binarize_mask(labels=(2, 5))
    np.testing.assert_array_equal(b[0].masks, np.isin(labels, (2, 5)).astype(np.uint8))
    probs = cf.CTBatch.from_arrays([np.zeros((1, 1, 3), np.int16)])
    probs.set_component("masks", [np.array([[[0.2, 0.5, 0.9]]], np.float32)])
    assert probs.binarize_mask(0.5)[0].masks.ravel().tolist() == [0, 0, 1]


def test_fetch_nodules_from_mask_reports_touching_labels_apart():
    img = np.zeros((6, 6, 12), np.int16)
    masks = np.zeros(img.shape, np.uint8)
    masks[1:4, 1:4, 1:5] = 2
    masks[1:4, 1:4, 5:8] = 5  # touches label 2
    masks[1:3, 1:3, 10:12] = 2  # a second region of label 2
    b = cf.CTBatch.from_arrays([img], ids=["s"], spacing=(2.0, 1.0, 0.5))
    table = b.set_component("masks", [masks]).fetch_nodules_from_mask().nodules
    assert table["label"].tolist() == [2, 2, 5]
    # centroids by hand: label 5 spans x 5..7 (centre 6), z 1..3 (centre 2)
    row = table[table["label"] == 5].iloc[0]
    assert (row["z"], row["y"], row["x"]) == (4.0, 2.0, 3.0)
    vol = 3 * 3 * 3 * (2.0 * 1.0 * 0.5)
    assert row["diameter"] == pytest.approx((6 * vol / np.pi) ** (1 / 3))


def test_nodule_labels_survive_a_dump(tmp_path):
    img = np.zeros((6, 6, 12), np.int16)
    masks = np.zeros(img.shape, np.uint8)
    masks[1:4, 1:4, 1:5] = 2
    masks[1:4, 1:4, 5:8] = 5
    b = cf.CTBatch.from_arrays([img], ids=["s"], spacing=(2.0, 1.0, 0.5))
    found = b.set_component("masks", [masks]).fetch_nodules_from_mask()
    found.dump(tmp_path)
    back = cf.Dataset.from_glob(str(tmp_path / "*"), dirs=True).create_batch(["s"]).load()
    assert back.nodules["label"].tolist() == found.nodules["label"].tolist() == [2, 5]
    assert back.nodules["label"].dtype == np.int64
    cols = ["z", "y", "x", "diameter"]
    np.testing.assert_array_equal(back.nodules[cols].to_numpy(), found.nodules[cols].to_numpy())


def test_invert_brings_probability_channels_back(labelled):
    """Soft predictions (C, Z, Y, X) go back onto the loaded grid linearly, channel by channel."""
    img, labels, g = labelled
    b = cf.CTBatch.from_arrays([img], spacing=g.spacing, origin=g.origin)
    b.history[0].append(
        {
            "action": "load",
            "args": {},
            "params": {
                "grid": {
                    "shape": list(img.shape),
                    "spacing": g.spacing.tolist(),
                    "origin": g.origin.tolist(),
                    "direction": g.direction.tolist(),
                }
            },
        }
    )
    b.set_component("masks", [labels]).unify_spacing((2.0, 1.4, 1.5)).one_hot(
        values=(0, 1, 2, 5), dtype="float32"
    )
    hot, hot_grid = b[0].masks.copy(), b.geometry(0)
    b.invert()
    probs = b[0].masks
    assert probs.shape == (4, *img.shape) and probs.dtype == np.float32
    for c in range(4):  # each channel: SimpleITK's linear resample onto the loaded grid
        ref = _resample(hot[c], hot_grid, g, img.shape, sitk.sitkLinear)
        inner = (slice(1, -1), slice(2, -2), slice(2, -2))
        np.testing.assert_allclose(probs[c][inner], ref[inner], atol=1e-4)
    restored = np.asarray([0, 1, 2, 5])[np.argmax(probs, axis=0)]
    assert set(np.unique(restored).tolist()) == {0, 1, 2, 5}
