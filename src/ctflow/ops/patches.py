"""Cut a volume into (overlapping) patches, put patch predictions back, predict on a volume.

Grid convention
---------------
Patches of ``patch_shape`` start at multiples of ``stride`` (``1 <= stride <= patch_shape`` on
every axis, so every voxel is covered). To cover the whole volume, it is padded **at the end**
of each axis up to the smallest ``padded >= patch`` with ``(padded - patch) % stride == 0``;
there are ``(padded - patch) // stride + 1`` patches per axis, numbered in C order over
(z, y, x) start positions (:attr:`PatchGrid.starts`). :class:`PatchGrid` holds all of this,
computed from the original shape, the patch shape and the stride.

Assembling
----------
:func:`assemble_patches` (and :func:`predict_on_volume`) average the overlapping values of each
voxel. The average is accumulated in float32 as a running (weighted) mean, ``mean += (value -
mean) * w / W`` with ``W`` the weight summed so far (the contribution count when every weight
is 1), instead of ``sum / W``: it is as accurate and it is exact when all contributions to a
voxel are equal, so ``assemble_patches(*get_patches(x))`` gives back ``x`` bit for bit (as
float32) for every stride, and so does :func:`predict_on_volume` with an identity model, with
either blending. Only voxels inside the volume are accumulated (the padded margin never is).

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
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.validation import as_axes, as_choice, as_float, as_int, as_shape, check_volume

__all__ = [
    "GAUSSIAN_FLOOR",
    "PatchGrid",
    "as_flips",
    "as_sigma_scale",
    "assemble_patches",
    "gaussian_weights",
    "get_patches",
    "patch_grid",
    "predict_on_volume",
]

PadValue = float | Literal["edge"]
Shape3 = tuple[int, int, int]
Flips = tuple[tuple[int, ...], ...]

#: Smallest Gaussian blending weight, relative to the weight 1 at a patch's centre: the corners
#: of a patch (``exp(-4.5)`` per axis at ``sigma_scale=0.125``) would otherwise weigh ~1e-6 and
#: a voxel near the volume's corner, covered by one patch corner only, would be fragile.
GAUSSIAN_FLOOR = 1e-3

#: Largest argmax slab (voxels) when labels are made from channels: 16 M int64 = 128 MB.
_ARGMAX_SLAB = 1 << 24


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of a volume lie (see the module docstring for the convention).

    Attributes
    ----------
    shape : tuple of 3 int
        Shape of the original volume (z, y, x).
    patch_shape : tuple of 3 int
        Shape of one patch.
    stride : tuple of 3 int
        Step between patch starts, ``1 <= stride <= patch_shape``.

    Examples
    --------
    >>> g = patch_grid((10, 8, 8), (4, 4, 4), (3, 4, 4))
    >>> g.padded_shape, g.grid_shape, g.n_patches
    ((10, 8, 8), (3, 2, 2), 12)
    >>> patch_grid((11, 8, 8), (4, 4, 4), (3, 4, 4)).padded_shape
    (13, 8, 8)
    """

    shape: Shape3
    patch_shape: Shape3
    stride: Shape3

    @property
    def grid_shape(self) -> Shape3:
        """Number of patches along (z, y, x)."""
        g = [
            -(-max(n - p, 0) // s) + 1 for n, p, s in zip(self.shape, self.patch_shape, self.stride)
        ]
        return (g[0], g[1], g[2])

    @property
    def padded_shape(self) -> Shape3:
        """Shape of the volume padded at the end so that the patches tile it exactly."""
        d = [p + (g - 1) * s for g, p, s in zip(self.grid_shape, self.patch_shape, self.stride)]
        return (d[0], d[1], d[2])

    @property
    def n_patches(self) -> int:
        """Total number of patches."""
        gz, gy, gx = self.grid_shape
        return gz * gy * gx

    @property
    def starts(self) -> NDArray[np.int64]:
        """(n_patches, 3) start index of every patch, in C order over the grid."""
        axes = [np.arange(g, dtype=np.int64) * s for g, s in zip(self.grid_shape, self.stride)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)

    @property
    def max_count(self) -> int:
        """Largest number of patches covering one voxel."""
        c = [-(-p // s) for p, s in zip(self.patch_shape, self.stride)]
        return (
            min(c[0], self.grid_shape[0])
            * min(c[1], self.grid_shape[1])
            * min(c[2], self.grid_shape[2])
        )


def patch_grid(
    shape: ArrayLike, patch_shape: ArrayLike, stride: ArrayLike | None = None
) -> PatchGrid:
    """Validate and build the :class:`PatchGrid` of a volume.

    Parameters
    ----------
    shape : 3 ints
        Shape of the volume (z, y, x).
    patch_shape : int or 3 ints
        Shape of a patch (a scalar is used on every axis).
    stride : int or 3 ints, optional
        Step between patches, ``1 <= stride <= patch_shape``; default ``patch_shape`` (no
        overlap).

    Returns
    -------
    PatchGrid

    Examples
    --------
    >>> g = patch_grid((40, 64, 64), 32, 16)
    >>> g.grid_shape, g.padded_shape
    ((2, 3, 3), (48, 64, 64))
    """
    where = "patch_grid"
    vol = as_shape(shape, what="shape", where=where)
    patch = as_shape(patch_shape, what="patch_shape", where=where)
    step = patch if stride is None else as_shape(stride, what="stride", where=where)
    if any(s > p for s, p in zip(step, patch)):
        raise InvalidParameterError(
            f"{where}: stride must be <= patch_shape on every axis so that every voxel is "
            f"covered; got stride {step} for patch_shape {patch}"
        )
    return PatchGrid(vol, patch, step)


def _check_pad_value(pad_value: Any, dtype: np.dtype[Any], where: str) -> PadValue:
    """Return "edge" or the constant ``pad_value`` as a float that fits ``dtype``."""
    if isinstance(pad_value, str) and pad_value == "edge":
        return "edge"
    if isinstance(pad_value, bool) or not isinstance(pad_value, int | float | np.number):
        raise InvalidParameterError(
            f"{where}: pad_value must be a number or 'edge'; got {pad_value!r}"
        )
    value = float(pad_value)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (info.min <= value <= info.max and value.is_integer()):
            raise InvalidParameterError(
                f"{where}: pad_value must be an integer in [{info.min}, {info.max}] for an "
                f"{dtype} image; got {pad_value!r}"
            )
    elif not np.isfinite(value) and dtype.kind != "f":
        raise InvalidParameterError(f"{where}: pad_value must be finite; got {pad_value!r}")
    return value


def _pad_end(array: NDArray[Any], shape: Sequence[int], pad: PadValue) -> NDArray[Any]:
    """Pad ``array`` at the end of each axis up to ``shape`` (edge or a checked constant)."""
    widths = [(0, d - n) for d, n in zip(shape, array.shape)]
    if not any(w for _, w in widths):
        return array
    if pad == "edge":
        return np.pad(array, widths, mode="edge")
    return np.pad(array, widths, mode="constant", constant_values=np.asarray(pad, array.dtype))


def _pad_to_grid(image: NDArray[Any], grid: PatchGrid, pad_value: Any, where: str) -> NDArray[Any]:
    """Pad ``image`` at the end of each axis to ``grid.padded_shape`` (edge or a constant)."""
    return _pad_end(image, grid.padded_shape, _check_pad_value(pad_value, image.dtype, where))


def get_patches(
    image: NDArray[Any],
    patch_shape: ArrayLike,
    stride: ArrayLike | None = None,
    *,
    pad_value: PadValue = "edge",
) -> tuple[NDArray[Any], PatchGrid]:
    """Cut a (z, y, x) volume into patches covering all of it.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume.
    patch_shape : int or 3 ints
        Shape of a patch.
    stride : int or 3 ints, optional
        Step between patch starts, ``1 <= stride <= patch_shape``; default ``patch_shape``.
    pad_value : float or "edge", default "edge"
        How the end of the volume is padded up to the grid: repeat the last slice ("edge") or
        a constant (which must fit an integer dtype).

    Returns
    -------
    patches : ndarray, shape (n_patches, pz, py, px)
        A new contiguous array, the input dtype, patches in :attr:`PatchGrid.starts` order.
    grid : PatchGrid
        What :func:`assemble_patches` needs to put them back.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    >>> patches, grid = get_patches(x, (2, 4, 4), (2, 2, 2))
    >>> patches.shape, grid.padded_shape
    ((3, 2, 4, 4), (6, 4, 4))
    >>> bool(np.array_equal(assemble_patches(patches, grid), x))
    True
    """
    where = "get_patches"
    image = check_volume(image, where)
    grid = patch_grid(image.shape, patch_shape, stride)
    padded = _pad_to_grid(image, grid, pad_value, where)
    windows = sliding_window_view(padded, grid.patch_shape)
    sz, sy, sx = grid.stride
    # np.array copies the strided windows once (the windows are a read-only view)
    patches = np.array(windows[::sz, ::sy, ::sx], order="C").reshape(-1, *grid.patch_shape)
    return patches, grid


class _WeightedMean:
    """float32 per-voxel weighted running mean of patch values (see the module docstring).

    ``mean`` is ``(C, Z, Y, X)``; ``total`` is the ONE ``(Z, Y, X)`` weight volume the channels
    share: the contribution count (``weights`` None: every weight is 1) or the summed weights.
    Parts of patches beyond the volume's end are skipped, so nothing is padded or copied back.
    """

    def __init__(
        self, grid: PatchGrid, n_channels: int, weights: NDArray[np.float32] | None
    ) -> None:
        self.grid = grid
        self.weights = weights
        self.mean = np.zeros((n_channels, *grid.shape), np.float32)
        self.total: NDArray[Any]
        if weights is None and grid.max_count <= np.iinfo(np.uint16).max:
            self.total = np.zeros(grid.shape, np.uint16)
        else:
            self.total = np.zeros(grid.shape, np.float32)

    def add(self, values: NDArray[np.float32], start: ArrayLike) -> None:
        """Fold one patch's values ``(C, pz, py, px)`` starting at ``start`` into the mean."""
        z, y, x = (int(s) for s in np.asarray(start))
        nz, ny, nx = self.grid.shape
        pz, py, px = self.grid.patch_shape
        dz, dy, dx = min(pz, nz - z), min(py, ny - y), min(px, nx - x)
        region = (slice(z, z + dz), slice(y, y + dy), slice(x, x + dx))
        total = self.total[region]
        delta = values[:, :dz, :dy, :dx] - self.mean[(slice(None), *region)]
        if self.weights is None:
            total += 1
            delta /= total  # float32 / count -> float32, in place; exactly 1 the first time
        else:
            w = self.weights[:dz, :dy, :dx]
            total += w
            delta *= w / total  # w / w == 1 exactly for the first contribution
        self.mean[(slice(None), *region)] += delta

    def result(self) -> NDArray[np.float32]:
        """Return the ``(C, Z, Y, X)`` mean volume (no copy)."""
        return self.mean


def assemble_patches(
    patches: NDArray[Any],
    grid: PatchGrid | ArrayLike,
    patch_shape: ArrayLike | None = None,
    stride: ArrayLike | None = None,
) -> NDArray[np.float32]:
    """Put patches back into a volume, averaging where they overlap.

    Parameters
    ----------
    patches : ndarray, shape (n_patches, pz, py, px)
        Patches in the order of :func:`get_patches` (e.g. a network's predictions on them).
    grid : PatchGrid or 3 ints
        The grid returned by :func:`get_patches`, or the original volume shape together with
        ``patch_shape`` and ``stride``.
    patch_shape, stride : int or 3 ints, optional
        Only when ``grid`` is a shape (``stride`` defaults to ``patch_shape``).

    Returns
    -------
    ndarray, float32, shape ``grid.shape``
        Per-voxel mean of all patch values covering it (exact when they are equal).

    Raises
    ------
    InvalidParameterError
        ``patches`` does not have ``(grid.n_patches, *grid.patch_shape)`` shape, or a bad grid.

    Examples
    --------
    >>> import numpy as np
    >>> ones = np.ones((8, 2, 2, 2), np.float32)
    >>> vol = assemble_patches(ones * np.arange(8).reshape(8, 1, 1, 1), (3, 3, 3), 2, 1)
    >>> float(vol[1, 1, 1]), float(vol[0, 0, 0])
    (3.5, 0.0)
    """
    where = "assemble_patches"
    if not isinstance(grid, PatchGrid):
        if patch_shape is None:
            raise InvalidParameterError(
                f"{where}: pass the PatchGrid from get_patches, or the volume shape with "
                "patch_shape (and stride)"
            )
        grid = patch_grid(grid, patch_shape, stride)
    expected = (grid.n_patches, *grid.patch_shape)
    if not isinstance(patches, np.ndarray) or patches.shape != expected:
        got = patches.shape if isinstance(patches, np.ndarray) else type(patches).__name__
        raise InvalidParameterError(
            f"{where}: patches must be an array of shape {expected} "
            f"(n_patches, *patch_shape); got {got}"
        )
    acc = _WeightedMean(grid, 1, None)
    starts = grid.starts
    step = 64  # convert to float32 a few patches at a time
    for i in range(0, grid.n_patches, step):
        chunk = np.asarray(patches[i : i + step], dtype=np.float32)
        for values, start in zip(chunk, starts[i : i + step]):
            acc.add(values[None], start)
    return acc.result()[0]


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
    axes = []
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
        return np.greater_equal(probs[0], np.float32(threshold)).view(np.uint8)
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
