"""Label maps: reading a label file onto its scan's grid, label encodings.

A label file (organs, lobes, lesions — a NIfTI, MetaImage or NRRD of integer labels) often
differs from its scan in stored orientation, spacing, origin or extent. :func:`labels_on_grid`
puts it on the scan's grid through world coordinates with nearest neighbour, so every label
value is kept exactly (never blended): the result equals SimpleITK's nearest-neighbour resample
of the label onto the scan, and a pure axis permutation or flip is exact. Labels are stored as
uint8, or uint16 when a value exceeds 255.

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> lab = np.array([[[0, 1], [2, 5]]], np.int16)
>>> flipped = Geometry((1, 1, 1), (0, 0, 1), np.diag([1.0, 1.0, -1.0]))  # x stored reversed
>>> labels_on_grid(lab, flipped, Geometry((1, 1, 1)), (1, 2, 2)).tolist()
[[[1, 0], [5, 2]]]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidScanError
from ctflow.geometry import Geometry
from ctflow.validation import as_shape, as_threads, check_geometry

__all__ = [
    "argmax",
    "each_channel",
    "label_dtype",
    "labels_on_grid",
    "one_hot",
    "resample_mask",
    "to_labels",
]


def label_dtype(values: NDArray[Any], where: str = "labels") -> np.dtype[Any]:
    """Return uint8, or uint16 when a label exceeds 255; refuse negative or huge labels.

    Examples
    --------
    >>> label_dtype(np.array([0, 3, 300]))
    dtype('uint16')
    """
    if values.size == 0:
        return np.dtype(np.uint8)
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > 65535:
        raise InvalidScanError(
            f"{where}: label values must be integers in [0, 65535]; got {lo:g}..{hi:g}"
        )
    return np.dtype(np.uint8) if hi <= 255 else np.dtype(np.uint16)


def to_labels(values: NDArray[Any], where: str = "labels") -> NDArray[Any]:
    """Return ``values`` as uint8/uint16 labels; refuse non-integer values (a probability map).

    Examples
    --------
    >>> to_labels(np.array([0.0, 2.0, 5.0])).dtype
    dtype('uint8')
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InvalidScanError(f"{where}: label values must be finite integers; found NaN/Inf")
        if not np.array_equal(arr, np.round(arr)):
            raise InvalidScanError(
                f"{where}: label values must be integers; found fractional values (a "
                f"probability map? threshold it first)"
            )
    elif arr.dtype.kind not in "biu":
        raise InvalidScanError(f"{where}: labels must be numbers; got dtype {arr.dtype}")
    dt = label_dtype(arr, where)
    return arr if arr.dtype == dt else arr.astype(dt)


def labels_on_grid(
    labels: NDArray[Any],
    geometry: Geometry,
    target: Geometry,
    shape: Any,
    *,
    where: str = "labels",
    n_threads: int = 1,
) -> NDArray[Any]:
    """Return a label map on the grid ``target`` x ``shape`` (nearest neighbour, values kept).

    Parameters
    ----------
    labels : ndarray (Z, Y, X) of integers
        The label map as stored.
    geometry : Geometry
        Its geometry.
    target : Geometry
        The scan's geometry.
    shape : 3 ints
        The scan's (Z, Y, X).
    where : str
        What the labels are, for the messages (e.g. the file).
    n_threads : int, default 1

    Returns
    -------
    ndarray
        uint8 (or uint16) labels on the scan's grid; 0 where the label map does not reach.

    Raises
    ------
    InvalidScanError
        Non-integer or negative values, or a label map that does not overlap the scan at all.
    """
    from ctflow.ops.affine import affine_matrix, resample_to

    src = check_geometry(geometry, "labels_on_grid")
    dst = check_geometry(target, "labels_on_grid")
    out_shape = as_shape(shape, where="labels_on_grid")
    threads = as_threads(n_threads, "labels_on_grid")
    values = to_labels(labels, where)
    if values.shape == out_shape and src == dst:
        return np.ascontiguousarray(values)
    m = affine_matrix(src, dst)
    corners = np.array(
        [[z, y, x] for z in (0, out_shape[0] - 1) for y in (0, out_shape[1] - 1)
         for x in (0, out_shape[2] - 1)],
        np.float64,
    )  # fmt: skip
    src_corners = corners @ m[:, :3].T + m[:, 3]
    lo, hi = src_corners.min(axis=0), src_corners.max(axis=0)
    n = np.asarray(values.shape, np.float64)
    if np.any(hi < -0.5) or np.any(lo > n - 0.5):
        raise InvalidScanError(
            f"{where}: the label map does not overlap its scan (its grid {values.shape} at "
            f"{src!r}; the scan's {out_shape} at {dst!r})"
        )
    return resample_to(values, src, dst, out_shape, order=0, cval=0, n_threads=threads)


def each_channel(arr: NDArray[Any], fn: Any) -> NDArray[Any]:
    """Apply a (Z, Y, X) -> (Z', Y', X') function to a volume, or to each channel of one.

    ``arr`` is (Z, Y, X) — ``fn(arr)`` is returned — or (C, Z, Y, X): ``fn`` runs on every
    channel and the results are stacked channel-first into one new array.

    Examples
    --------
    >>> each_channel(np.zeros((2, 3, 4, 5)), lambda v: v[:, :2]).shape
    (2, 3, 2, 5)
    """
    if arr.ndim == 3:
        return np.asarray(fn(arr))
    first = np.asarray(fn(arr[0]))
    out = np.empty((arr.shape[0], *first.shape), first.dtype)
    out[0] = first
    for c in range(1, arr.shape[0]):
        out[c] = fn(arr[c])
    return out


def resample_mask(arr: NDArray[Any], linear: Any, nearest: Any, mode: str = "nearest") -> Any:
    """Resample a mask the way its content asks: probabilities linear, labels kept.

    Parameters
    ----------
    arr : ndarray (Z, Y, X) or (C, Z, Y, X)
        Float values are probabilities (each channel interpolated linearly, 0 outside);
        integer values are labels.
    linear : callable (float32 volume, outside value) -> float32 volume
        The resampling with linear interpolation, ``outside`` where the grid leaves the volume.
    nearest : callable (volume) -> volume
        The resampling with nearest neighbour, 0 outside.
    mode : {"nearest", "onehot"}
        Labels: the nearest voxel's label, or each label's indicator interpolated linearly
        and the largest kept (smoother boundaries on much finer grids; one pass per label).

    Examples
    --------
    >>> lab = np.array([[[0, 0, 2, 2]]], np.uint8)
    >>> up = lambda v, outside: np.repeat(v.astype(np.float32), 2, axis=2)
    >>> resample_mask(lab, up, lambda v: np.repeat(v, 2, axis=2), "onehot").tolist()
    [[[0, 0, 0, 0, 2, 2, 2, 2]]]
    """
    from ctflow.ops.affine import LABEL_MODES
    from ctflow.validation import as_choice

    as_choice(mode, LABEL_MODES, "labels_interpolation", "resample_mask")
    if arr.ndim == 4:
        return each_channel(arr, lambda v: resample_mask(v, linear, nearest, mode))
    if arr.dtype.kind == "f":
        return linear(arr, 0.0)
    if mode == "nearest" or arr.dtype == np.bool_:
        return nearest(arr)
    out: NDArray[Any] | None = None
    best: NDArray[Any] | None = None
    for v in np.unique(arr).tolist():
        p = np.asarray(linear((arr == v).astype(np.float32), 1.0 if v == 0 else 0.0))
        if out is None or best is None:
            out = np.full(p.shape, v, arr.dtype)
            best = p
            continue
        better = p > best
        out[better] = v
        np.maximum(best, p, out=best)
    assert out is not None
    return out


def one_hot(
    labels: NDArray[Any],
    n_classes: int | None = None,
    *,
    values: Any = None,
    dtype: Any = np.uint8,
) -> NDArray[Any]:
    """Return a (C, Z, Y, X) one-hot encoding of a label map.

    Channel ``c`` is 1 where the label is ``c`` (``n_classes`` channels, labels
    ``0 .. n_classes - 1``), or where it is ``values[c]`` when ``values`` lists the labels
    (e.g. ``(0, 1, 2, 5)``: four channels for labels that are not consecutive).

    Raises
    ------
    InvalidScanError
        A label outside ``0 .. n_classes - 1`` / not in ``values`` (it would vanish).

    Examples
    --------
    >>> one_hot(np.array([[[0, 2, 5]]], np.uint8), values=(0, 2, 5))[:, 0, 0].tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """
    lab = to_labels(labels, "one_hot")
    if values is None:
        if n_classes is None:
            raise InvalidScanError("one_hot: give n_classes or values")
        values = list(range(int(n_classes)))
    vals = [int(v) for v in values]
    present = np.unique(lab)
    missing = sorted(set(present.tolist()) - set(vals))
    if missing:
        raise InvalidScanError(
            f"one_hot: labels {missing} have no channel (channels are for labels {vals})"
        )
    out = np.empty((len(vals), *lab.shape), dtype)
    for c, v in enumerate(vals):
        np.equal(lab, v, out=out[c], casting="unsafe")
    return out


def argmax(probabilities: NDArray[Any], *, values: Any = None) -> NDArray[Any]:
    """Return the label of the largest channel of a (C, Z, Y, X) array, per voxel.

    Channel ``c`` stands for label ``c``, or ``values[c]`` when given. Ties go to the first
    channel. Labels are uint8 (uint16 above 255).

    Examples
    --------
    >>> p = np.array([[[[0.2, 0.7]]], [[[0.8, 0.3]]]], np.float32)  # 2 channels, 1x1x2 voxels
    >>> argmax(p, values=(0, 5)).tolist()
    [[[5, 0]]]
    """
    arr = np.asarray(probabilities)
    if arr.ndim != 4:
        raise InvalidScanError(f"argmax: expected (C, Z, Y, X) channels; got shape {arr.shape}")
    vals = list(range(arr.shape[0])) if values is None else [int(v) for v in values]
    if len(vals) != arr.shape[0]:
        raise InvalidScanError(f"argmax: {arr.shape[0]} channels but {len(vals)} label values")
    dt = label_dtype(np.asarray(vals), "argmax")
    out = np.zeros(arr.shape[1:], dt)
    best = arr[0].copy()
    if vals[0]:
        out[...] = vals[0]
    for c in range(1, arr.shape[0]):
        better = arr[c] > best
        out[better] = vals[c]
        np.maximum(best, arr[c], out=best)
    return out
