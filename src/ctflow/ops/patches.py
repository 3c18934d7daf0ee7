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
voxel. The average is accumulated in float32 as a running mean, ``mean += (value - mean) /
count`` with a per-voxel contribution count, instead of ``sum / count``: it is as accurate and
it is exact when all contributions to a voxel are equal, so ``assemble_patches(*get_patches(x))``
gives back ``x`` bit for bit (as float32) for every stride. The padded margin is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.validation import as_int, as_shape, check_volume

__all__ = ["PatchGrid", "assemble_patches", "get_patches", "patch_grid", "predict_on_volume"]

PadValue = float | Literal["edge"]
Shape3 = tuple[int, int, int]


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


def _pad_to_grid(image: NDArray[Any], grid: PatchGrid, pad_value: Any, where: str) -> NDArray[Any]:
    """Pad ``image`` at the end of each axis to ``grid.padded_shape`` (edge or a constant)."""
    widths = [(0, d - n) for d, n in zip(grid.padded_shape, image.shape)]
    if pad_value == "edge":
        return np.pad(image, widths, mode="edge") if any(w for _, w in widths) else image
    if isinstance(pad_value, bool) or not isinstance(pad_value, int | float | np.number):
        raise InvalidParameterError(
            f"{where}: pad_value must be a number or 'edge'; got {pad_value!r}"
        )
    value = float(pad_value)
    if image.dtype.kind in "iu":
        info = np.iinfo(image.dtype)
        if not (info.min <= value <= info.max and value.is_integer()):
            raise InvalidParameterError(
                f"{where}: pad_value must be an integer in [{info.min}, {info.max}] for an "
                f"{image.dtype} image; got {pad_value!r}"
            )
    elif not np.isfinite(value) and image.dtype.kind != "f":
        raise InvalidParameterError(f"{where}: pad_value must be finite; got {pad_value!r}")
    if not any(w for _, w in widths):
        return image
    return np.pad(image, widths, mode="constant", constant_values=np.asarray(value, image.dtype))


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


class _RunningMean:
    """float32 running mean of patch values per voxel (see the module docstring)."""

    def __init__(self, grid: PatchGrid) -> None:
        self.grid = grid
        self.out = np.zeros(grid.padded_shape, np.float32)
        count_dtype = np.uint16 if grid.max_count <= np.iinfo(np.uint16).max else np.float32
        self.count = np.zeros(grid.padded_shape, count_dtype)

    def add(self, patches: NDArray[np.float32], starts: NDArray[np.int64]) -> None:
        """Fold patches starting at ``starts`` into the running mean."""
        pz, py, px = self.grid.patch_shape
        for patch, (z, y, x) in zip(patches, starts):
            sl = (slice(z, z + pz), slice(y, y + py), slice(x, x + px))
            mean = self.out[sl]
            count = self.count[sl]
            count += 1
            delta = patch - mean
            delta /= count  # float32 / uint16 -> float32, in place
            mean += delta

    def result(self) -> NDArray[np.float32]:
        """Return the mean volume without the padded margin."""
        nz, ny, nx = self.grid.shape
        if self.out.shape == self.grid.shape:
            return self.out
        return np.ascontiguousarray(self.out[:nz, :ny, :nx])


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
    acc = _RunningMean(grid)
    starts = grid.starts
    step = 64  # convert to float32 a few patches at a time
    for i in range(0, grid.n_patches, step):
        acc.add(np.asarray(patches[i : i + step], dtype=np.float32), starts[i : i + step])
    return acc.result()


def predict_on_volume(
    image: NDArray[Any],
    fn: Callable[[NDArray[Any]], ArrayLike],
    patch_shape: ArrayLike,
    stride: ArrayLike | None = None,
    batch_size: int = 8,
    *,
    pad_value: PadValue = "edge",
) -> NDArray[np.float32]:
    """Run ``fn`` on batches of patches of a volume and assemble its outputs into a volume.

    Patches are cut on demand (at most ``batch_size`` at a time besides the output), so this
    works on whole scans with a network that only takes small patches.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume.
    fn : callable
        ``fn(batch) -> predictions``: ``batch`` is an ndarray ``(B, pz, py, px)`` in the image
        dtype, ``B <= batch_size``; the predictions must have the same shape (any real dtype;
        converted to float32).
    patch_shape : int or 3 ints
        Shape of a patch.
    stride : int or 3 ints, optional
        Step between patches, ``1 <= stride <= patch_shape``; default ``patch_shape``.
    batch_size : int, default 8
        Patches per call of ``fn``.
    pad_value : float or "edge", default "edge"
        Padding of the volume's end, as in :func:`get_patches`.

    Returns
    -------
    ndarray, float32, shape ``image.shape``
        Predictions averaged over overlapping patches.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(9, 10, 11)).astype(np.float32)
    >>> y = predict_on_volume(x, lambda b: 2 * b, patch_shape=4, stride=3, batch_size=5)
    >>> bool(np.array_equal(y, 2 * x))
    True
    """
    where = "predict_on_volume"
    image = check_volume(image, where)
    if not callable(fn):
        raise InvalidParameterError(f"{where}: fn must be callable; got {type(fn).__name__}")
    batch_size = as_int(batch_size, "batch_size", where, lo=1)
    grid = patch_grid(image.shape, patch_shape, stride)
    padded = _pad_to_grid(image, grid, pad_value, where)
    pz, py, px = grid.patch_shape
    starts = grid.starts
    acc = _RunningMean(grid)
    for i in range(0, grid.n_patches, batch_size):
        chunk = starts[i : i + batch_size]
        batch = np.stack([padded[z : z + pz, y : y + py, x : x + px] for z, y, x in chunk])
        pred = np.asarray(fn(batch))
        if pred.shape != batch.shape or pred.dtype.kind not in "biuf":
            raise InvalidParameterError(
                f"{where}: fn must return a real array of the batch's shape {batch.shape}; "
                f"got {pred.dtype} array of shape {pred.shape}"
            )
        acc.add(pred.astype(np.float32, copy=False), chunk)
    return acc.result()
