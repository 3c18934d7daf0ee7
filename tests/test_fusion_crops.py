"""Crops first (actions.fusion_crops): a voxel-wise action then crop sampling, on the crops only.

The reference is the same pipeline with ``fuse=False`` (each action in its written order), run
on the same files with the same seed: arrays, geometry, nodules, ids, info, warnings and
histories must be identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ctflow as cf
from ctflow.actions import NormalizeHU, SampleCrops, SampleNodules
from ctflow.actions.fusion_crops import CropsFirst, crops_first


def _run(pipe: cf.Pipeline, paths, fuse: bool, batch_size: int = 4, seed: int = 5):
    ds = cf.Dataset.from_paths(paths)
    p = cf.Pipeline(pipe.actions, fuse=fuse)
    return list((ds >> p).gen_batch(batch_size=batch_size, seed=seed))


def _assert_same(fused, plain) -> None:
    assert len(fused) == len(plain)
    for a, b in zip(fused, plain, strict=True):
        assert a.ids == b.ids
        assert len(a) > 0
        for comp in ("images", "masks", "lungs"):
            assert a.has(comp) == b.has(comp)
            if a.has(comp):
                x, y = a.ragged(comp).buffer, b.ragged(comp).buffer
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(a.origin, b.origin)
        np.testing.assert_array_equal(a.spacing, b.spacing)
        pd.testing.assert_frame_equal(a.nodules, b.nodules)
        assert a.info == b.info
        assert a.history == b.history
        assert a.warnings == b.warnings


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_window_then_nodule_crops_equals_the_written_order(phantom_dir, dtype):
    paths, csv = phantom_dir
    # crops larger than the scans' 40 slices: every crop leaves its scan and is padded
    pipe = (
        cf.Pipeline()
        .load()
        .fetch_nodules(csv)
        .unify_spacing((1.3, 1.1, 0.9), order=1, dtype="int16")
        .create_mask()
        .normalize_hu(-900, 300, dtype=dtype)
        .sample_nodules(7, (48, 24, 20), share=0.6)
    )
    assert [a.label for a in pipe.planned][-1] == "sample_nodules + normalize_hu"
    fused, plain = _run(pipe, paths, True), _run(pipe, paths, False)
    _assert_same(fused, plain)
    crops = fused[0]
    assert crops.images.dtype == np.dtype(dtype)
    assert [h["action"] for h in crops.history[0]][-2:] == ["normalize_hu", "sample_nodules"]
    # crops leave the two scans of 31 slices (48 > 31): padded with each scan's minimum
    assert any(info["start"][0] < 0 for info in crops.info)


def test_window_then_label_crops_equals_the_written_order(phantom_dir):
    paths, csv = phantom_dir
    for ratios in ({0: 1.0, 1: 3.0}, None):
        pipe = (
            cf.Pipeline()
            .load()
            .fetch_nodules(csv)
            .create_mask()
            .normalize_hu()
            .sample_crops(6, (16, 24, 24), ratios=ratios)
        )
        assert [a.label for a in pipe.planned][-1] == "sample_crops + normalize_hu"
        _assert_same(_run(pipe, paths, True, batch_size=3), _run(pipe, paths, False, batch_size=3))


def test_only_pairs_that_commute_are_planned_together():
    window, nodules = NormalizeHU(), SampleNodules(4, (8, 8, 8))
    padded = SampleNodules(4, (8, 8, 8), pad_value=-1000.0)  # a fill in HU, not in the window
    assert [a.label for a in crops_first((window, padded))] == ["normalize_hu", "sample_nodules"]
    assert [a.label for a in crops_first((nodules, window))] == ["sample_nodules", "normalize_hu"]
    noisy = cf.Pipeline().normalize_hu().apply_noise(1.0).sample_nodules(4, (8, 8, 8))
    assert len(noisy.planned) == 3  # a random item action between them: nothing is moved
    twice = crops_first((window, nodules, SampleCrops(2, (4, 4, 4))))
    assert [a.label for a in twice] == ["sample_nodules + normalize_hu", "sample_crops"]
    with pytest.raises(cf.InvalidParameterError, match="crops first"):
        CropsFirst(window, padded)


def test_float_scans_windowed_to_float32_keep_nan_as_the_written_order():
    scan = np.linspace(-1200, 600, 14**3, dtype=np.float32).reshape(14, 14, 14)
    scan[5, 5, 5] = np.nan  # the scans' minimum is NaN: so is the padding (crops of 16 > 14)
    ann = pd.DataFrame({"id": ["a"], "z": [12.0], "y": [7.0], "x": [7.0], "diameter": [2.0]})
    batch = cf.CTBatch.from_arrays([scan, scan[2:, 3:]], ids=["a", "b"], nodules=ann)
    window, sampler = NormalizeHU(), SampleNodules(3, (16, 6, 6), share=0.5)
    first, second = batch.select([0, 1], copy=True), batch.select([0, 1], copy=True)
    first.set_random_state(3, 0)
    second.set_random_state(3, 0)  # the same random crops
    plain = sampler(window(first))
    fused = CropsFirst(window, sampler)(second)
    np.testing.assert_array_equal(fused.images, plain.images)  # NaN where NaN
    padded = np.isnan(fused.images.reshape(3, 16, 6, 6)).all(axis=(2, 3))
    assert padded.any(axis=1).all()  # every crop has padded slices
    assert fused.history == plain.history


def test_float_scans_windowed_to_uint8_run_in_the_written_order():
    # a window to uint8 refuses NaN wherever it lies: a NaN outside every crop still fails
    scan = np.full((12, 12, 12), -500.0, np.float32)
    scan[0, 0, 0] = np.nan
    ann = pd.DataFrame({"id": ["a"], "z": [8.0], "y": [8.0], "x": [8.0], "diameter": [2.0]})
    batch = cf.CTBatch.from_arrays([scan], ids=["a"], nodules=ann)
    pair = CropsFirst(NormalizeHU(dtype="uint8"), SampleNodules(1, (4, 4, 4), share=1.0))
    with pytest.raises(cf.InvalidScanError, match="NaN"):
        pair(batch)
    scan[0, 0, 0] = 0.0
    batch = cf.CTBatch.from_arrays([scan], ids=["a"], nodules=ann)
    crops = pair(batch)
    assert crops.images.dtype == np.uint8 and crops.images.shape == (4, 4, 4)
    assert [h["action"] for h in crops.history[0]][-2:] == ["normalize_hu", "sample_nodules"]


def test_under_skip_a_failing_item_fails_as_in_the_written_order():
    # the window to uint8 refuses the NaN scan: it alone is dropped, under normalize_hu's name,
    # and the other scans' crops are the ones the written order cuts
    from ctflow.actions.fusion import fuse
    from ctflow.execution import execute

    ann = pd.DataFrame({"id": ["a", "c"], "z": [6.0, 5.0], "y": [6.0, 5.0], "x": [6.0, 5.0],
                        "diameter": [2.0, 2.0]})  # fmt: skip
    scans = [np.linspace(-1100, 500, 12**3, dtype=np.float32).reshape(12, 12, 12) for _ in "abc"]
    scans[1][3, 3, 3] = np.nan
    actions = (NormalizeHU(dtype="uint8"), SampleNodules(5, (4, 4, 4), share=0.4))
    assert len(fuse(actions)) == 1
    outcomes = []
    for plan in (fuse(actions), actions):
        batch = cf.CTBatch.from_arrays([s.copy() for s in scans], ids=["a", "b", "c"], nodules=ann)
        outcomes.append(execute(batch, plan, seed=4, on_error="skip"))
    fused, plain = outcomes
    assert [f[0] for f in fused.failed] == ["b"]
    assert fused.failed == plain.failed and "normalize_hu" in fused.failed[0][1]
    assert fused.batch is not None and plain.batch is not None
    assert fused.batch.info == plain.batch.info
    np.testing.assert_array_equal(fused.batch.images, plain.batch.images)
