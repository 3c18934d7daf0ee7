"""Sliding-window intensity projections (MIP / MinIP / mean / median) of one scan.

A projection reduces windows of ``depth`` consecutive slices along one axis — ``"axial"`` = z
(axis 0), ``"coronal"`` = y (axis 1), ``"sagittal"`` = x (axis 2) — taken every ``stride``
slices. Output slice ``k`` is::

    reduce(image[k * stride + start : k * stride + start + depth])   # along the axis

Padding (the ``padding`` argument)
----------------------------------
* ``None`` (default): only whole windows, ``start = 0``; the output has
  ``(n - depth) // stride + 1`` slices and trailing slices that do not fill a window are unused.
* ``"reflect"``: the axis is mirrored at both ends (``np.pad(mode="reflect")``, the edge slice is
  not repeated) so that there is one window per ``stride`` input slices:
  ``ceil(n / stride)`` output slices, ``start = -((depth - 1) // 2)``; window ``k`` is centred on
  input slice ``k * stride`` (``k * stride + 0.5`` for an even depth).

Geometry
--------
Output voxel ``k`` sits at the centre of its window, input index
``k * stride + start + (depth - 1) / 2``, and the spacing along the axis is multiplied by
``stride``; :func:`xip_geometry` gives the output :class:`~ctflow.geometry.Geometry`, so world
coordinates (nodule annotations) stay valid on the projection.

Dtypes: ``"max"``/``"min"`` keep the input dtype; ``"mean"``/``"median"`` give float32 (the
median of an even window is the mean of its two middle values, as in ``numpy.median``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.kernels.xip import xip_max, xip_mean, xip_median, xip_min
from ctflow.validation import as_choice, as_int, check_geometry, check_volume

__all__ = ["PROJECTIONS", "XIP_MODES", "make_xip", "xip_geometry", "xip_length"]

#: Projection name -> volume axis it runs along.
PROJECTIONS = {"axial": 0, "coronal": 1, "sagittal": 2}
#: Reductions make_xip knows.
XIP_MODES = ("max", "min", "mean", "median")

Mode = Literal["max", "min", "mean", "median"]
Projection = Literal["axial", "coronal", "sagittal"]
Padding = Literal["reflect"] | None

_KERNELS: dict[str, Callable[..., None]] = {
    "max": xip_max,
    "min": xip_min,
    "mean": xip_mean,
    "median": xip_median,
}


def _check(
    depth: Any, stride: Any, projection: Any, padding: Any, where: str
) -> tuple[int, int, int, int]:
    """Validate the window arguments; return ``(depth, stride, axis, start)``."""
    depth = as_int(depth, "depth", where, lo=1)
    stride = as_int(stride, "stride", where, lo=1)
    axis = PROJECTIONS[as_choice(projection, tuple(PROJECTIONS), "projection", where)]
    as_choice(padding, (None, "reflect"), "padding", where)
    start = -((depth - 1) // 2) if padding == "reflect" else 0
    return depth, stride, axis, start


def xip_length(n: int, depth: int, stride: int = 1, padding: Padding = None) -> int:
    """Count the output slices of a projection of ``n`` slices (0 if no window fits).

    Parameters
    ----------
    n : int
        Length of the projection axis, slices.
    depth, stride : int
        Window length and step, slices.
    padding : {None, "reflect"}
        As in :func:`make_xip`.

    Returns
    -------
    int
        ``(n - depth) // stride + 1`` (at least 0) without padding, ``ceil(n / stride)`` with
        ``"reflect"``.

    Examples
    --------
    >>> xip_length(10, 4, 3), xip_length(10, 4, 3, padding="reflect")
    (3, 4)
    """
    if padding == "reflect":
        return -(-n // stride)
    return max(0, (n - depth) // stride + 1)


def xip_geometry(
    geometry: Geometry,
    depth: int,
    stride: int = 1,
    projection: Projection = "axial",
    *,
    padding: Padding = None,
) -> Geometry:
    """Geometry of :func:`make_xip`'s output for an input of geometry ``geometry``.

    Output voxel ``k`` along the projection axis sits at the centre of its window (input index
    ``k * stride + start + (depth - 1) / 2``, ``start`` as in the module docstring); the spacing
    along that axis is multiplied by ``stride``; the other axes and the direction are unchanged.

    Parameters
    ----------
    geometry : Geometry
        Geometry of the input volume.
    depth, stride : int
        Window length and step, in slices.
    projection : {"axial", "coronal", "sagittal"}
        Axis of the projection (z, y or x).
    padding : {None, "reflect"}
        As in :func:`make_xip`.

    Returns
    -------
    Geometry

    Examples
    --------
    >>> g = Geometry(spacing=(1.0, 0.5, 0.5), origin=(-100.0, 0.0, 0.0))
    >>> out = xip_geometry(g, depth=5, stride=2)
    >>> out.spacing.tolist(), out.origin.tolist()
    ([2.0, 0.5, 0.5], [-98.0, 0.0, 0.0])
    """
    where = "xip_geometry"
    check_geometry(geometry, where)
    depth, stride, axis, first = _check(depth, stride, projection, padding, where)
    start = np.zeros(3)
    start[axis] = first + (depth - 1) / 2
    spacing = geometry.spacing.copy()
    spacing[axis] *= stride
    shifted = geometry.shifted(start)
    return Geometry(spacing, shifted.origin, shifted.direction)


def make_xip(
    image: NDArray[Any],
    depth: int,
    stride: int = 1,
    mode: Mode = "max",
    projection: Projection = "axial",
    *,
    padding: Padding = None,
) -> NDArray[Any]:
    """Sliding-window intensity projection of a (z, y, x) volume.

    Output slice ``k`` along the projection axis reduces input slices
    ``k * stride + start ... k * stride + start + depth - 1`` (see the module docstring for
    ``start`` and the padding rules).

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        Boolean, integer or float volume.
    depth : int
        Number of slices per window (>= 1).
    stride : int, default 1
        Step between windows, in slices (>= 1).
    mode : {"max", "min", "mean", "median"}, default "max"
        The reduction: maximum (MIP), minimum (MinIP), mean, or median (even depth: mean of the
        two middle values).
    projection : {"axial", "coronal", "sagittal"}, default "axial"
        Project along z (axis 0), y (axis 1) or x (axis 2).
    padding : {None, "reflect"}, default None
        None: whole windows only, ``(n - depth) // stride + 1`` output slices (needs
        ``depth <= n``). "reflect": mirror the axis so there are ``ceil(n / stride)`` windows,
        window ``k`` centred on input slice ``k * stride``.

    Returns
    -------
    ndarray
        The projection; the projection axis has :func:`xip_length` slices, the others are
        unchanged. Input dtype for "max"/"min", float32 for "mean"/"median".

    Raises
    ------
    InvalidScanError
        ``image`` is not a non-empty 3-D numeric array.
    InvalidParameterError
        Bad ``depth``, ``stride``, ``mode``, ``projection`` or ``padding``, or ``depth`` longer
        than the axis without padding.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(6, dtype=np.int16).reshape(6, 1, 1)
    >>> make_xip(img, depth=3, stride=2).ravel().tolist()
    [2, 4]
    >>> make_xip(img, depth=2, stride=2, mode="mean").ravel().tolist()
    [0.5, 2.5, 4.5]
    >>> make_xip(img, depth=3, stride=2, padding="reflect").ravel().tolist()
    [1, 3, 5]
    """
    where = "make_xip"
    check_volume(image, where)
    as_choice(mode, XIP_MODES, "mode", where)
    depth, stride, axis, start = _check(depth, stride, projection, padding, where)
    n = image.shape[axis]
    if padding is None and depth > n:
        raise InvalidParameterError(
            f"{where}: depth must be <= the {projection} axis length {n} without padding "
            f"(or pass padding='reflect'); got depth={depth}"
        )
    n_out = xip_length(n, depth, stride, padding)

    src = np.ascontiguousarray(image)
    if src.dtype == np.bool_:
        src = src.view(np.uint8)
    z, y, x = src.shape
    outer, inner = ((1, y * x), (z, x), (z * y, 1))[axis]
    out_dtype = image.dtype if mode in ("max", "min") else np.dtype(np.float32)
    out_shape = list(image.shape)
    out_shape[axis] = n_out
    out = np.empty(out_shape, dtype=out_dtype)
    dst = out.view(np.uint8) if out_dtype == np.bool_ else out
    _KERNELS[mode](
        src.reshape(outer, n, inner), dst.reshape(outer, n_out, inner), depth, stride, start
    )
    return out
