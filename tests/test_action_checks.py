"""Limits that only the ops checked, when an action ran, are refused when the action is written.

Each case was accepted by the action's constructor and refused by the op it calls once a scan
had been read (or, for ``random_gamma``, failed while drawing). Now the constructor refuses it
with an InvalidParameterError naming the action and the parameter — from Python and from a
pipeline file, where the message names the file and the action's line. The op-level checks stay
(the ops are public functions too); values at the edge of each limit are still accepted and run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import ctflow as cf
from ctflow.actions import ACTIONS
from ctflow.config import read_pipeline_file
from ctflow.errors import InvalidParameterError

#: (action, arguments, the message's start): each was refused only when the action ran
MOVED = [
    ("segment", {"threshold": 0}, "segment: threshold must be a finite number in [-900, -100]"),
    ("segment", {"threshold": -950}, "segment: threshold must be a finite number in [-900, -100]"),
    ("segment", {"closing_mm": 51}, "segment: closing_mm must be a finite number in [0, 50]"),
    ("segment", {"min_lung_ml": 2e6}, "segment: min_lung_ml must be a finite number in [0, 1e+06]"),
    (
        "get_patches",
        {"shape": [4, 4, 4], "stride": [8, 4, 4]},
        "get_patches: stride must be at most the patch shape (4, 4, 4)",
    ),
    ("get_patches", {"shape": 4, "stride": 5}, "get_patches: stride must be at most the patch"),
    (
        "random_elastic",
        {"locked_borders": 3},
        "random_elastic: locked_borders must be an integer in [0, 2]",
    ),
    ("rotate", {"angle": 10, "dtype": "uint8"}, "rotate: cval must be in [0, 255] for dtype uint8"),
    ("rotate", {"angle": 10, "dtype": "int8", "cval": 200}, "rotate: cval must be in [-128, 127]"),
    (
        "random_affine",
        {"dtype": "uint8"},
        "random_affine: cval must be in [0, 255] for dtype uint8",
    ),
    ("random_elastic", {"dtype": "uint16"}, "random_elastic: cval must be in [0, 65535]"),
    ("invert", {"dtype": "uint8"}, "invert: cval must be in [0, 255] for dtype uint8"),
    (
        "unify_spacing",
        {"padding": "constant", "dtype": "uint8"},
        "unify_spacing: dtype must be one that holds the padding value -1000",
    ),
    ("random_gamma", {"log_gamma": 800}, "random_gamma: log_gamma must be within [-88, 88]"),
    ("random_gamma", {"log_gamma": [-800, 0]}, "random_gamma: log_gamma must be within [-88, 88]"),
    ("argmax", {"values": [0, 70000]}, "argmax: values must be an integer in [0, 65535]"),
    ("one_hot", {"values": [0, 70000]}, "one_hot: values must be an integer in [0, 65535]"),
]


def _id(case: tuple[str, dict[str, object], str]) -> str:
    return f"{case[0]}-{'-'.join(case[1])}"


@pytest.mark.parametrize(("name", "kwargs", "message"), MOVED, ids=[_id(c) for c in MOVED])
def test_a_limit_the_op_checks_is_refused_when_the_pipeline_is_written(name, kwargs, message):
    with pytest.raises(InvalidParameterError) as info:
        getattr(cf.Pipeline().load(), name)(**kwargs)
    assert str(info.value).startswith(message)
    with pytest.raises(InvalidParameterError) as info:
        ACTIONS[name](**kwargs)
    assert str(info.value).startswith(message)


def _toml_value(value):
    return json.dumps(value)  # TOML accepts JSON's numbers, strings and arrays


@pytest.mark.parametrize(("name", "kwargs", "message"), MOVED, ids=[_id(c) for c in MOVED])
def test_a_limit_in_a_pipeline_file_names_the_line_before_any_scan_is_read(
    tmp_path, name, kwargs, message
):
    lines = ["[dataset]", 'paths = ["never_read.mhd"]', "", "[[actions]]", 'name = "load"', ""]
    lines += ["[[actions]]", f'name = "{name}"']
    lines += [f"{k} = {_toml_value(v)}" for k, v in kwargs.items()]
    (tmp_path / "p.toml").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidParameterError) as info:
        read_pipeline_file(tmp_path / "p.toml")
    text = str(info.value)
    assert f"p.toml:7: action #2 '{name}': {message}" in text


def _double(x):
    return x * 2.0


@pytest.mark.parametrize("stride", [(5, 4, 4), 5, (4, 4, 8)])
def test_predict_on_scan_refuses_a_stride_larger_than_the_patch_when_written(stride):
    # fn is a Python callable, so predict_on_scan cannot come from a pipeline file
    message = "predict_on_scan: stride must be at most the patch shape (4, 4, 4)"
    with pytest.raises(InvalidParameterError) as info:
        cf.Pipeline().load().predict_on_scan(_double, (4, 4, 4), stride)
    assert str(info.value).startswith(message)
    with pytest.raises(InvalidParameterError) as info:
        ACTIONS["predict_on_scan"](_double, (4, 4, 4), stride)
    assert str(info.value).startswith(message)


def test_the_ops_still_refuse_the_same_values():
    from ctflow.geometry import Geometry
    from ctflow.ops.lungs import segment_lungs
    from ctflow.ops.patches_grid import patch_grid

    vol = np.full((4, 16, 16), -1000, np.int16)
    for kwargs in ({"threshold": 0.0}, {"closing_mm": 51.0}, {"min_lung_ml": 2e6}):
        with pytest.raises(InvalidParameterError, match="segment_lungs: "):
            segment_lungs(vol, Geometry((1.0, 1.0, 1.0)), **kwargs)
    with pytest.raises(InvalidParameterError, match="patch_grid: stride must be <= patch_shape"):
        patch_grid((8, 8, 8), 4, 5)


def _batch(dtype=np.int16):
    img = (np.arange(8 * 16 * 16).reshape(8, 16, 16) % 300 - 1000).astype(dtype)
    return cf.CTBatch.from_arrays([img])


def test_values_at_the_edge_of_each_limit_are_accepted_and_run():
    b = _batch()
    for threshold in (-900.0, -100.0):
        assert b.segment(threshold=threshold, closing_mm=50.0, min_lung_ml=1e6).lungs.sum() == 0
    patches = _batch().get_patches((4, 4, 4), stride=(4, 2, 1)).patches
    assert patches.shape[1:] == (4, 4, 4)
    out = _batch().predict_on_scan(_double, (4, 4, 4), stride=4).masks
    assert out.shape == (8, 16, 16)
    b = _batch()
    b.set_random_state(0, 0)
    b = b.random_elastic(control_points=5, max_displacement_mm=0.5, locked_borders=2)
    assert b.images.shape == (8, 16, 16)
    assert _batch().rotate(10, dtype="uint8", cval=0).images.dtype == np.uint8
    assert _batch().rotate(10, dtype="int16").images.dtype == np.int16
    assert _batch().unify_spacing(0.9, dtype="uint8", padding="edge").images.dtype == np.uint8
    b = _batch().unify_spacing(0.9, shape=(8, 16, 16), padding="constant", dtype="int16")
    assert b.images.dtype == np.int16
    assert _batch().random_gamma(log_gamma=(-88, 88)).images.dtype == np.float32
    probs = np.zeros((2, 8, 16, 16), np.float32)
    probs[1, 0, 0, 0] = 1.0
    b = _batch().set_component("masks", [probs]).argmax(values=(0, 65535))
    assert b.masks.dtype == np.uint16 and int(b.masks.max()) == 65535


def test_a_cval_the_resampling_rounds_into_the_dtype_is_accepted():
    # random_affine, random_elastic and invert resample through ops.affine, which rounds cval
    assert ACTIONS["random_affine"](dtype="uint8", cval=-0.4).cval == -0.4
    assert ACTIONS["invert"](dtype="uint8", cval=255.4).cval == 255.4
    # rotate runs ops.spatial.rotate, which compares cval itself
    with pytest.raises(InvalidParameterError, match="rotate: cval must be in"):
        ACTIONS["rotate"](10, dtype="uint8", cval=-0.4)


def test_an_implicit_dtype_is_still_checked_when_run():
    # dtype None, order 0: the images' own dtype, known only when the action runs
    b = _batch(np.uint8)
    with pytest.raises(InvalidParameterError, match="rotate: cval must fit the output dtype"):
        b.rotate(10, order=0)
