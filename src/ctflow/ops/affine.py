"""Resampling a scan onto any grid, through world coordinates.

:func:`resample_to` fills a target grid (shape + :class:`~ctflow.geometry.Geometry`) with the
values of a scan at the same world positions: output voxel ``o`` takes the scan at continuous
index ``A_src^-1 A_dst o`` (``A`` = a geometry's voxel-to-world affine), trilinear or nearest
(:mod:`ctflow.kernels.affine`). Grids may differ in spacing, origin, extent and direction (any
rotation or axis permutation). Because every ctflow action keeps voxels at their world
positions, this one pass is also the way back from a processed scan to the grid it was loaded
with (``invert``), and the way a label file is put on its image's grid (``load``).

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> img = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
>>> out = resample_to(img, Geometry((1, 1, 1)), Geometry((1, 1, 1), (0, 0, 0.5)), (2, 2, 1))
>>> out.ravel().tolist()          # halfway between x = 0 and x = 1
[0.5, 2.5, 4.5, 6.5]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ctflow import memory
from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.kernels.affine import _HALF, affine_linear, affine_nearest
from ctflow.threads import run_ranges
from ctflow.validation import (
    as_choice,
    as_dtype,
    as_float,
    as_shape,
    as_threads,
    check_geometry,
    check_volume,
)

__all__ = [
    "LABEL_MODES",
    "affine_matrix",
    "resample_labels_to",
    "resample_matrix",
    "resample_to",
]

#: How label maps are resampled: ``"nearest"`` copies the nearest voxel's label;
#: ``"onehot"`` interpolates each label's indicator linearly and keeps the largest.
LABEL_MODES = ("nearest", "onehot")

_DTYPES = (np.float32, np.int16, np.uint8, np.int8, np.uint16, np.int32, np.uint32, np.int64)


def affine_matrix(source: Geometry, target: Geometry) -> NDArray[np.float64]:
    """Return the 3x4 map from target voxel indices to source voxel indices (same world point).

    Examples
    --------
    >>> affine_matrix(Geometry((2, 2, 2)), Geometry((1, 1, 1))).round(3).tolist()[0]
    [0.5, 0.0, 0.0, 0.0]
    """
    src = check_geometry(source, "affine_matrix")
    dst = check_geometry(target, "affine_matrix")
    m = np.linalg.solve(src.affine, dst.affine)
    return np.ascontiguousarray(m[:3, :], dtype=np.float64)


def output_arrays(
    image: NDArray[Any], shape: Any, order: int, cval: float, dtype: DTypeLike | None, where: str
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Return ``(out, src, dst)`` of a resampling: the output array and the kernels' views.

    The output dtype is ``dtype``, else the image's for ``order=0`` (float32 for float64) and
    float32 for ``order=1``; ``cval`` must fit it. Bool arrays are seen as uint8 by the kernels;
    a source that is not C-contiguous is copied once (the linear kernel reads it through a flat
    view). (Shared by :func:`resample_matrix` and :func:`ctflow.ops.warp.warp`.)
    """
    if dtype is not None:
        out_dtype = as_dtype(dtype, _DTYPES, "dtype", where)
        assert out_dtype is not None
    elif order == 0:
        out_dtype = np.dtype(np.float32) if image.dtype == np.float64 else image.dtype
    else:
        out_dtype = np.dtype(np.float32)
    if out_dtype.kind in "iu":
        info = np.iinfo(out_dtype)
        if not info.min <= round(cval) <= info.max:
            raise InvalidParameterError(
                f"{where}: cval {cval:g} does not fit the output dtype {out_dtype}"
            )
    out = memory.empty(as_shape(shape, where=where), out_dtype)
    src = np.ascontiguousarray(image.view(np.uint8) if image.dtype == np.bool_ else image)
    dst = out.view(np.uint8) if out_dtype == np.bool_ else out
    return out, src, dst


def resample_to(
    image: NDArray[Any],
    geometry: Geometry,
    target: Geometry,
    shape: Any,
    *,
    order: int = 1,
    cval: float = -1000.0,
    dtype: DTypeLike | None = None,
    n_threads: int = 1,
) -> NDArray[Any]:
    """Return the values of ``image`` on the grid ``target`` x ``shape`` (same world points).

    Parameters
    ----------
    image : ndarray (Z, Y, X)
        The scan (any real dtype; labels with ``order=0``).
    geometry : Geometry
        The scan's geometry.
    target : Geometry
        The grid to fill: spacing, origin and direction.
    shape : 3 ints
        The grid's (Z, Y, X).
    order : {0, 1}, default 1
        0 nearest (labels: values are copied, never mixed), 1 trilinear.
    cval : float, default -1000
        Value where the target grid leaves the scan (air for HU; use 0 for masks).
    dtype : numpy dtype, optional
        Output dtype (default float32 for ``order=1``; the input's for ``order=0``). Integer
        outputs of ``order=1`` are rounded half away from zero.
    n_threads : int, default 1
        Threads splitting the output planes.

    Returns
    -------
    ndarray
        ``shape``, C-contiguous.
    """
    where = "resample_to"
    src = check_geometry(geometry, where)
    dst = check_geometry(target, where)
    return resample_matrix(
        image,
        affine_matrix(src, dst),
        shape,
        order=order,
        cval=cval,
        dtype=dtype,
        n_threads=n_threads,
        where=where,
    )


def resample_matrix(
    image: NDArray[Any],
    matrix: Any,
    shape: Any,
    *,
    order: int = 1,
    cval: float = -1000.0,
    dtype: DTypeLike | None = None,
    n_threads: int = 1,
    where: str = "resample_matrix",
) -> NDArray[Any]:
    """Return ``image`` sampled on a grid of ``shape`` through an index map.

    Output voxel ``o`` takes ``image`` at the continuous index ``matrix[:3, :3] @ o +
    matrix[:3, 3]`` (a 3x4 or 4x4 map from output to input voxel indices), with the rules of
    :func:`resample_to` (which is this function with the map between two grids).

    Examples
    --------
    >>> img = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    >>> flip_x = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 3]]
    >>> resample_matrix(img, flip_x, (1, 1, 4), order=0).ravel().tolist()
    [3.0, 2.0, 1.0, 0.0]
    """
    img = check_volume(image, where)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape not in ((3, 4), (4, 4)) or not np.all(np.isfinite(m)):
        raise InvalidParameterError(f"{where}: matrix must be a finite 3x4 or 4x4 index map")
    m = np.ascontiguousarray(m[:3, :])
    as_choice(order, (0, 1), "order", where)
    value = as_float(cval, "cval", where)
    threads = as_threads(n_threads, where)
    out, src_arr, dst_arr = output_arrays(img, shape, order, value, dtype, where)
    out_shape = out.shape
    if _is_diagonal(m):
        _separable(src_arr, dst_arr, m, order, value, threads)
        return out
    if order == 0:
        fill = dst_arr.dtype.type(round(value) if dst_arr.dtype.kind in "iu" else value)

        def part(z0: int, z1: int) -> None:
            affine_nearest(src_arr, dst_arr, m, fill, z0, z1)
    else:
        round_out = dst_arr.dtype.kind in "iu"

        def part(z0: int, z1: int) -> None:
            affine_linear(src_arr, dst_arr, m, value, z0, z1, round_out)

    run_ranges(part, out_shape[0], threads, per_thread=2)
    return out


def _is_diagonal(m: NDArray[np.float64]) -> bool:
    """Whether each output axis reads one source axis (resampling, crops, pads, flips)."""
    lin = m[:, :3]
    return bool(np.all(np.abs(lin - np.diag(np.diag(lin))) < 1e-12))


def _extent_table(
    n_old: int, n_new: int, scale: float, offset: float, order: int
) -> tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.float32]]:
    """Taps of one axis of a diagonal map, with the affine kernels' rules (see the module).

    A sample at ``p = scale * k + offset`` is inside when ``-0.5 <= p < n_old - 0.5``; nearest
    takes ``floor(p + 0.5 + 1e-9)``, linear the two voxels around ``p`` clamped to the edge
    voxels' centres.
    """
    pos = scale * np.arange(n_new, dtype=np.float64) + offset
    inside = ((pos >= -0.5) & (pos <= n_old - 0.5 - 2e-9)).astype(np.float32)
    p = np.clip(pos, 0.0, n_old - 1.0)
    if order == 0:
        idx = np.clip(np.floor(p + _HALF), 0, n_old - 1).astype(np.uint64)[:, None]
        return idx, np.ones((n_new, 1), dtype=np.float32), inside
    if n_old == 1:
        w = np.zeros((n_new, 2), dtype=np.float32)
        w[:, 0] = 1.0
        return np.zeros((n_new, 2), dtype=np.uint64), w, inside
    i0 = np.minimum(np.floor(p), n_old - 2).astype(np.int64)
    t = p - i0
    idx = np.stack([i0, i0 + 1], axis=1).astype(np.uint64)
    return idx, np.stack([1.0 - t, t], axis=1).astype(np.float32), inside


def _separable(
    src: NDArray[Any], out: NDArray[Any], m: NDArray[np.float64], order: int, cval: float, n: int
) -> None:
    """Resample through a diagonal map with the separable kernels (one source slice once).

    Equal to the affine kernels' result (weights in float32), and several times faster: a
    crop of a resampled scan reads each source plane once instead of 8 scattered voxels per
    output voxel.
    """
    from ctflow.kernels.resample import resample_nearest, resample_separable

    (iz, wz, inz), (iy, wy, iny), (ix, wx, inx) = (
        _extent_table(src.shape[a], out.shape[a], float(m[a, a]), float(m[a, 3]), order)
        for a in range(3)
    )
    is_int = out.dtype.kind in "iu"
    lo, hi = (float(np.iinfo(out.dtype).min), float(np.iinfo(out.dtype).max)) if is_int else (0, 0)
    if order == 0:
        fill = out.dtype.type(round(cval) if is_int else cval)
        round_out = is_int and src.dtype.kind == "f"

        def part(z0: int, z1: int) -> None:
            resample_nearest(
                src,
                out,
                iz[:, 0],
                iy[:, 0],
                ix[:, 0],
                inz,
                iny,
                inx,
                fill,
                round_out,
                lo,
                hi,
                z0,
                z1,
            )
    else:

        def part(z0: int, z1: int) -> None:
            resample_separable(
                src, out, iz, wz, iy, wy, ix, wx, inz, iny, inx, True, cval, is_int, lo, hi, z0, z1
            )

    run_ranges(part, out.shape[0], n, per_thread=2)


def resample_labels_to(
    labels: NDArray[Any],
    geometry: Geometry,
    target: Geometry,
    shape: Any,
    *,
    mode: str = "nearest",
    n_threads: int = 1,
) -> NDArray[Any]:
    """Return a label map on another grid, label values kept (never blended).

    ``mode="nearest"`` takes the label of the nearest voxel. ``mode="onehot"`` interpolates
    every label's indicator (1 inside, 0 outside) trilinearly and keeps, per voxel, the label
    with the largest value — smoother boundaries when the grid is much finer, at the cost of
    one linear pass per label (as MONAI's one-hot resampling). Outside the map: 0.

    Examples
    --------
    >>> lab = np.zeros((1, 1, 4), np.uint8); lab[0, 0, 2:] = 3
    >>> fine = Geometry((1.0, 1.0, 0.5), (0.0, 0.0, -0.25))
    >>> resample_labels_to(lab, Geometry((1, 1, 1)), fine, (1, 1, 8), mode="onehot").tolist()
    [[[0, 0, 0, 0, 3, 3, 3, 3]]]
    """
    from ctflow.labels import resample_mask

    as_choice(mode, LABEL_MODES, "mode", "resample_labels_to")
    out_shape = as_shape(shape, where="resample_labels_to")
    kw: dict[str, Any] = {"n_threads": n_threads}

    def linear(v: NDArray[Any], outside: float) -> NDArray[Any]:
        return resample_to(v, geometry, target, out_shape, order=1, cval=outside, **kw)

    def nearest(v: NDArray[Any]) -> NDArray[Any]:
        return resample_to(v, geometry, target, out_shape, order=0, cval=0, **kw)

    return np.asarray(resample_mask(labels, linear, nearest, mode))
