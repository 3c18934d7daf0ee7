"""Per-axis building blocks of :mod:`ctflow.ops.resample`: tap tables and separable filters.

Resampling is separable: along each axis, output sample ``k`` reads a few source samples
(*taps*) with fixed weights. :func:`axis_table` computes those taps once per axis (padding
already applied), and the numba kernels of :mod:`ctflow.kernels.resample` combine the three
tables. Two filters run along whole axes before interpolating, in place on float32 volumes:
:func:`bspline_coefficients` (cubic B-spline prefilter, order 3) and
:func:`smooth_for_downsampling` (gaussian anti-aliasing). The conventions (centred grids,
``padding`` rules, ITK's nearest-neighbour rounding) are those of :mod:`ctflow.ops.resample`.

Examples
--------
>>> idx, w, inside = axis_table(3, 5, 0.5, 1, "edge")   # 3 samples to 5, linear
>>> idx.tolist()
[[0, 1], [0, 1], [1, 2], [1, 2], [1, 2]]
>>> w.tolist()
[[1.0, 0.0], [0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.kernels.resample import bspline_prefilter, gaussian_axis
from ctflow.threads import run_ranges

__all__ = [
    "HORIZON",
    "POLE",
    "along_axis",
    "axis_table",
    "bspline_coefficients",
    "gaussian_weights",
    "smooth_for_downsampling",
]

#: Pole of the cubic B-spline prefilter, ``sqrt(3) - 2``.
POLE = float(np.sqrt(3.0) - 2.0)
#: Terms of the causal initial sum of the B-spline prefilter (``|POLE| ** 13 < 4e-8``).
HORIZON = 13


#: ``floor(p + _HALF)`` is ITK's nearest index ``floor(p + 0.5)`` (ties go up), made robust to
#: the last bits of float error: a centred grid puts whole planes of samples on exact ``.5``
#: ties, which ``(n - 1) / 2 + k * ratio`` computes as 9.499999999999996 as often as 9.5.
_HALF = 0.5 + 1e-9


def _reflect(pos: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """Mirror continuous positions into ``[0, n - 1]`` without repeating the edge sample."""
    if n == 1:
        return np.zeros_like(pos)
    period = 2.0 * (n - 1)
    r = np.mod(pos, period)
    return np.where(r > n - 1, period - r, r)


def _reflect_index(idx: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """Mirror integer indices into ``[0, n - 1]`` without repeating the edge sample."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    r = np.mod(idx, period)
    return np.where(r > n - 1, period - r, r)


def axis_table(
    n_old: int, n_new: int, ratio: float, order: int, padding: str
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
    """Compute the taps of one axis: source indices, weights and "inside" weights.

    Output sample ``k`` sits at the source position ``p = c_old + (k - c_new) * ratio``
    (``c = (n - 1) / 2``). ``"edge"`` clamps ``p`` to ``[0, n_old - 1]``, ``"reflect"`` mirrors
    it, ``"constant"`` clamps it and records how much of the sample is inside the source.

    Parameters
    ----------
    n_old, n_new : int
        Source and output lengths of the axis.
    ratio : float
        ``new_spacing / old_spacing`` along the axis.
    order : {0, 1, 3}
        Nearest (1 tap, index ``floor(p + 0.5)``), linear (2 taps) or cubic B-spline (4 taps,
        mirrored indices).
    padding : {"edge", "reflect", "constant"}
        How positions outside the source are handled.

    Returns
    -------
    idx : ndarray (n_new, taps) int64
        Source indices, all inside ``[0, n_old - 1]``.
    weights : ndarray (n_new, taps) float32
        Weight of each tap (summing to 1).
    inside : ndarray (n_new,) float32
        Weight of the source signal against ``cval``: 1 except with ``"constant"`` padding,
        where it is ``max(0, 1 - d)`` (``d`` = distance outside, voxels; order 0: 0 or 1).

    Examples
    --------
    >>> idx, w, inside = axis_table(4, 2, 1.0, 0, "constant")  # 2 samples centred on 4
    >>> idx.ravel().tolist(), inside.tolist()
    ([1, 2], [1.0, 1.0])
    >>> axis_table(4, 6, 1.0, 0, "constant")[2].tolist()  # one sample beyond each end
    [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    """
    k = np.arange(n_new, dtype=np.float64)
    pos = (n_old - 1) / 2.0 + (k - (n_new - 1) / 2.0) * ratio
    inside = np.ones(n_new, dtype=np.float32)
    if padding == "reflect":
        p = _reflect(pos, n_old)
    else:
        p = np.clip(pos, 0.0, n_old - 1.0)
        if padding == "constant":
            if order == 0:
                near = np.floor(pos + _HALF)
                inside = ((near >= 0) & (near <= n_old - 1)).astype(np.float32)
            else:
                d = np.maximum(0.0, np.maximum(-pos, pos - (n_old - 1)))
                inside = np.clip(1.0 - d, 0.0, 1.0).astype(np.float32)
    if order == 0:
        idx = np.clip(np.floor(p + _HALF), 0, n_old - 1).astype(np.int64)[:, None]
        return idx, np.ones((n_new, 1), dtype=np.float32), inside
    if order == 1:
        if n_old == 1:
            idx = np.zeros((n_new, 2), dtype=np.int64)
            w = np.zeros((n_new, 2), dtype=np.float32)
            w[:, 0] = 1.0
            return idx, w, inside
        i0 = np.minimum(np.floor(p), n_old - 2).astype(np.int64)
        t = p - i0
        idx = np.stack([i0, i0 + 1], axis=1)
        w = np.stack([1.0 - t, t], axis=1).astype(np.float32)
        return idx, w, inside
    # cubic B-spline
    i0 = np.floor(p).astype(np.int64)
    t = p - i0
    taps = i0[:, None] + np.arange(-1, 3)[None, :]
    idx = _reflect_index(taps, n_old)
    t2 = t * t
    t3 = t2 * t
    w = np.stack(
        [
            (1.0 - t) ** 3 / 6.0,
            (4.0 - 6.0 * t2 + 3.0 * t3) / 6.0,
            (1.0 + 3.0 * t + 3.0 * t2 - 3.0 * t3) / 6.0,
            t3 / 6.0,
        ],
        axis=1,
    ).astype(np.float32)
    return idx, w, inside


def along_axis(
    vol: NDArray[np.float32],
    axis: int,
    kernel: Callable[..., None],
    args: tuple[Any, ...],
    n_threads: int,
) -> None:
    """Run an in-place 1-D ``kernel(view, *args)`` along ``axis`` of ``vol``, over threads.

    The kernel sees ``(outer, n, inner)`` views with the axis in the middle; the work is split
    over ``outer`` (or over ``inner`` when ``outer`` is smaller than ``n_threads``).

    Parameters
    ----------
    vol : ndarray (z, y, x) float32
        C-contiguous volume, modified in place.
    axis : int
        0, 1 or 2.
    kernel : callable
        ``kernel(view, *args)`` filtering the middle axis of a 3-D view in place.
    args : tuple
        Extra arguments of the kernel.
    n_threads : int
        Threads to split the work over.

    Examples
    --------
    >>> vol = np.zeros((2, 3, 4), np.float32)
    >>> along_axis(vol, 2, lambda v, c: v.__iadd__(c), (1.0,), 1)
    >>> float(vol.sum())
    24.0
    """
    z, y, x = vol.shape
    outer, n, inner = ((1, z, y * x), (z, y, x), (z * y, x, 1))[axis]
    view = vol.reshape(outer, n, inner)

    def over_outer(a: int, b: int) -> None:
        kernel(view[a:b], *args)

    def over_inner(a: int, b: int) -> None:
        kernel(view[:, :, a:b], *args)

    if outer >= n_threads:
        run_ranges(over_outer, outer, n_threads)
    else:
        run_ranges(over_inner, inner, n_threads)


def bspline_coefficients(
    src: NDArray[Any], n_threads: int, in_place: bool = False
) -> NDArray[np.float32]:
    """Turn samples into cubic B-spline coefficients along every axis (mirror boundary).

    Parameters
    ----------
    src : ndarray (z, y, x)
        Samples, any real dtype.
    n_threads : int
        Threads to split each axis pass over.
    in_place : bool, default False
        Overwrite ``src`` (which must then be a C-contiguous float32 volume the caller owns)
        instead of filtering a new float32 copy.

    Returns
    -------
    ndarray (z, y, x) float32
        The coefficients (``src`` itself when ``in_place``); interpolating them with the cubic
        B-spline weights of :func:`axis_table` reproduces the samples at integer positions.

    Examples
    --------
    >>> c = bspline_coefficients(np.array([0, 6, 0], np.float32).reshape(3, 1, 1), 1)
    >>> c.ravel().round(6).tolist()
    [-6.0, 12.0, -6.0]
    """
    coef = src if in_place else np.array(src, dtype=np.float32, order="C", copy=True)
    for axis in range(3):
        if coef.shape[axis] > 1:
            along_axis(coef, axis, bspline_prefilter, (POLE, HORIZON), n_threads)
    return coef


def gaussian_weights(sigma: float) -> NDArray[np.float32]:
    """Return normalised gaussian taps of radius ``int(4 * sigma + 0.5)`` (scipy's truncation).

    Parameters
    ----------
    sigma : float
        Standard deviation, samples (> 0).

    Returns
    -------
    ndarray (2 r + 1,) float32
        Centred weights summing to 1.

    Examples
    --------
    >>> [round(float(v), 4) for v in gaussian_weights(0.5)]
    [0.0003, 0.1065, 0.7866, 0.1065, 0.0003]
    """
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w: NDArray[np.float64] = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / float(w.sum())).astype(np.float32)


def smooth_for_downsampling(
    src: NDArray[Any], ratios: NDArray[np.float64], n_threads: int
) -> NDArray[Any]:
    """Smooth the axes downsampled by ``f > 1`` with a gaussian of sigma ``(f - 1) / 2``.

    Parameters
    ----------
    src : ndarray (z, y, x)
        The volume to resample (not modified).
    ratios : ndarray of 3 floats
        ``new_spacing / old_spacing`` per axis.
    n_threads : int
        Threads to split each axis pass over.

    Returns
    -------
    ndarray
        ``src`` itself when no axis needs smoothing (every gaussian has radius 0), else a new
        float32 volume filtered along those axes (mirror boundary, truncated at 4 sigma).

    Examples
    --------
    >>> img = np.zeros((1, 1, 21), np.float32)
    >>> smooth_for_downsampling(img, np.array([1.0, 1.0, 1.2]), 1) is img   # radius 0
    True
    >>> img[0, 0, 10] = 1.0
    >>> out = smooth_for_downsampling(img, np.array([1.0, 1.0, 3.0]), 1)   # sigma 1
    >>> round(float(out.sum()), 4), round(float(out[0, 0, 10]), 4)
    (1.0, 0.3989)
    """
    sigmas = [(f - 1.0) / 2.0 if f > 1.0 else 0.0 for f in ratios]
    if all(int(4.0 * s + 0.5) == 0 for s in sigmas):
        return src
    out = np.array(src, dtype=np.float32, order="C", copy=True)
    for axis, sigma in enumerate(sigmas):
        if int(4.0 * sigma + 0.5) > 0:
            along_axis(out, axis, gaussian_axis, (gaussian_weights(sigma),), n_threads)
    return out
