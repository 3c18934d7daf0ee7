"""The patch grid of a volume, the padding of its end, and the running mean on the grid.

Shared by :mod:`ctflow.ops.patches` (cutting and assembling patches) and
:mod:`ctflow.ops.patches_predict` (predicting on a volume patch by patch).

Grid convention
---------------
Patches of ``patch_shape`` start at multiples of ``stride`` (``1 <= stride <= patch_shape`` on
every axis, so every voxel is covered). To cover the whole volume, it is padded **at the end**
of each axis up to the smallest ``padded >= patch`` with ``(padded - patch) % stride == 0``;
there are ``(padded - patch) // stride + 1`` patches per axis, numbered in C order over
(z, y, x) start positions (:attr:`PatchGrid.starts`). :class:`PatchGrid` holds all of this,
computed from the original shape, the patch shape and the stride.

Running mean
------------
:class:`_WeightedMean` averages the overlapping values of each voxel, for
:func:`~ctflow.ops.patches.assemble_patches` and
:func:`~ctflow.ops.patches_predict.predict_on_volume`. The average is accumulated in float32 as a
running (weighted) mean, ``mean += (value - mean) * w / W`` with ``W`` the weight summed so far
(the contribution count when every weight is 1), instead of ``sum / W``: it is as accurate and
it is exact when all contributions to a voxel are equal, so ``assemble_patches(*get_patches(x))``
gives back ``x`` bit for bit (as float32) for every stride, and so does ``predict_on_volume``
with an identity model, with either blending. Only voxels inside the volume are accumulated (the
padded margin never is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.kernels.patches import fold_counts, fold_weights
from ctflow.threads import available_threads, run_ranges
from ctflow.validation import as_shape

__all__ = ["PatchGrid", "patch_grid"]

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
        if values.dtype != np.float32:
            values = values.astype(np.float32)
        mean, total, weights = self.mean, self.total, self.weights

        # one pass over the region (kernels.patches: the arithmetic below, bit for bit), its
        # planes split between the threads; exactly 1 / 1 and w / w for a first contribution
        def part(k0: int, k1: int) -> None:
            if weights is None:
                fold_counts(mean, total, values, z, y, x, dy, dx, k0, k1)
            else:
                fold_weights(mean, total, values, weights, z, y, x, dy, dx, k0, k1)

        run_ranges(part, dz, available_threads(), min_size=4)

    def result(self) -> NDArray[np.float32]:
        """Return the ``(C, Z, Y, X)`` mean volume (no copy)."""
        return self.mean
