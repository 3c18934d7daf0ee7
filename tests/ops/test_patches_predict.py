"""Tests of predict_on_volume's blending, channels, flips and labels, and of predict_on_scan."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

import ctflow as cf
from ctflow.actions import PredictOnScan
from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops.patches_predict import (
    GAUSSIAN_FLOOR,
    as_flips,
    gaussian_weights,
    predict_on_volume,
)

SHAPE = (13, 17, 19)
CASES = [  # (patch_shape, stride): no overlap, overlaps of every kind, patch beyond the volume
    ((4, 5, 6), (4, 5, 6)),
    ((4, 5, 6), (1, 2, 3)),
    ((5, 5, 5), (3, 4, 5)),
    ((6, 8, 8), (5, 3, 7)),
    ((16, 4, 20), (7, 4, 1)),
]


def _channels(batch: np.ndarray) -> np.ndarray:
    """A 3-channel model: channel c is the input times (c + 1)."""
    return (
        batch[:, None].astype(np.float32) * np.arange(1, 4, dtype=np.float32)[:, None, None, None]
    )


def _patch_mean_model(batch: np.ndarray) -> np.ndarray:
    """Not translation-equivariant: 2 channels, the input plus its patch's mean (and mean**2)."""
    m = batch.reshape(len(batch), -1).mean(axis=1)[:, None, None, None]
    return np.stack([batch + m, batch - m * m], axis=1).astype(np.float32)


# ------------------------------------------------------------------ exactness and channels
@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize(("patch", "stride"), CASES)
def test_identity_is_exact(patch, stride, blend, rng):
    image = rng.normal(0, 300, size=SHAPE).astype(np.float32)
    out = predict_on_volume(image, lambda b: b, patch, stride, 5, blend=blend)
    assert out.dtype == np.float32 and out.shape == SHAPE
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
def test_identity_is_exact_with_flips_and_int16(blend, rng):
    image = rng.integers(-1000, 2000, size=SHAPE, dtype=np.int16)
    flips = ((2,), (1,), (0, 1, 2))
    out = predict_on_volume(image, lambda b: b, (5, 6, 7), (2, 3, 4), 4, blend=blend, flips=flips)
    np.testing.assert_array_equal(out, image.astype(np.float32))


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize(("patch", "stride"), CASES[1:4])
def test_three_channels(patch, stride, blend, rng):
    image = rng.normal(size=SHAPE).astype(np.float32)
    out = predict_on_volume(image, _channels, patch, stride, 7, blend=blend, flips=[(2,)])
    assert out.shape == (3, *SHAPE) and out.dtype == np.float32 and out.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(out[c], image * np.float32(c + 1))


def test_one_channel_axis_counts_as_one_channel(rng):
    image = rng.normal(size=SHAPE).astype(np.float32)
    out = predict_on_volume(image, lambda b: b[:, None] * 2, 6, 4)
    assert out.shape == SHAPE
    np.testing.assert_array_equal(out, image * 2)


def test_torch_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    image = rng.normal(size=(9, 10, 11)).astype(np.float32)
    weight = torch.ones(1, requires_grad=True)

    def model(batch):
        return torch.softmax(
            torch.stack([torch.from_numpy(batch) * weight, -weight.expand(batch.shape)], 1), 1
        )

    out = predict_on_volume(image, model, 4, 3, blend="gaussian")
    expected = 1 / (1 + np.exp(-1 - image))
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)
    half = predict_on_volume(image, lambda b: torch.from_numpy(b).to(torch.bfloat16), 4)
    np.testing.assert_allclose(half, image, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------ gaussian weights
def test_gaussian_weights_by_hand():
    # p = 5, sigma_scale = 0.25 -> sigma = 1.25 voxels; d = -2 .. 2 from the centre
    w = gaussian_weights((1, 1, 5), 0.25)
    by_hand = [np.exp(-4 / 3.125), np.exp(-1 / 3.125), 1.0, np.exp(-1 / 3.125), np.exp(-4 / 3.125)]
    np.testing.assert_allclose(w[0, 0], by_hand, rtol=1e-6)
    # even size: the centre lies between voxels 1 and 2; sigma 0.125 * 4 = 0.5
    w4 = gaussian_weights((1, 1, 4))[0, 0]
    np.testing.assert_allclose(
        w4, [np.exp(-4.5), np.exp(-0.5), np.exp(-0.5), np.exp(-4.5)], rtol=1e-6
    )
    # separable product, floored
    w3 = gaussian_weights((6, 8, 10), (0.125, 0.25, 0.5))
    axes = [gaussian_weights(s, c)[0, 0] for s, c in ((6, 0.125), (8, 0.25), (10, 0.5))]
    for s, c in ((6, 0.125), (8, 0.25), (10, 0.5)):
        d = np.arange(s) - (s - 1) / 2
        axes.append(np.exp(-(d**2) / (2 * (c * s) ** 2)))
    product = axes[3][:, None, None] * axes[4][None, :, None] * axes[5][None, None, :]
    np.testing.assert_allclose(w3, np.maximum(product, GAUSSIAN_FLOOR), rtol=1e-6)
    assert w3.min() >= np.float32(GAUSSIAN_FLOOR) and w3.dtype == np.float32


def test_gaussian_blending_of_two_patches_by_hand():
    # a 1-D volume of 6 voxels, patches of 4 at x = 0 and 2; the model answers 10 * (first x)
    image = np.zeros((1, 1, 6), np.float32)
    image[..., :2] = 1.0  # only the first patch sees ones

    def fn(batch):
        return np.where(batch[:, :1, :1, :1] > 0, 0.0, 20.0) * np.ones_like(batch)

    out = predict_on_volume(image, fn, (1, 1, 4), (1, 1, 2), blend="gaussian")
    w = np.exp(-(np.array([1.5, 0.5, 0.5, 1.5]) ** 2) / (2 * 0.5**2))  # sigma 0.125 * 4
    overlap = (w[2:] * 0.0 + w[:2] * 20.0) / (w[2:] + w[:2])
    np.testing.assert_allclose(out[0, 0], [0, 0, *overlap, 20, 20], rtol=1e-6)
    mean = predict_on_volume(image, fn, (1, 1, 4), (1, 1, 2), blend="mean")
    np.testing.assert_array_equal(mean[0, 0], [0, 0, 10, 10, 20, 20])


@pytest.mark.parametrize(
    ("patch", "overlap"), [((8, 12, 16), 0.5), ((8, 12, 16), 0.25), ((6, 10, 8), (0.5, 0.3, 0.25))]
)
@pytest.mark.parametrize(("mode", "blend"), [("gaussian", "gaussian"), ("constant", "mean")])
def test_agrees_with_monai_sliding_window(patch, overlap, mode, blend, rng):
    """MONAI places windows at multiples of int(roi * (1 - overlap)), the last one moved back
    to end at the image's edge; ctflow pads the end instead. With a volume of
    ``patch + k * stride`` voxels per axis both give the same windows, so the blends agree."""
    torch = pytest.importorskip("torch")
    inferers = pytest.importorskip("monai.inferers")
    overlaps = overlap if isinstance(overlap, tuple) else (overlap,) * 3
    stride = tuple(int(p * (1 - o)) for p, o in zip(patch, overlaps))
    shape = tuple(p + 2 * s for p, s in zip(patch, stride))
    image = rng.normal(size=shape).astype(np.float32)

    def torch_model(x):
        return torch.from_numpy(_patch_mean_model(x[:, 0].numpy()))

    ref = inferers.sliding_window_inference(
        torch.from_numpy(image)[None, None], patch, 4, torch_model, overlap=overlap, mode=mode,
        sigma_scale=0.125,
    )[0].numpy()  # fmt: skip
    out = predict_on_volume(image, _patch_mean_model, patch, stride, 4, blend=blend)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-6)
    other = predict_on_volume(image, _patch_mean_model, patch, stride, 4,
                              blend="mean" if blend == "gaussian" else "gaussian")  # fmt: skip
    assert np.abs(other - ref).max() > 1e-3  # the blend matters for this model


# ------------------------------------------------------------------ flips
def test_flips_are_undone_on_the_right_axes(rng):
    image = rng.normal(size=SHAPE).astype(np.float32)
    seen = []

    def pointwise(batch):
        seen.append(batch.copy())
        return np.stack([batch * 2 + 1, -batch], axis=1)

    flips = ((2,), (1,), (1, 2), (0,))
    out = predict_on_volume(image, pointwise, (5, 6, 7), (3, 4, 5), 64, flips=flips)
    np.testing.assert_array_equal(out[0], image * 2 + 1)
    np.testing.assert_array_equal(out[1], -image)
    assert len(seen) == 1 + len(flips)  # one batch: the plain pass, then one per flip
    for got, axes in zip(seen[1:], flips):
        np.testing.assert_array_equal(got, np.flip(seen[0], tuple(a + 1 for a in axes)))


def test_flip_of_a_model_that_is_only_right_unflipped():
    # the model answers the x position inside the patch, whatever it sees: right only unflipped
    image = np.zeros((4, 6, 8), np.float32)

    def ramp(batch):
        return np.broadcast_to(np.arange(batch.shape[3], dtype=np.float32), batch.shape)

    plain = predict_on_volume(image, ramp, (4, 6, 8))
    np.testing.assert_array_equal(plain, np.broadcast_to(np.arange(8), image.shape))
    # flipped along x the answer, flipped back, is the reversed ramp: the average is constant
    np.testing.assert_array_equal(predict_on_volume(image, ramp, (4, 6, 8), flips=[(2,)]), 3.5)
    # along y the ramp is unchanged; two passes out of three see it reversed along x
    np.testing.assert_array_equal(predict_on_volume(image, ramp, (4, 6, 8), flips=[(1,)]), plain)
    both = predict_on_volume(image, ramp, (4, 6, 8), flips=[(1,), (1, 2)])
    np.testing.assert_allclose(both, (2 * plain + (7 - plain)) / 3, rtol=1e-6)


def test_as_flips():
    assert as_flips([[2], (-1, 0)]) == ((2,), (0, 2))
    for bad in [(1, 2), [()], [(2,), (2,)], [(1, 1)], [(3,)], "x", [("z",)]]:
        with pytest.raises(InvalidParameterError, match="flips must be a sequence of axis tuples"):
            as_flips(bad, "predict_on_volume")


# ------------------------------------------------------------------ labels
def test_labels_are_argmax_or_threshold(rng):
    image = rng.normal(size=SHAPE).astype(np.float32)
    weights = np.array([0.5, -1.0, 2.0], np.float32)[:, None, None, None]

    def softmax3(batch):
        logits = batch[:, None] * weights + np.sin(batch[:, None] * weights * 3)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    kw: dict[str, Any] = {
        "patch_shape": (5, 6, 7),
        "stride": (3, 4, 5),
        "blend": "gaussian",
        "flips": [(2,)],
    }
    probs = predict_on_volume(image, softmax3, **kw)
    labels = predict_on_volume(image, softmax3, **kw, output="labels")
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    np.testing.assert_array_equal(labels, np.argmax(probs, axis=0))
    assert set(np.unique(labels)) == {0, 1, 2}

    sigmoid = lambda b: 1 / (1 + np.exp(-b))  # noqa: E731
    one = predict_on_volume(image, sigmoid, **kw)
    got = predict_on_volume(image, sigmoid, **kw, output="labels", threshold=0.3)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, (one >= np.float32(0.3)).astype(np.uint8))


def test_many_classes_give_uint16_labels():
    image = np.arange(6 * 6 * 6, dtype=np.float32).reshape(6, 6, 6) % 300

    def one_hot(batch):  # class = the voxel's value
        out = np.zeros((len(batch), 300, *batch.shape[1:]), np.float32)
        np.put_along_axis(out, batch[:, None].astype(np.int64), 1.0, axis=1)
        return out

    labels = predict_on_volume(image, one_hot, 3, 2, output="labels")
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, image.astype(np.uint16))


# ------------------------------------------------------------------ memory
def test_peak_memory_is_output_weights_and_one_batch(rng):
    image = rng.normal(size=(48, 64, 64)).astype(np.float32)
    patch, batch_size = (16, 32, 32), 4
    # compile the kernels first: numba's compiler allocates megabytes of Python objects once,
    # which are not the function's memory (alone, this test failed on that)
    predict_on_volume(image[:16, :32, :32], _channels, patch, 8, 1, blend="gaussian", flips=[(2,)])
    tracemalloc.start()
    try:
        out = predict_on_volume(image, _channels, patch, 8, batch_size, blend="gaussian",
                                flips=[(2,)])  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    voxels, patch_voxels = image.size, int(np.prod(patch))
    output, weights = 4 * 3 * voxels, 4 * voxels
    one_batch = 4 * batch_size * patch_voxels * (1 + 1 + 3 * 3)  # input, flip, 3-channel outputs
    assert out.nbytes == output
    assert peak < output + weights + one_batch + 2 * 4 * 3 * patch_voxels + (1 << 20), peak


# ------------------------------------------------------------------ errors
def test_wrong_outputs_raise_typed_errors_naming_the_patch():
    image = np.zeros((8, 8, 8), np.float32)
    image[5, 1, 1] = 7.0  # inside the patch starting at (4, 0, 0) only

    with pytest.raises(InvalidParameterError, match=r"fn must return a real array .*\(0, 0, 0\)"):
        predict_on_volume(image, lambda b: b[:, :2], 4)
    with pytest.raises(InvalidParameterError, match=r"got float32 array of shape \(8, 4, 4\)"):
        predict_on_volume(image, lambda b: b[:, 0], 4)
    with pytest.raises(InvalidParameterError, match=r"\(B, C, pz, py, px\) = \(8, C, 4, 4, 4\)"):
        predict_on_volume(image, lambda b: b[:, None, :, :2], 4)
    with pytest.raises(InvalidParameterError, match="got complex64 array"):
        predict_on_volume(image, lambda b: b.astype(np.complex64), 4)
    passes = []

    def wrong_when_flipped(batch):
        passes.append(1)
        return batch if len(passes) == 1 else batch[:1]

    with pytest.raises(
        InvalidParameterError, match=r"\(0, 0, 0\) \(the pass flipped along axes \(2,\)\)"
    ):
        predict_on_volume(image, wrong_when_flipped, 4, flips=[(2,)])

    def nan_at_marker(batch):
        return np.where(batch == 7.0, np.nan, batch)

    with pytest.raises(
        InvalidScanError, match=r"1 non-finite .*starting at \(4, 0, 0\); its input patch is finite"
    ):
        predict_on_volume(image, nan_at_marker, 4, batch_size=3)
    bad_input = image.copy()
    bad_input[1, 6, 2] = np.inf
    with pytest.raises(InvalidScanError, match=r"starting at \(0, 4, 0\); its input has 1 of them"):
        predict_on_volume(bad_input, lambda b: b, 4)

    calls = []

    def changing(batch):
        calls.append(1)
        return _channels(batch) if len(calls) == 1 else batch

    with pytest.raises(
        InvalidParameterError,
        match=r"returned 3 channels before and one channel for the batch of patches starting "
        r"at \(0, 4, 0\)",
    ):
        predict_on_volume(image, changing, 4, batch_size=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"blend": "max"}, "blend must be one of 'mean', 'gaussian'"),
        ({"sigma_scale": 0}, "sigma_scale must be a finite number > 0"),
        ({"sigma_scale": (1, 2)}, "sigma_scale must be a positive number or 3"),
        ({"flips": (1, 2)}, "flips must be a sequence of axis tuples"),
        ({"output": "mask"}, "output must be one of 'probabilities', 'labels'"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"pad_value": "reflect"}, "pad_value must be a number or 'edge'"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InvalidParameterError, match=f"predict_on_volume: {match}"):
        predict_on_volume(np.zeros((8, 8, 8), np.float32), lambda b: b, 4, **kwargs)


# ------------------------------------------------------------------ the action
def _ragged_batch(rng) -> tuple[cf.CTBatch, list[np.ndarray]]:
    vols = [rng.normal(size=s).astype(np.float32) for s in [(13, 17, 19), (9, 20, 12)]]
    return cf.CTBatch.from_arrays(vols), vols


def test_action_blends_flips_and_labels_per_item(rng):
    b, vols = _ragged_batch(rng)
    sigmoid = lambda x: 1 / (1 + np.exp(-x * np.linspace(0.5, 1.5, x.shape[-1])))  # noqa: E731
    kw: dict[str, Any] = {
        "blend": "gaussian",
        "sigma_scale": (0.125, 0.2, 0.25),
        "flips": [(2,), (1, 2)],
    }
    b.predict_on_scan(sigmoid, (6, 8, 8), (3, 4, 4), batch_size=5, **kw)
    for i, vol in enumerate(vols):
        ref = predict_on_volume(vol, sigmoid, (6, 8, 8), (3, 4, 4), 5, **kw)
        np.testing.assert_array_equal(b[i].masks, ref)
    b.predict_on_scan(sigmoid, (6, 8, 8), (3, 4, 4), output="labels", threshold=0.6, **kw)
    for i, vol in enumerate(vols):
        ref = predict_on_volume(
            vol, sigmoid, (6, 8, 8), (3, 4, 4), output="labels", threshold=0.6, **kw
        )
        masks = b[i].masks
        assert masks is not None and masks.dtype == np.uint8
        np.testing.assert_array_equal(masks, ref)
    # the default (mean, no flips) is the plain average the action always gave
    b.predict_on_scan(sigmoid, (6, 8, 8), (3, 4, 4))
    np.testing.assert_array_equal(
        b[1].masks, predict_on_volume(vols[1], sigmoid, (6, 8, 8), (3, 4, 4))
    )


def test_action_checks_its_parameters_when_written():
    fn = lambda x: x  # noqa: E731
    action = PredictOnScan(fn, 4, flips=[[2], (1, 2)], sigma_scale=[0.1, 0.2, 0.3])
    assert action.flips == ((2,), (1, 2)) and action.sigma_scale == (0.1, 0.2, 0.3)
    assert action.record()["args"]["flips"] == [[2], [1, 2]]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"blend": "linear"}, "predict_on_scan: blend must be one of"),
        ({"flips": (2,)}, "predict_on_scan: flips must be a sequence of axis tuples"),
        ({"sigma_scale": -1.0}, "predict_on_scan: sigma_scale must be a finite number > 0"),
        ({"output": "probs"}, "predict_on_scan: output must be one of"),
        ({"threshold": "half"}, "predict_on_scan: threshold must be a finite number"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InvalidParameterError, match=match):
            PredictOnScan(fn, 4, **kwargs)
    with pytest.raises(InvalidParameterError, match="predict_on_scan: blend must be one of"):
        cf.Pipeline().predict_on_scan(fn, 4, blend="linear")


def test_action_multichannel_probabilities(rng):
    """Runs once batch components take channels ((C, Z, Y, X) masks per item)."""
    b, vols = _ragged_batch(rng)
    probe = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.float32)])
    try:
        probe.set_component("masks", [np.zeros((3, 2, 3, 4), np.float32)])
    except InvalidScanError as exc:
        pytest.skip(f"batch components do not take channels yet: {exc}")
    b.predict_on_scan(_channels, (6, 8, 8), (3, 4, 4), blend="gaussian", flips=[(2,)])
    for i, vol in enumerate(vols):
        masks = b[i].masks
        assert masks is not None and masks.shape == (3, *vol.shape)
        for c in range(3):
            np.testing.assert_array_equal(masks[c], vol * np.float32(c + 1))
    b.predict_on_scan(_channels, (6, 8, 8), (3, 4, 4), output="labels")
    for i, vol in enumerate(vols):
        labels = b[i].masks
        assert labels is not None and labels.dtype == np.uint8 and labels.shape == vol.shape
        np.testing.assert_array_equal(labels, np.argmax(_channels(vol[None])[0], axis=0))
