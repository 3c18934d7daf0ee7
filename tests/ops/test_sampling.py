"""Tests of ctflow.ops.sampling: crop plans checked against brute-force geometry.

The crop boxes and ``extract_crop`` (ctflow.ops.crop) are tested in tests/ops/test_crop.py.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from ctflow.errors import InvalidParameterError
from ctflow.ops.sampling import CropPlan, extract_crop, sample_crop_starts

SHAPES = [(40, 64, 64), (36, 64, 64), (40, 64, 64)]
CROP = np.array([16, 24, 24])
# nodules away from the borders: (item, centre voxel, radii voxels)
NODULES = [
    (0, (20.3, 30.6, 25.2), (2.0, 4.5, 4.5)),
    (0, (10.7, 50.1, 45.9), (1.5, 3.0, 3.0)),
    (1, (18.0, 32.0, 32.0), (3.0, 6.0, 6.0)),
    (2, (25.5, 20.4, 40.8), (1.0, 2.0, 2.5)),
]


def _arrays(nodules=NODULES):
    items = np.array([n[0] for n in nodules], dtype=np.int64)
    centres = np.array([n[1] for n in nodules], dtype=np.float64).reshape(-1, 3)
    radii = np.array([n[2] for n in nodules], dtype=np.float64).reshape(-1, 3)
    return centres, items, radii


def _boxes(centres, radii, shapes, items):
    """Voxels a nodule can occupy: centres within the radius per axis, and the centre voxel."""
    centre = np.floor(centres + 0.5)
    lo = np.minimum(np.ceil(centres - radii), centre)
    hi = np.maximum(np.floor(centres + radii), centre)
    n = np.array([shapes[i] for i in items]).reshape(-1, 3)
    return np.maximum(lo, 0).astype(int), np.minimum(hi, n - 1).astype(int)


def _plan(batch_size=40, share=0.5, variance=None, seed=0, shapes=SHAPES, nodules=NODULES, **kw):
    centres, items, radii = _arrays(nodules)
    return sample_crop_starts(
        shapes,
        centres,
        items,
        radii,
        batch_size=batch_size,
        crop_shape=kw.pop("crop_shape", CROP),
        share=share,
        variance=variance,
        rng=np.random.default_rng(seed),
        **kw,
    )


def _touches(start, crop, lo, hi):
    return bool(np.all((start <= hi) & (start + crop - 1 >= lo)))


def _check_plan_layout(plan: CropPlan):
    k = len(plan)
    assert plan.items.shape == (k,) and plan.items.dtype == np.int64
    assert plan.starts.shape == (k, 3) and plan.starts.dtype == np.int64
    assert plan.is_nodule.shape == (k,) and plan.is_nodule.dtype == bool
    assert plan.nodule_index.shape == (k,) and plan.nodule_index.dtype == np.int64
    assert np.all(plan.nodule_index[~plan.is_nodule] == -1)
    assert np.all(plan.nodule_index[plan.is_nodule] >= 0)
    # nodule crops first
    n_nod = int(plan.is_nodule.sum())
    assert plan.is_nodule[:n_nod].all()


def test_nodule_crops_contain_nodule_and_stay_near_it():
    variance = np.array([4.0, 9.0, 6.0])
    plan = _plan(batch_size=60, share=0.5, variance=variance, seed=3)
    _check_plan_layout(plan)
    assert plan.warnings == []
    assert int(plan.is_nodule.sum()) == 30 and len(plan) == 60
    centres, items, radii = _arrays()
    lo, hi = _boxes(centres, radii, SHAPES, items)
    for k in np.flatnonzero(plan.is_nodule):
        j = plan.nodule_index[k]
        st = plan.starts[k]
        assert plan.items[k] == items[j]
        assert np.all(st <= lo[j]) and np.all(st + CROP - 1 >= hi[j])  # whole box inside
        crop_centre = st + (CROP - 1) / 2
        assert np.all(np.abs(crop_centre - centres[j]) <= 4 * np.sqrt(variance) + 0.5)
        n = np.array(SHAPES[plan.items[k]])
        assert np.all(st >= 0) and np.all(st + CROP <= n)  # no padding needed
    # the jitter is really applied: one nodule gets crops at several positions
    chosen = plan.nodule_index[plan.is_nodule]
    most = np.bincount(chosen).argmax()
    assert len({tuple(s) for s in plan.starts[: len(chosen)][chosen == most]}) > 1
    # nodules are drawn among all of them
    assert set(chosen.tolist()) == set(range(len(NODULES)))


def test_no_variance_centres_exactly():
    plan = _plan(batch_size=12, share=1.0, variance=None, seed=1)
    centres, _, _ = _arrays()
    assert plan.is_nodule.all() and len(plan) == 12
    for k in range(len(plan)):
        c = centres[plan.nodule_index[k]]
        np.testing.assert_array_equal(plan.starts[k], np.floor(c - (CROP - 1) / 2 + 0.5))
        assert np.all(np.abs(plan.starts[k] + (CROP - 1) / 2 - c) <= 0.5)


def test_random_crops_avoid_nodules_and_lie_inside():
    plan = _plan(batch_size=200, share=0.25, variance=(2.0, 2.0, 2.0), seed=5)
    _check_plan_layout(plan)
    assert int(plan.is_nodule.sum()) == 50 and len(plan) == 200
    centres, items, radii = _arrays()
    lo, hi = _boxes(centres, radii, SHAPES, items)
    rand = np.flatnonzero(~plan.is_nodule)
    for k in rand:
        i, st = plan.items[k], plan.starts[k]
        assert np.all(st >= 0) and np.all(st + CROP <= np.array(SHAPES[i]))
        for j in np.flatnonzero(items == i):
            assert not _touches(st, CROP, lo[j], hi[j])
    assert set(plan.items[rand].tolist()) == {0, 1, 2}


def test_random_starts_are_uniform_over_all_free_starts():
    shapes = [(12, 14, 16)]
    crop = np.array([4, 5, 6])
    nodules = [(0, (5.2, 6.0, 7.7), (1.0, 1.5, 1.2)), (0, (1.0, 11.0, 2.0), (0.5, 0.5, 0.5))]
    centres, items, radii = _arrays(nodules)
    lo, hi = _boxes(centres, radii, shapes, items)
    valid = {
        s
        for s in itertools.product(*(range(n - c + 1) for n, c in zip(shapes[0], crop)))
        if not any(_touches(np.array(s), crop, lo[j], hi[j]) for j in range(len(nodules)))
    }
    n_draws = 30000
    plan = _plan(
        batch_size=n_draws, share=0.0, shapes=shapes, nodules=nodules, crop_shape=crop, seed=2
    )
    assert len(plan) == n_draws and not plan.is_nodule.any()
    drawn = [tuple(s) for s in plan.starts.tolist()]
    assert set(drawn) == valid  # every free start is reachable, nothing else is drawn
    counts = np.array(list(Counter(drawn).values()))
    expected = n_draws / len(valid)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    dof = len(valid) - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof)


def test_border_nodule_crops_are_shifted_inside():
    shapes = [(40, 64, 64)]
    nodules = [(0, (1.2, 2.0, 62.5), (1.0, 2.0, 2.0)), (0, (38.9, 60.0, 1.0), (2.0, 3.0, 3.0))]
    plan = _plan(batch_size=20, share=1.0, variance=(9.0, 9.0, 9.0), shapes=shapes, nodules=nodules)
    centres, items, radii = _arrays(nodules)
    lo, hi = _boxes(centres, radii, shapes, items)
    n = np.array(shapes[0])
    assert set(plan.nodule_index.tolist()) == {0, 1}
    for k in range(len(plan)):
        st, j = plan.starts[k], plan.nodule_index[k]
        assert np.all(st >= 0) and np.all(st + CROP <= n)
        assert np.all(st <= lo[j]) and np.all(st + CROP - 1 >= hi[j])
    # centred crops would have needed padding: they were moved
    assert np.any(np.floor(centres[0] - (CROP - 1) / 2 + 0.5) < 0)


def test_scan_smaller_than_crop_is_padded_around_whole_scan():
    shapes = [(10, 64, 64)]
    crop = np.array([16, 20, 20])
    nodules = [(0, (4.3, 30.0, 30.0), (1.5, 3.0, 3.0))]
    plan = _plan(
        batch_size=30,
        share=0.5,
        variance=(25.0, 4.0, 4.0),
        shapes=shapes,
        nodules=nodules,
        crop_shape=crop,
    )
    assert len(plan) == 30
    centres, items, radii = _arrays(nodules)
    lo, hi = _boxes(centres, radii, shapes, items)
    for k in range(len(plan)):
        st = plan.starts[k]
        # along z the crop covers the whole scan: start in [10 - 16, 0]
        assert -6 <= st[0] <= 0
        assert 0 <= st[1] <= 44 and 0 <= st[2] <= 44
        if plan.is_nodule[k]:
            assert np.all(st <= lo[0]) and np.all(st + crop - 1 >= hi[0])
        else:
            assert not _touches(st, crop, lo[0], hi[0])
    # extraction pads the missing slices
    vol = np.arange(10 * 64 * 64, dtype=np.int32).reshape(10, 64, 64)
    st = plan.starts[0]
    out = extract_crop(vol, st, crop, pad_value=-5)
    inside = slice(-st[0], -st[0] + 10)
    np.testing.assert_array_equal(out[inside], vol[:, st[1] : st[1] + 20, st[2] : st[2] + 20])
    assert np.all(np.delete(out, np.arange(16)[inside], axis=0) == -5)


def test_impossible_random_crops_warn_and_return_fewer():
    shapes = [(20, 20, 20)]
    crop = (12, 12, 12)
    nodules = [(0, (10.0, 10.0, 10.0), (3.0, 3.0, 3.0))]
    plan = _plan(batch_size=6, share=0.5, shapes=shapes, nodules=nodules, crop_shape=crop)
    assert len(plan) == 3 and plan.is_nodule.all()
    assert len(plan.warnings) == 1 and "no scan has room" in plan.warnings[0]
    # share=0: nothing at all can be returned
    empty = _plan(batch_size=4, share=0.0, shapes=shapes, nodules=nodules, crop_shape=crop)
    assert len(empty) == 0 and empty.starts.shape == (0, 3)
    assert "no scan has room" in empty.warnings[0]


def test_item_without_room_is_skipped_for_random_crops():
    shapes = [(20, 20, 20), (30, 40, 40)]
    nodules = [(0, (10.0, 10.0, 10.0), (3.0, 3.0, 3.0))]
    plan = _plan(batch_size=10, share=0.0, shapes=shapes, nodules=nodules, crop_shape=(12, 12, 12))
    assert len(plan) == 10 and set(plan.items.tolist()) == {1}
    assert any("items [0]" in w for w in plan.warnings)


def test_determinism_and_seed_dependence():
    a = _plan(batch_size=16, share=0.5, variance=(3.0, 3.0, 3.0), seed=11)
    b = _plan(batch_size=16, share=0.5, variance=(3.0, 3.0, 3.0), seed=11)
    c = _plan(batch_size=16, share=0.5, variance=(3.0, 3.0, 3.0), seed=12)
    for field in ("items", "starts", "is_nodule", "nodule_index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.warnings == b.warnings
    assert not np.array_equal(a.starts, c.starts)


def test_share_zero_and_one_and_rounding():
    zero = _plan(batch_size=7, share=0.0)
    assert len(zero) == 7 and not zero.is_nodule.any() and zero.warnings == []
    one = _plan(batch_size=7, share=1.0)
    assert len(one) == 7 and one.is_nodule.all() and one.warnings == []
    half = _plan(batch_size=5, share=0.5)  # 2.5 rounds up
    assert int(half.is_nodule.sum()) == 3 and len(half) == 5
    assert int(_plan(batch_size=10, share=0.33).is_nodule.sum()) == 3


def test_no_nodules_gives_random_crops_with_warning():
    plan = _plan(batch_size=5, share=0.6, nodules=[])
    assert len(plan) == 5 and not plan.is_nodule.any()
    assert len(plan.warnings) == 1 and "no nodule" in plan.warnings[0]
    quiet = _plan(batch_size=5, share=0.0, nodules=[])
    assert len(quiet) == 5 and quiet.warnings == []


def test_nodule_outside_scan_is_never_sampled():
    nodules = [*NODULES, (1, (-30.0, 10.0, 10.0), (2.0, 2.0, 2.0))]
    plan = _plan(batch_size=40, share=1.0, nodules=nodules)
    assert 4 not in plan.nodule_index.tolist()
    assert any("nodules [4]" in w for w in plan.warnings)


def test_nodule_larger_than_crop_warns_and_crop_lies_in_it():
    nodules = [(0, (20.0, 32.0, 32.0), (10.0, 5.0, 5.0))]  # 21 slices > crop 16
    plan = _plan(batch_size=8, share=1.0, variance=(16.0, 1.0, 1.0), nodules=nodules)
    assert any("more than the crop" in w for w in plan.warnings)
    centres, items, radii = _arrays(nodules)
    lo, hi = _boxes(centres, radii, SHAPES, items)
    for st in plan.starts:
        assert lo[0, 0] <= st[0] and st[0] + CROP[0] - 1 <= hi[0, 0]
        assert st[1] <= lo[0, 1] and st[1] + CROP[1] - 1 >= hi[0, 1]


def test_histo_draws_centres_from_the_histogram():
    shapes = [(40, 64, 64)]
    nodules = [(0, (30.0, 40.0, 40.0), (2.0, 3.0, 3.0))]
    rng = np.random.default_rng(0)
    points = rng.uniform([0.5, 0.0, 0.6], [0.75, 0.25, 0.9], size=(500, 3))
    histo = np.histogramdd(points, bins=(4, 4, 5), range=[(0, 1), (0, 1), (0, 1)])
    plan = _plan(
        batch_size=50, share=0.0, shapes=shapes, nodules=nodules, crop_shape=(8, 8, 8), histo=histo
    )
    assert len(plan) == 50 and plan.warnings == []
    n = np.array(shapes[0])
    centre = plan.starts + 3.5  # crop centre, voxels
    rel = (centre + 0.5) / n
    # the histogram's support is [0.5, 0.75] x [0, 0.25] x [0.6, 0.8 or 1.0] (bins are 0.2 wide
    # in x): allow half a voxel of rounding, and the shift inside the scan along y
    assert np.all((rel[:, 0] >= 0.5 - 0.5 / n[0]) & (rel[:, 0] <= 0.75 + 0.5 / n[0]))
    assert np.all(rel[:, 1] <= max(0.25 + 0.5 / n[1], 4.0 / n[1]))
    assert np.all((rel[:, 2] >= 0.6 - 0.5 / n[2]) & (rel[:, 2] <= 1.0))
    lo, hi = _boxes(*_arrays(nodules)[::2], shapes, [0])
    for st in plan.starts:
        assert not _touches(st, np.array([8, 8, 8]), lo[0], hi[0])


def test_histo_relative_coordinates_are_voxel_cells():
    # relative coordinate p covers voxel v when v / n <= p < (v + 1) / n: a one-voxel bin
    # pins the crop centre to that voxel (odd crop), shifted inside the scan when needed
    shapes = [(40, 64, 64)]
    counts = np.ones((1, 1, 1))
    edges = [np.array([10, 11]) / 40, np.array([0, 1]) / 64, np.array([50, 51]) / 64]
    plan = _plan(
        batch_size=30,
        share=0.0,
        shapes=shapes,
        nodules=[],
        crop_shape=(9, 9, 9),
        histo=(counts, edges),
    )
    assert len(plan) == 30
    centres = plan.starts + 4
    assert np.all(centres[:, 0] == 10)
    assert np.all(centres[:, 1] == 4)  # voxel 0, shifted inside: start 0
    assert np.all(centres[:, 2] == 50)


def test_histo_on_the_nodule_only_warns():
    shapes = [(40, 64, 64)]
    nodules = [(0, (20.0, 32.0, 32.0), (3.0, 6.0, 6.0))]
    counts = np.zeros((3, 3, 3))
    counts[1, 1, 1] = 1.0  # all mass in the middle ninth, where the nodule is
    edges = [np.array([0.0, 0.4, 0.6, 1.0])] * 3
    plan = _plan(
        batch_size=4,
        share=0.5,
        shapes=shapes,
        nodules=nodules,
        crop_shape=(8, 8, 8),
        histo=(counts, edges),
        max_tries=20,
    )
    assert len(plan) == 2 and plan.is_nodule.all()
    assert any("2 of 2 random crops" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": -3}, "batch_size must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"crop_shape": (0, 8, 8)}, "crop_shape must be 3 positive integers"),
        ({"crop_shape": (8, 8)}, "crop_shape must be 3 positive integers"),
        ({"crop_shape": (8.5, 8, 8)}, "crop_shape must be 3 positive integers"),
        ({"share": -0.1}, r"share must be a finite number in \[0, 1\]"),
        ({"share": 1.5}, r"share must be a finite number in \[0, 1\]"),
        ({"share": float("nan")}, r"share must be a finite number in \[0, 1\]"),
        ({"share": "half"}, r"share must be a finite number in \[0, 1\]"),
        ({"variance": (-1.0, 1.0, 1.0)}, "variance must be None or 3 finite floats >= 0"),
        ({"variance": (1.0, 1.0)}, "variance must be None or 3 finite floats >= 0"),
        ({"max_tries": 0}, "max_tries must be an integer >= 1"),
        ({"histo": "x"}, "histo must be"),
        ({"histo": (np.zeros((2, 2, 2)), [np.linspace(0, 1, 3)] * 3)}, "sum 0"),
        ({"histo": (np.ones((2, 2, 2)), [np.linspace(0, 1, 4)] * 3)}, r"edges\[0\]"),
        ({"histo": (np.ones((2, 2)), [np.linspace(0, 1, 3)] * 2)}, "histo must be"),
    ],
)
def test_parameter_errors(kwargs, match):
    args = {"batch_size": 4, "share": 0.5, "variance": None}
    args.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        _plan(**args)


def test_input_array_errors():
    centres, items, radii = _arrays()
    common = {"batch_size": 2, "crop_shape": CROP, "share": 0.5, "variance": None}
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidParameterError, match="shapes must be a non-empty list"):
        sample_crop_starts([], centres, items, radii, rng=rng, **common)
    with pytest.raises(InvalidParameterError, match=r"shapes\[1\]"):
        sample_crop_starts([(4, 4, 4), (4, 0, 4)], centres[:0], [], radii[:0], rng=rng, **common)
    with pytest.raises(InvalidParameterError, match=r"nodule_items must be integer item indices"):
        sample_crop_starts(SHAPES[:2], centres, items, radii, rng=rng, **common)  # item 2
    with pytest.raises(InvalidParameterError, match=r"nodule_radii_vox must have shape \(4, 3\)"):
        sample_crop_starts(SHAPES, centres, items, radii[:3], rng=rng, **common)
    with pytest.raises(InvalidParameterError, match=r"nodule_voxels must be an \(M, 3\)"):
        sample_crop_starts(SHAPES, centres[:, :2], items, radii, rng=rng, **common)
    with pytest.raises(InvalidParameterError, match="nodule_voxels must be finite"):
        bad = centres.copy()
        bad[0, 0] = np.nan
        sample_crop_starts(SHAPES, bad, items, radii, rng=rng, **common)
    with pytest.raises(InvalidParameterError, match=r"rng must be a numpy\.random\.Generator"):
        sample_crop_starts(SHAPES, centres, items, radii, rng=0, **common)  # type: ignore[arg-type]
