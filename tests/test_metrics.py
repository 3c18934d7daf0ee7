"""Metrics against independent references: numpy set sizes, brute-force surface distances, and
hand-computed FROC cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

import ctflow as cf
from ctflow.metrics import FROC_RATES, dice, froc, hausdorff95


def _blobs(seed: int, shape=(12, 20, 18)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.normal(size=shape), 2.0)
    labels = np.zeros(shape, np.uint8)
    labels[smooth > 0.05] = 1
    labels[smooth > 0.15] = 2
    labels[(smooth < -0.12)] = 5
    return labels


def test_dice_equals_set_counts_for_every_label():
    a, b = _blobs(1), _blobs(2)
    got = dice(a, b)
    assert set(got) == {1, 2, 5}
    for label, value in got.items():
        pa, pb = a == label, b == label
        want = 2 * np.logical_and(pa, pb).sum() / (pa.sum() + pb.sum())
        assert value == pytest.approx(want, abs=1e-12)
    assert dice(a, a) == {1: 1.0, 2: 1.0, 5: 1.0}
    both_empty = dice(a, b, labels=[7])
    assert math.isnan(both_empty[7])
    assert dice(a, np.zeros_like(a), labels=[1])[1] == 0.0
    assert 0 in dice(a, b, background=True)


def _brute_hd(pred, ref, spacing, q):
    def surface_mm(mask):
        er = ndi.binary_erosion(mask, ndi.generate_binary_structure(3, 1), border_value=0)
        return np.argwhere(mask & ~er) * np.asarray(spacing)

    ps, rs = surface_mm(pred), surface_mm(ref)
    d = cdist(ps, rs)
    return max(np.percentile(d.min(axis=1), q), np.percentile(d.min(axis=0), q))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.8)])
def test_hausdorff95_equals_brute_force_surface_distances_in_mm(spacing):
    a, b = _blobs(3), _blobs(4)
    got = hausdorff95(a, b, spacing)
    for label in (1, 2, 5):
        want = _brute_hd(a == label, b == label, spacing, 95.0)
        assert got[label] == pytest.approx(want, rel=1e-9, abs=1e-9), label
    full = hausdorff95(a, b, spacing, labels=[1], percentile=100)[1]
    assert full == pytest.approx(_brute_hd(a == 1, b == 1, spacing, 100.0))
    assert hausdorff95(a, a, spacing)[2] == 0.0
    assert math.isinf(hausdorff95(a, np.zeros_like(a), spacing, labels=[1])[1])
    assert math.isnan(hausdorff95(a, b, spacing, labels=[9])[9])


def test_a_shifted_cube_is_off_by_the_shift_in_mm():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[3:7, 3:7, 3:7] = 1
    pred = np.roll(ref, 2, axis=2)
    # every surface point of the shifted cube is at most 2 voxels x 0.5 mm from the other one
    assert hausdorff95(pred, ref, (3.0, 3.0, 0.5), percentile=100)[1] == pytest.approx(1.0)


def test_metrics_refuse_probabilities_and_mismatched_shapes():
    with pytest.raises(cf.InvalidParameterError, match="integer labels"):
        dice(np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(cf.InvalidParameterError, match="same shape"):
        dice(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8))


def _nodules():
    return pd.DataFrame(
        {
            "id": ["s1", "s1", "s2", "s3"],
            "z": [0.0, 100.0, 0.0, 0.0],
            "y": [0.0, 0.0, 0.0, 0.0],
            "x": [0.0, 0.0, 0.0, 0.0],
            "diameter": [10.0, 6.0, 8.0, 20.0],
        }
    )


def test_froc_by_hand():
    cand = pd.DataFrame(
        {
            "id": ["s1", "s1", "s1", "s2", "s2", "s4", "s1"],
            "z": [1.0, 2.0, 103.5, 50.0, 3.9, 0.0, 4.9],
            "y": 0.0,
            "x": 0.0,
            "probability": [0.9, 0.5, 0.6, 0.8, 0.4, 0.7, 0.95],
        }
    )
    # hits: s1 nodule 1 by 0.9, 0.5 and 0.95 (4.9 mm from a 5 mm radius); s1 nodule 2 by none
    # (3.5 mm > 3 mm); s2 nodule by 0.4 (3.9 <= 4); s3 never. FPs: 0.6 (s1), 0.8 (s2), 0.7 (s4)
    res = froc(cand, _nodules(), ["s1", "s2", "s3", "s4"])
    assert res.n_nodules == 4 and res.n_scans == 4 and res.n_false_positives == 3
    # thresholds high -> low: 0.95: 1 found, 0 FP | 0.9 | 0.8: +FP | 0.7: +FP | 0.6: +FP |
    # 0.5 | 0.4: 2 found
    curve = dict(zip(np.round(res.fps_per_scan, 4), np.round(res.sensitivity, 4), strict=False))
    assert res.sensitivity.max() == 0.5 and res.fps_per_scan.max() == 0.75
    assert curve[0.0] == 0.25  # before any FP only the s1 nodule at 0.95
    expected = np.interp(FROC_RATES, res.fps_per_scan, res.sensitivity)
    np.testing.assert_allclose(res.sensitivities, expected)
    # at 1/8 FP per scan (0.125) the curve has not reached its first FP yet: 0.25
    assert res.sensitivities[0] == pytest.approx(0.25 + (0.25 - 0.25) * 0.5)
    assert res.sensitivities[-1] == 0.5 and res.cpm == pytest.approx(res.sensitivities.mean())


def test_froc_ignores_excluded_findings_and_counts_each_nodule_once():
    nod = _nodules()
    excluded = pd.DataFrame({"id": ["s4"], "z": [0.0], "y": [0.0], "x": [0.0], "diameter": [-1]})
    cand = pd.DataFrame(
        {
            "id": ["s1", "s1", "s1", "s4"],
            "z": [0.0, 0.5, 1.0, 0.0],
            "y": 0.0,
            "x": 0.0,
            "probability": [0.9, 0.8, 0.7, 0.99],
        }
    )
    res = froc(cand, nod, ["s1", "s2", "s3", "s4"], excluded=excluded)
    assert res.n_false_positives == 0  # the s4 candidate sits on an excluded finding
    assert res.sensitivity.max() == 0.25  # three hits on one nodule count once
    luna = cand.rename(columns={"id": "seriesuid", "x": "coordX", "y": "coordY", "z": "coordZ"})
    assert froc(luna, nod, ["s1", "s2", "s3", "s4"], excluded=excluded).cpm == res.cpm


def test_froc_a_candidate_exactly_at_the_radius_misses_as_in_luna16():
    # LUNA16's script hits when the squared distance is strictly below the squared radius
    nod = pd.DataFrame({"id": ["a", "b"], "z": 0.0, "y": 0.0, "x": 0.0, "diameter": [10.0, 10.0]})
    excluded = pd.DataFrame({"id": ["c"], "z": [0.0], "y": [0.0], "x": [0.0], "diameter": [-1]})
    cand = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            # a: (3, 4, 0) is exactly 5 mm (9 + 16 = 25 = 5²) from a 5 mm radius: a miss;
            # b: 4.999 mm, just inside: a hit; c: exactly on the 5 mm radius of the excluded
            # finding (diameter -1 -> 10 mm): not ignored, a false positive
            "z": [3.0, 0.0, 0.0],
            "y": [4.0, 0.0, 5.0],
            "x": [0.0, 4.999, 0.0],
            "probability": [0.9, 0.8, 0.7],
        }
    )
    res = froc(cand, nod, ["a", "b", "c"], excluded=excluded)
    assert res.n_nodules == 2 and res.n_false_positives == 2
    # thresholds high -> low: 0.9: 1 FP (1/3 per scan), none found | 0.8: b found (0.5) |
    # 0.7: 2 FP (2/3 per scan)
    np.testing.assert_allclose(res.fps_per_scan, [0.0, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(res.sensitivity, [0.0, 0.0, 0.5, 0.5])
    # rates 1/8 and 1/4 lie before the first find; 1/2 .. 8 after it
    np.testing.assert_allclose(res.sensitivities, [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert res.cpm == pytest.approx(2.5 / 7)
