"""Cut a volume into (overlapping) patches and put patch values back into a volume.

:func:`get_patches` cuts a volume into the patches of its :class:`PatchGrid` and
:func:`assemble_patches` averages them back; the grid convention and how overlapping values are
averaged are described in :mod:`ctflow.ops.patches_grid`. Predicting on a volume patch by patch
(:func:`predict_on_volume`) is :mod:`ctflow.ops.patches_predict`. The public names of both
modules are importable from here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.ops.patches_grid import PadValue, PatchGrid, _pad_to_grid, _WeightedMean, patch_grid
from ctflow.ops.patches_predict import (
    GAUSSIAN_FLOOR,
    as_flips,
    as_sigma_scale,
    gaussian_weights,
    predict_on_volume,
)
from ctflow.validation import check_volume

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
    return acc.result()[0, ...]
