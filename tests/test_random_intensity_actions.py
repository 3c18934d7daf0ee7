"""The random intensity actions: checked when written, p, seeds, threads, records and replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ctflow as cf
from ctflow.actions import ACTIONS
from ctflow.actions.augmentation_intensity import (
    RandomBiasField,
    RandomBlur,
    RandomContrast,
    RandomGamma,
    RandomNoise,
)
from ctflow.actions.base import action_from_record
from ctflow.ops.intensity_random import (
    add_hu_noise,
    adjust_contrast,
    adjust_gamma,
    apply_bias_field,
    gaussian_blur,
)

SHAPES = [(6, 20, 24), (9, 20, 24), (5, 20, 24)]
SPACINGS = [(2.5, 0.7, 0.7), (1.0, 0.8, 0.8), (1.25, 0.6, 0.9)]

#: one instance of every action, with non-default parameters, as pytest ids
ACTIONS_UNDER_TEST = {
    "random_gamma": RandomGamma(log_gamma=0.4, hu_range=(-1100.0, 500.0)),
    "random_contrast": RandomContrast(factor=(0.6, 1.4), shift_hu=80.0, window=(-1000, 200)),
    "random_blur": RandomBlur(std_mm=(0.2, 1.5)),
    "random_bias_field": RandomBiasField(coefficients=(-0.3, 0.4), order=2),
    "random_noise": RandomNoise(std_hu=(5.0, 30.0)),
    "random_noise_lowdose": RandomNoise(std_hu=20.0, kind="lowdose"),
}


def _arrays(seed=3):
    rng = np.random.default_rng(seed)
    values = np.array([-2048, -1000, -850, -100, 0, 60, 400, 1200], np.int16)
    return [rng.choice(values, size=s).astype(np.int16) for s in SHAPES]


def _masks():
    return [(np.indices(s).sum(axis=0) % 3 == 0).astype(np.uint8) for s in SHAPES]


def _batch(n_workers=None, arrays=None, masks=True, seed=11):
    arrays = _arrays() if arrays is None else arrays
    b = cf.CTBatch.from_arrays(
        arrays,
        ids=[f"s{i}" for i in range(len(arrays))],
        spacing=SPACINGS[: len(arrays)],
        masks=_masks()[: len(arrays)] if masks else None,
        n_workers=n_workers,
    )
    b.set_random_state(seed, 0)
    return b


def _images(batch):
    return [batch[i].images.copy() for i in range(len(batch))]


# -- construction -------------------------------------------------------------------------------
BAD_VALUES = [
    (RandomGamma, {"log_gamma": (0.3, -0.3)}, "random_gamma: log_gamma must be a number d >= 0"),
    (RandomGamma, {"log_gamma": -0.3}, "random_gamma: log_gamma must be"),
    (RandomGamma, {"log_gamma": "big"}, "random_gamma: log_gamma must be"),
    (RandomGamma, {"hu_range": (400, -1000)}, "random_gamma: hu_range must be two finite"),
    (RandomGamma, {"hu_range": 400}, "random_gamma: hu_range must be two finite"),
    (RandomGamma, {"p": 1.5}, r"random_gamma: p must be a finite number in \[0, 1\]"),
    (RandomGamma, {"p": float("nan")}, "random_gamma: p must be"),
    (RandomContrast, {"factor": 1.2}, "random_contrast: factor must be two finite numbers"),
    (RandomContrast, {"factor": (0.0, 1.0)}, "random_contrast: factor must be .* low > 0"),
    (RandomContrast, {"factor": (1.3, 1.2)}, "random_contrast: factor must be"),
    (RandomContrast, {"shift_hu": (10, float("inf"))}, "random_contrast: shift_hu must be"),
    (RandomContrast, {"window": (0, 0)}, "random_contrast: window must be two finite numbers"),
    (RandomContrast, {"p": -0.1}, "random_contrast: p must be"),
    (RandomBlur, {"std_mm": -1.0}, "random_blur: std_mm must be a number d >= 0"),
    (RandomBlur, {"std_mm": (-0.5, 1.0)}, "random_blur: std_mm must be .* low >= 0"),
    (RandomBlur, {"std_mm": (1.0, 2.0, 3.0)}, "random_blur: std_mm must be"),
    (RandomBlur, {"p": "always"}, "random_blur: p must be"),
    (RandomBiasField, {"coefficients": -0.5}, "random_bias_field: coefficients must be"),
    (RandomBiasField, {"order": 2.0}, "random_bias_field: order must be an integer in"),
    (RandomBiasField, {"order": -1}, "random_bias_field: order must be an integer in"),
    (RandomBiasField, {"order": 11}, "random_bias_field: order must be an integer in"),
    (RandomBiasField, {"p": True}, "random_bias_field: p must be"),
    (RandomNoise, {"std_hu": (-1.0, 5.0)}, "random_noise: std_hu must be"),
    (RandomNoise, {"std_hu": (5.0, 1.0)}, "random_noise: std_hu must be"),
    (RandomNoise, {"kind": "poisson"}, "random_noise: kind must be one of 'gaussian', 'lowdose'"),
    (RandomNoise, {"p": 2}, "random_noise: p must be"),
]


@pytest.mark.parametrize(("cls", "kwargs", "match"), BAD_VALUES)
def test_bad_values_are_refused_at_construction(cls, kwargs, match):
    with pytest.raises(cf.InvalidParameterError, match=match):
        cls(**kwargs)
    with pytest.raises(cf.InvalidParameterError, match=match):
        ACTIONS[cls.name](**kwargs)


def test_ranges_are_normalised_to_pairs_of_floats():
    assert RandomGamma(log_gamma=0.2).log_gamma == (-0.2, 0.2)
    assert RandomContrast(shift_hu=30).shift_hu == (-30.0, 30.0)
    assert RandomBlur(std_mm=2).std_mm == (0.0, 2.0)
    assert RandomNoise(std_hu=np.float32(10)).std_hu == (0.0, 10.0)
    assert RandomBiasField(coefficients=0.25).coefficients == (-0.25, 0.25)
    assert RandomContrast(factor=[1, 2], window=[-500, 500]).factor == (1.0, 2.0)
    assert RandomGamma(p=1).p == 1.0


def test_names_family_and_defaults():
    assert {a.name for a in ACTIONS_UNDER_TEST.values()} <= set(ACTIONS)
    for cls in (RandomGamma, RandomContrast, RandomBlur, RandomBiasField, RandomNoise):
        assert cls.family == "augmentation"
        assert cls().p == 1.0
    assert RandomGamma().log_gamma == (-0.3, 0.3)
    assert RandomContrast().factor == (0.75, 1.25)
    assert RandomBiasField().order == 3


# -- p ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ACTIONS_UNDER_TEST))
def test_p_zero_is_the_identity(name):
    action = ACTIONS_UNDER_TEST[name]
    never = type(action)(**{**action.arguments(), "p": 0.0})
    b = _batch()
    before = _images(b)
    out = never(b)
    for i, arr in enumerate(before):
        assert out[i].images.dtype == np.int16  # not even converted
        np.testing.assert_array_equal(out[i].images, arr)
        assert out.history[i][-1]["params"] == {"applied": False}
        assert out.history[i][-1]["action"] == action.name


def test_p_applies_to_a_fraction_of_items():
    arrays = [np.zeros((2, 4, 4), np.int16) for _ in range(200)]
    b = cf.CTBatch.from_arrays(arrays)
    b.set_random_state(5, 0)
    out = RandomContrast(factor=(1.0, 1.0), shift_hu=(100.0, 100.0), p=0.3)(b)
    applied = [h[-1]["params"]["applied"] for h in out.history]
    assert 40 <= sum(applied) <= 80
    assert out.images.dtype == np.float32  # mixed items: stored as float32
    for i, was in enumerate(applied):
        assert float(out[i].images[0, 0, 0]) == (100.0 if was else 0.0)


# -- determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ACTIONS_UNDER_TEST))
def test_same_seed_same_output_whatever_the_workers(name):
    action = ACTIONS_UNDER_TEST[name]
    results = []
    for workers in (1, 2, 3):
        out = action(_batch(n_workers=workers))
        results.append((_images(out), out.history))
    for images, history in results[1:]:
        assert history == results[0][1]
        for a, b in zip(images, results[0][0], strict=True):
            np.testing.assert_array_equal(a, b)
    single = [action(_batch(n_workers=w, arrays=_arrays()[:1])) for w in (1, 2)]  # kernel threads
    np.testing.assert_array_equal(single[0][0].images, single[1][0].images)


@pytest.mark.parametrize("name", list(ACTIONS_UNDER_TEST))
def test_other_seeds_other_draws(name):
    action = ACTIONS_UNDER_TEST[name]
    a = action(_batch(seed=1)).history
    b = action(_batch(seed=2)).history
    assert [h[-1]["params"] for h in a] != [h[-1]["params"] for h in b]
    items = [h[-1]["params"] for h in a]
    assert items[0] != items[1]  # each item draws its own


# -- records and replay -------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ACTIONS_UNDER_TEST))
def test_record_is_json_and_replays_to_the_same_images(name):
    action = ACTIONS_UNDER_TEST[name]
    out = action(_batch())
    arrays = _arrays()
    for i in range(len(out)):
        entry = out.history[i][-1]
        assert json.loads(json.dumps(entry, allow_nan=False)) == entry
        assert entry["params"]["applied"] is True
        assert action_from_record(entry) == action
        fresh = cf.CTBatch.from_arrays([arrays[i]], ids=[f"s{i}"], spacing=SPACINGS[i])
        again = cf.replay(out.history[i], fresh)
        np.testing.assert_array_equal(again[0].images, out[i].images)


def test_replay_of_a_skipped_item_is_the_identity():
    out = RandomGamma(p=0.0)(_batch())
    fresh = cf.CTBatch.from_arrays([_arrays()[0]], ids=["s0"], spacing=SPACINGS[0])
    again = cf.replay(out.history[0], fresh)
    np.testing.assert_array_equal(again[0].images, _arrays()[0])


# -- what the actions change ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ACTIONS_UNDER_TEST))
def test_images_become_float32_and_masks_and_lungs_stay(name):
    action = ACTIONS_UNDER_TEST[name]
    b = _batch()
    b.lungs = b.masks.copy()
    masks = [m.copy() for m in _masks()]
    out = action(b)
    assert out.images.dtype == np.float32
    for i in range(len(out)):
        assert out[i].images.dtype == np.float32
        assert not np.array_equal(out[i].images, _arrays()[i])
        np.testing.assert_array_equal(out[i].masks, masks[i])
        np.testing.assert_array_equal(out[i].lungs, masks[i])
    assert out.masks.dtype == np.uint8


def test_each_action_applies_its_op_with_the_recorded_parameters():
    arrays = _arrays()
    cases = [
        (
            RandomGamma(hu_range=(-1000, 300)),
            lambda im, p, sp: adjust_gamma(im, p["gamma"], (-1000, 300)),
        ),
        (
            RandomContrast(window=(-1200, 300)),
            lambda im, p, sp: adjust_contrast(im, p["factor"], p["shift_hu"], (-1200, 300)),
        ),
        (RandomBlur(std_mm=(0.5, 2.0)), lambda im, p, sp: gaussian_blur(im, p["std_mm"], sp)),
        (
            RandomBiasField(order=3),
            lambda im, p, sp: apply_bias_field(im, p["coefficients"], 3),
        ),
        (
            RandomNoise(kind="lowdose"),
            lambda im, p, sp: add_hu_noise(
                im, p["std_hu"], np.random.default_rng(p["seed"]), kind="lowdose"
            ),
        ),
    ]
    for action, op in cases:
        out = action(_batch())
        for i in range(len(out)):
            params = out.history[i][-1]["params"]
            ref = op(arrays[i], params, SPACINGS[i])
            np.testing.assert_array_equal(out[i].images, ref, err_msg=action.name)


def test_drawn_parameters_lie_in_their_ranges():
    n = 64
    b = cf.CTBatch.from_arrays([np.zeros((1, 2, 2), np.int16)] * n)
    b.set_random_state(0, 0)
    gam = [h[-1]["params"] for h in RandomGamma(log_gamma=(-0.2, 0.5))(b).history]
    assert all(np.exp(-0.2) <= p["gamma"] <= np.exp(0.5) for p in gam)
    b = cf.CTBatch.from_arrays([np.zeros((1, 2, 2), np.int16)] * n)
    con = [h[-1]["params"] for h in RandomContrast((0.9, 1.1), 10)(b).history]
    assert all(0.9 <= p["factor"] <= 1.1 and -10 <= p["shift_hu"] <= 10 for p in con)
    b = cf.CTBatch.from_arrays([np.zeros((1, 2, 2), np.int16)] * n)
    blur = [h[-1]["params"]["std_mm"] for h in RandomBlur(std_mm=(0.5, 0.7))(b).history]
    assert all(len(s) == 3 and all(0.5 <= v <= 0.7 for v in s) for s in blur)
    b = cf.CTBatch.from_arrays([np.zeros((1, 2, 2), np.int16)] * n)
    bias = [h[-1]["params"]["coefficients"] for h in RandomBiasField(0.1, order=1)(b).history]
    assert all(len(c) == 4 and all(-0.1 <= v <= 0.1 for v in c) for c in bias)
    b = cf.CTBatch.from_arrays([np.zeros((1, 2, 2), np.int16)] * n)
    noise = [h[-1]["params"] for h in RandomNoise(std_hu=(2.0, 3.0))(b).history]
    assert all(2.0 <= p["std_hu"] <= 3.0 and isinstance(p["seed"], int) for p in noise)
    assert len({p["seed"] for p in noise}) == n


def test_blur_uses_each_items_spacing():
    img = np.zeros((9, 9, 9), np.int16)
    img[4, 4, 4] = 1000
    b = cf.CTBatch.from_arrays([img, img], spacing=[(1.0, 1.0, 1.0), (2.0, 0.5, 0.5)])
    b.set_random_state(0, 0)
    out = RandomBlur(std_mm=(1.0, 1.0))(b)
    assert out.history[0][-1]["params"]["std_mm"] == [1.0, 1.0, 1.0]
    # the same mm blur covers twice the voxels in-plane and half along z on the second item
    ref0 = gaussian_blur(img, 1.0)
    ref1 = gaussian_blur(img, (0.5, 2.0, 2.0))
    np.testing.assert_array_equal(out[0].images, ref0)
    np.testing.assert_array_equal(out[1].images, ref1)


def test_actions_run_in_a_pipeline_file(tmp_path):
    from ctflow.config import read_pipeline_file

    text = (
        '[[actions]]\nname = "random_gamma"\nlog_gamma = [-0.1, 0.2]\np = 0.5\n\n'
        '[[actions]]\nname = "random_noise"\nstd_hu = 10\nkind = "lowdose"\n'
    )
    (tmp_path / "p.toml").write_text(text)
    spec = read_pipeline_file(tmp_path / "p.toml", need_sources=False)
    assert spec.pipeline.actions == (
        RandomGamma(log_gamma=(-0.1, 0.2), p=0.5),
        RandomNoise(std_hu=(0.0, 10.0), kind="lowdose"),
    )
