"""Predict on a whole volume patch by patch: :func:`predict_on_volume` and its blending.

Patches lie on the :class:`~ctflow.ops.patches_grid.PatchGrid` of the volume (the grid
convention and the running mean are described in :mod:`ctflow.ops.patches_grid`).

Predicting
----------
:func:`predict_on_volume` cuts patches on demand, ``batch_size`` at a time, and folds the
model's outputs into ONE float32 mean volume (``(C, Z, Y, X)`` for a C-channel model) and ONE
``(Z, Y, X)`` weight volume shared by the channels. Each patch's output is weighted by
:func:`gaussian_weights` (``blend="gaussian"``: centre voxels count more than edge voxels,
where a network sees less context) or uniformly (``blend="mean"``). With flip test-time
augmentation the model also sees each batch flipped; its outputs are flipped back and averaged
(equal weights, the same running mean) before blending. Peak memory, besides the input volume:

* the output, ``4 * C`` bytes per voxel;
* the weights, 4 bytes per voxel (``"gaussian"``) or 2 (``"mean"``: a uint16 count; 4 when
  more than 65 535 patches cover one voxel);
* one batch: the patches in the image dtype, one flipped copy of them, the model's output and
  its float32 average over flips (about ``B * C * pz * py * px * 12`` bytes), and a few
  patch-sized temporaries;
* with ``output="labels"``: the labels (1 byte per voxel, 2 when C > 256) and an argmax slab of
  at most 16 M int64; the weight volume is freed before the labels are made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ops.patches_grid import (
    PadValue,
    PatchGrid,
    _check_pad_value,
    _pad_end,
    _WeightedMean,
    patch_grid,
)
from ctflow.validation import as_axes, as_choice, as_float, as_int, as_shape, check_volume

__all__ = [
    "GAUSSIAN_FLOOR",
    "as_flips",
    "as_sigma_scale",
    "gaussian_weights",
    "predict_on_volume",
]

Flips = tuple[tuple[int, ...], ...]

#: Smallest Gaussian blending weight, relative to the weight 1 at a patch's centre: the corners
#: of a patch (``exp(-4.5)`` per axis at ``sigma_scale=0.125``) would otherwise weigh ~1e-6 and
#: a voxel near the volume's corner, covered by one patch corner only, would be fragile.
GAUSSIAN_FLOOR = 1e-3

#: Largest argmax slab (voxels) when labels are made from channels: 16 M int64 = 128 MB.
_ARGMAX_SLAB = 1 << 24


def gaussian_weights(
    patch_shape: ArrayLike, sigma_scale: float | Sequence[float] = 0.125
) -> NDArray[np.float32]:
    """Blending weights of one patch: a separable Gaussian centred on the patch.

    Along an axis of ``p`` voxels, voxel ``i`` lies ``d = i - (p - 1) / 2`` voxels from the
    patch's centre and weighs ``exp(-d**2 / (2 * sigma**2))`` with ``sigma = sigma_scale * p``
    (the convention of nnU-Net and MONAI). The 3-D weight is the product over the axes (1 at the
    centre), raised to at least :data:`GAUSSIAN_FLOOR` so that no voxel ever weighs 0.

    Parameters
    ----------
    patch_shape : int or 3 ints
        Shape of a patch.
    sigma_scale : float or 3 floats, default 0.125
        Standard deviation of the Gaussian as a fraction of the patch size, per axis.

    Returns
    -------
    ndarray, float32, shape ``patch_shape``

    Examples
    --------
    >>> w = gaussian_weights((1, 1, 4), 0.5)  # sigma 2 voxels; d = -1.5, -0.5, 0.5, 1.5
    >>> [round(float(v), 4) for v in w[0, 0]]
    [0.7548, 0.9692, 0.9692, 0.7548]
    >>> round(float(gaussian_weights(16).min()), 6)  # the corners: GAUSSIAN_FLOOR
    0.001
    """
    where = "gaussian_weights"
    patch = as_shape(patch_shape, what="patch_shape", where=where)
    sigmas = [s * p for s, p in zip(as_sigma_scale(sigma_scale, where), patch)]
    axes: list[NDArray[np.float64]] = []
    for p, sigma in zip(patch, sigmas):
        d = np.arange(p, dtype=np.float64) - (p - 1) / 2
        axes.append(np.exp(-(d**2) / (2 * sigma**2)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w, GAUSSIAN_FLOOR).astype(np.float32)


def as_sigma_scale(value: Any, where: str = "") -> tuple[float, float, float]:
    """Check a Gaussian ``sigma_scale``: 3 positive floats (a scalar is used on every axis).

    Examples
    --------
    >>> as_sigma_scale(0.125)
    (0.125, 0.125, 0.125)
    """
    items = list(value) if isinstance(value, Sequence | np.ndarray) else [value] * 3
    if isinstance(value, str) or len(items) != 3:
        prefix = f"{where}: " if where else ""
        raise InvalidParameterError(
            f"{prefix}sigma_scale must be a positive number or 3 (z, y, x); got {value!r}"
        )
    s = [as_float(v, "sigma_scale", where, lo=0.0, lo_open=True) for v in items]
    return (s[0], s[1], s[2])


def as_flips(value: Any, where: str = "") -> Flips:
    """Check flip test-time augmentation: a sequence of axis tuples, e.g. ``((2,), (1, 2))``.

    Axes are those of a (z, y, x) patch (0, 1, 2; negatives count back). Each tuple is one
    extra pass of the model on the patches flipped along all its axes; the empty flip (the
    plain pass) is always done and may not be listed, nor may a tuple be listed twice.

    Returns
    -------
    tuple of tuples of int
        Each tuple's axes sorted.

    Examples
    --------
    >>> as_flips([[2], (-2, 0)])
    ((2,), (0, 1))
    >>> as_flips((1, 2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: flips must be a sequence of axis tuples such as ...
    """
    prefix = f"{where}: " if where else ""
    rule = (
        f"{prefix}flips must be a sequence of axis tuples such as ((2,), (1, 2)) (axes 0, 1, 2 "
        "= z, y, x; each tuple not empty, its axes distinct, no tuple twice)"
    )
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise InvalidParameterError(f"{rule}; got {value!r}")
    out: list[tuple[int, ...]] = []
    for entry in value:
        if isinstance(entry, str | bytes) or not isinstance(entry, Sequence | np.ndarray):
            raise InvalidParameterError(f"{rule}; got {value!r}")
        try:
            axes = as_axes(entry, "flips", where)
        except InvalidParameterError:
            raise InvalidParameterError(f"{rule}; got {value!r}") from None
        if axes in out:
            raise InvalidParameterError(f"{rule}; got {value!r} ({axes} twice)")
        out.append(axes)
    return tuple(out)


def _to_numpy(pred: Any) -> NDArray[Any]:
    """Return a model's output as an ndarray (torch tensors too, without importing torch)."""
    if isinstance(pred, np.ndarray):
        return pred
    if hasattr(pred, "detach") and hasattr(pred, "cpu"):  # a torch tensor, on any device
        tensor = pred.detach().cpu()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    return np.asarray(pred)


def _cut_batch(
    image: NDArray[Any], grid: PatchGrid, chunk: NDArray[np.int64], pad: PadValue
) -> NDArray[Any]:
    """Cut the patches starting at ``chunk``, padded at the end like :func:`get_patches`."""
    pz, py, px = grid.patch_shape
    batch = np.empty((len(chunk), pz, py, px), image.dtype)
    for j, (z, y, x) in enumerate(chunk):
        batch[j] = _pad_end(image[z : z + pz, y : y + py, x : x + px], grid.patch_shape, pad)
    return batch


def _flip_text(axes: tuple[int, ...]) -> str:
    return f" (the pass flipped along axes {axes})" if axes else ""


class _Predictor:
    """Calls ``fn`` on a batch (and its flips), checks and averages the outputs."""

    def __init__(self, fn: Callable[[NDArray[Any]], Any], flips: Flips, where: str) -> None:
        self.fn = fn
        self.flips = flips
        self.where = where
        self.channels: int | None = None  # None: one channel, (B, [1,] pz, py, px)
        self.seen = False  # whether self.channels was set by a first output

    def __call__(self, batch: NDArray[Any], chunk: NDArray[np.int64]) -> NDArray[np.float32]:
        """Return the flip-averaged float32 output ``(B, C, pz, py, px)`` on ``batch``."""
        mean = self._run(batch, batch, chunk, ())
        for k, axes in enumerate(self.flips, start=2):
            flipped = np.ascontiguousarray(np.flip(batch, tuple(a + 1 for a in axes)))
            pred = np.flip(self._run(flipped, batch, chunk, axes), tuple(a + 2 for a in axes))
            if k == 2:  # own the plain pass's output: fn may reuse its buffer, or return batch
                mean = mean.copy()
            delta = pred - mean
            delta /= np.float32(k)  # running mean over the passes: exact when they agree
            mean += delta
        return mean

    def _run(
        self,
        inputs: NDArray[Any],
        batch: NDArray[Any],
        chunk: NDArray[np.int64],
        axes: tuple[int, ...],
    ) -> NDArray[np.float32]:
        """``fn(inputs)`` checked and as float32 ``(B, C, pz, py, px)`` (a view when it can)."""
        pred = _to_numpy(self.fn(inputs))
        b, *patch = batch.shape
        first = tuple(int(v) for v in chunk[0])
        ok_shape = pred.ndim == 4 and pred.shape == batch.shape
        ok_shape |= pred.ndim == 5 and pred.shape[0] == b and list(pred.shape[2:]) == patch
        if not ok_shape or pred.dtype.kind not in "biuf":
            raise InvalidParameterError(
                f"{self.where}: fn must return a real array of shape (B, pz, py, px) = "
                f"{batch.shape} or (B, C, pz, py, px) = ({b}, C, {', '.join(map(str, patch))}); "
                f"got {pred.dtype} array of shape {pred.shape} for the batch of {b} patches "
                f"starting at {first}{_flip_text(axes)}"
            )
        channels = None if pred.ndim == 4 or pred.shape[1] == 1 else int(pred.shape[1])
        if not self.seen:
            self.channels, self.seen = channels, True
        elif channels != self.channels:
            self._layout_changed(channels, first, axes)
        out = pred.astype(np.float32, copy=False).reshape(b, -1, *patch)
        if pred.dtype.kind == "f":
            self._check_finite(out, batch, chunk, axes)
        return out

    def _layout_changed(
        self, now: int | None, first: tuple[int, ...], axes: tuple[int, ...]
    ) -> None:
        def text(c: int | None) -> str:
            return "one channel" if c is None else f"{c} channels"

        raise InvalidParameterError(
            f"{self.where}: fn must return the same number of channels for every batch; it "
            f"returned {text(self.channels)} before and {text(now)} for the batch of patches "
            f"starting at {first}{_flip_text(axes)}"
        )

    def _check_finite(
        self,
        out: NDArray[np.float32],
        batch: NDArray[Any],
        chunk: NDArray[np.int64],
        axes: tuple[int, ...],
    ) -> None:
        finite = np.isfinite(out).reshape(len(out), -1).all(axis=1)
        if finite.all():
            return
        j = int(np.argmin(finite))
        n_bad = int(out[j].size - np.count_nonzero(np.isfinite(out[j])))
        n_in = 0 if batch.dtype.kind != "f" else int(batch[j].size - np.isfinite(batch[j]).sum())
        source = "its input patch is finite" if n_in == 0 else f"its input has {n_in} of them"
        raise InvalidScanError(
            f"{self.where}: fn returned {n_bad} non-finite values (NaN or inf) for the patch "
            f"starting at {tuple(int(v) for v in chunk[j])}{_flip_text(axes)}; {source}"
        )


def _labels(probs: NDArray[np.float32], threshold: float) -> NDArray[np.unsignedinteger[Any]]:
    """``(C, Z, Y, X)`` probabilities -> labels: ``>= threshold`` (C = 1) or argmax (C > 1)."""
    n_channels = len(probs)
    if n_channels == 1:
        return (probs[0, ...] >= np.float32(threshold)).view(np.uint8)
    dtype = np.uint8 if n_channels <= 256 else np.uint16 if n_channels <= 65536 else np.uint32
    out = np.empty(probs.shape[1:], dtype)
    step = max(1, _ARGMAX_SLAB // max(1, math.prod(probs.shape[2:]) * n_channels))
    for z in range(0, probs.shape[1], step):
        out[z : z + step] = np.argmax(probs[:, z : z + step], axis=0)
    return out


def predict_on_volume(
    image: NDArray[Any],
    fn: Callable[[NDArray[Any]], Any],
    patch_shape: ArrayLike,
    stride: ArrayLike | None = None,
    batch_size: int = 8,
    *,
    pad_value: PadValue = "edge",
    blend: Literal["mean", "gaussian"] = "mean",
    sigma_scale: float | Sequence[float] = 0.125,
    flips: Sequence[Sequence[int]] = (),
    output: Literal["probabilities", "labels"] = "probabilities",
    threshold: float = 0.5,
) -> NDArray[Any]:
    """Run ``fn`` on batches of patches of a volume and blend its outputs into a volume.

    Patches are cut on demand (at most ``batch_size`` at a time besides the output), so this
    works on whole scans with a network that only takes small patches. The peak memory is
    the output, one weight volume and one batch (see the module docstring for the bytes).

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume.
    fn : callable
        ``fn(batch) -> predictions``: ``batch`` is an ndarray ``(B, pz, py, px)`` in the image
        dtype (normalise to float32 first for a network), ``B <= batch_size``. It returns
        ``(B, pz, py, px)`` (one channel) or ``(B, C, pz, py, px)`` (C channels, e.g. a
        softmax), any real dtype (converted to float32), as a numpy array or a torch tensor
        (on any device). Every batch must give the same number of channels.
    patch_shape : int or 3 ints
        Shape of a patch.
    stride : int or 3 ints, optional
        Step between patches, ``1 <= stride <= patch_shape``; default ``patch_shape`` (no
        overlap: then ``blend`` changes nothing).
    batch_size : int, default 8
        Patches per call of ``fn``.
    pad_value : float or "edge", default "edge"
        Padding of the volume's end, as in :func:`get_patches`.
    blend : {"mean", "gaussian"}, default "mean"
        How overlapping outputs are averaged: uniformly, or weighted by
        :func:`gaussian_weights` (centre voxels of a patch count more than its edges, where a
        network sees less context; nnU-Net's and MONAI's ``mode="gaussian"``).
    sigma_scale : float or 3 floats, default 0.125
        Gaussian sigma as a fraction of the patch size (``blend="gaussian"`` only).
    flips : sequence of axis tuples, default ()
        Flip test-time augmentation, e.g. ``((2,), (1,), (1, 2))``: the model also sees every
        batch flipped along each tuple's axes (0, 1, 2 = z, y, x); its outputs are flipped
        back and averaged with the plain pass, all passes weighing the same. Each tuple costs
        one more call of ``fn`` per batch.
    output : {"probabilities", "labels"}, default "probabilities"
        The blended float32 outputs, or labels: ``argmax`` over the channels (C > 1) or
        ``>= threshold`` (one channel), uint8 (uint16 when C > 256).
    threshold : float, default 0.5
        The threshold of one-channel labels.

    Returns
    -------
    ndarray, shape ``image.shape`` or ``(C, *image.shape)``
        float32 probabilities, ``(Z, Y, X)`` for one channel (``(B, 1, ...)`` outputs count
        as one channel) and ``(C, Z, Y, X)`` for C > 1; or ``(Z, Y, X)`` labels.

    Raises
    ------
    InvalidParameterError
        A bad parameter, or ``fn`` returned a wrong shape, dtype or number of channels (the
        message names the start of the batch's first patch and the flip).
    InvalidScanError
        ``image`` is not a 3-D volume, or ``fn`` returned NaN or inf (naming the patch's start
        and whether its input was finite).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(9, 10, 11)).astype(np.float32)
    >>> y = predict_on_volume(x, lambda b: 2 * b, patch_shape=4, stride=3, batch_size=5)
    >>> bool(np.array_equal(y, 2 * x))
    True
    >>> softmax2 = lambda b: np.stack([1 / (1 + np.exp(b)), 1 / (1 + np.exp(-b))], axis=1)
    >>> p = predict_on_volume(x, softmax2, 4, 2, blend="gaussian", flips=[(2,), (1, 2)])
    >>> p.shape, p.dtype
    ((2, 9, 10, 11), dtype('float32'))
    >>> labels = predict_on_volume(x, softmax2, 4, 2, output="labels")
    >>> labels.dtype, bool(np.array_equal(labels, x > 0))
    (dtype('uint8'), True)
    """
    where = "predict_on_volume"
    image = check_volume(image, where)
    if not callable(fn):
        raise InvalidParameterError(f"{where}: fn must be callable; got {type(fn).__name__}")
    batch_size = as_int(batch_size, "batch_size", where, lo=1)
    grid = patch_grid(image.shape, patch_shape, stride)
    pad = _check_pad_value(pad_value, image.dtype, where)
    as_choice(blend, ("mean", "gaussian"), "blend", where)
    sigmas = as_sigma_scale(sigma_scale, where)
    weights = gaussian_weights(grid.patch_shape, sigmas) if blend == "gaussian" else None
    predictor = _Predictor(fn, as_flips(flips, where), where)
    as_choice(output, ("probabilities", "labels"), "output", where)
    threshold = as_float(threshold, "threshold", where)

    starts = grid.starts
    acc: _WeightedMean | None = None
    for i in range(0, grid.n_patches, batch_size):
        chunk = starts[i : i + batch_size]
        pred = predictor(_cut_batch(image, grid, chunk, pad), chunk)
        if acc is None:
            acc = _WeightedMean(grid, pred.shape[1], weights)
        for values, start in zip(pred, chunk):
            acc.add(values, start)
    assert acc is not None  # a grid has at least one patch
    probs = acc.result()
    del acc  # frees the weight volume before labels are made
    if output == "labels":
        return _labels(probs, threshold)
    return probs[0] if predictor.channels is None else probs
