"""Resampling of one (z, y, x) scan to a new shape and spacing: resample, resize, unify_spacing.

Grid convention
---------------
The output grid is **centred** on the source grid and keeps its direction
(:meth:`ctflow.geometry.Geometry.resampled`): along each axis, output voxel ``k`` samples the
source at the continuous index::

    p = c_old + (k - c_new) * new_spacing / old_spacing,    c = (n - 1) / 2

so a world point keeps pointing at the same anatomy, and the output geometry is
``geometry.resampled(old_shape, new_shape, new_spacing)``. This is what SimpleITK's
``ResampleImageFilter`` computes when handed that output geometry (the tests compare voxel by
voxel, with non-identity directions).

Interpolation (``order``)
-------------------------
* ``0`` — nearest neighbour, index ``floor(p + 0.5)`` (ITK's rule; exact ``.5`` ties go up);
  for label masks. The output keeps the input dtype (float64 becomes float32).
* ``1`` — trilinear, separable, computed in float32.
* ``3`` — cubic B-spline: the volume is prefiltered into float32 spline coefficients with a
  mirror boundary (as ``scipy.ndimage`` with ``mode="mirror"`` and ITK's B-spline
  interpolator), then interpolated with 4 taps per axis. It may overshoot the input range.

Interpolating orders give float32 by default; ``dtype=`` overrides (integer outputs are rounded
half away from zero and clipped to the dtype's range, e.g. ``np.int16`` for HU). float64 is never
produced. NaN voxels of a float input spread to the outputs that use them.

Samples outside the source (``padding``)
----------------------------------------
* ``"edge"`` — the sample position is clamped to ``[0, n - 1]``: edge voxels repeat
  (``np.pad(mode="edge")``).
* ``"reflect"`` — positions are mirrored about the edge voxel centres without repeating them
  (``np.pad(mode="reflect")``, scipy ``mode="mirror"``): index ``-1`` reads index ``1``.
* ``"constant"`` — the volume is surrounded by ``cval`` (default -1000 HU = air). Order 0: a
  sample whose nearest index is outside gives ``cval``. Orders 1 and 3: the edge-clamped value is
  blended with ``cval`` by the weight ``prod_axes max(0, 1 - d)``, ``d`` = distance in voxels of
  the sample outside ``[0, n - 1]``; for order 1 this is exactly linear interpolation against a
  border of ``cval`` voxels (scipy ``mode="grid-constant"``). SimpleITK instead clamps up to half
  a voxel outside and gives its default value beyond, so the two differ in that thin shell.

For order 3 the choice only matters outside ``[0, n - 1]``: inside, every padding gives the
mirror-boundary spline.

Speed
-----
Per-axis tap tables (index + weight, padding already applied; :mod:`ctflow.ops.interpolation`)
drive numba ``nogil`` kernels (:mod:`ctflow.kernels.resample`) that read the input dtype
directly; ``n_threads > 1`` splits the output z-range over a thread pool, and the result is
bit-for-bit the same for any ``n_threads``. Timings against SimpleITK are in the notes
(``docs/ops-notes.md``) and the benchmarks.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ctflow import memory
from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.kernels.resample import resample_nearest, resample_separable
from ctflow.ops.interpolation import axis_table, bspline_coefficients, smooth_for_downsampling
from ctflow.threads import run_ranges
from ctflow.validation import (
    as_bool,
    as_choice,
    as_dtype,
    as_float,
    as_int,
    as_shape,
    as_spacing,
    as_threads,
    check_geometry,
    check_volume,
)

__all__ = ["ORDERS", "OUTPUT_DTYPES", "PADDINGS", "resample", "resize", "unify_spacing"]

#: Interpolation orders: 0 nearest, 1 linear, 3 cubic B-spline.
ORDERS = (0, 1, 3)
#: Ways of filling samples that fall outside the source.
PADDINGS = ("edge", "reflect", "constant")
#: dtypes an output may have (float64 never).
OUTPUT_DTYPES = tuple(
    np.dtype(t)
    for t in (np.float32, np.int16, np.uint8, np.int8, np.uint16, np.int32, np.uint32, np.int64)
)

Padding = Literal["edge", "reflect", "constant"]

#: Below this many output voxels per thread, extra threads are not worth starting.
_MIN_VOXELS_PER_THREAD = 1 << 16


# -- validation ---------------------------------------------------------------------------------
def _check_image(image: Any, where: str) -> NDArray[Any]:
    """Return ``image`` when :func:`~ctflow.validation.check_volume` accepts it and not float16.

    Raises :class:`~ctflow.errors.InvalidParameterError` (the contract of the resampling
    functions) rather than ``check_volume``'s :class:`~ctflow.errors.InvalidScanError`.
    """
    try:
        checked = check_volume(image, where)
    except InvalidScanError as exc:
        raise InvalidParameterError(str(exc)) from None
    if checked.dtype == np.float16:
        raise InvalidParameterError(
            f"{where}: image must be a bool, integer, float32 or float64 volume; "
            f"got dtype {checked.dtype}"
        )
    return checked


def _output_dtype(dtype: Any, image_dtype: np.dtype[Any], order: int, where: str) -> np.dtype[Any]:
    """Return the output dtype: ``dtype`` when allowed, else the default of ``order``."""
    allowed = [*OUTPUT_DTYPES, np.dtype(np.bool_)] if order == 0 else list(OUTPUT_DTYPES)
    dt = as_dtype(dtype, allowed, "dtype", where)
    if dt is not None:
        return dt
    if order == 0:
        return np.dtype(np.float32) if image_dtype == np.float64 else image_dtype
    return np.dtype(np.float32)


# -- public API ---------------------------------------------------------------------------------
def resample(
    image: NDArray[Any],
    geometry: Geometry,
    shape: ArrayLike,
    spacing: ArrayLike,
    *,
    order: int = 1,
    padding: Padding = "edge",
    cval: float = -1000.0,
    dtype: DTypeLike | None = None,
    n_threads: int = 1,
    anti_alias: bool = False,
) -> tuple[NDArray[Any], Geometry]:
    """Resample a (z, y, x) volume onto a centred grid of ``shape`` voxels of ``spacing`` mm.

    Output voxel ``k`` samples the source at index ``c_old + (k - c_new) * spacing /
    old_spacing`` along each axis (``c = (n - 1) / 2``); see the module docstring.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        Bool, integer, float32 or float64 volume (read as is, never converted to float64).
    geometry : Geometry
        Geometry of ``image``.
    shape : 3 ints
        Output shape (z, y, x).
    spacing : 3 floats or float
        Output spacing (z, y, x), mm.
    order : {0, 1, 3}, default 1
        Nearest, trilinear or cubic B-spline interpolation.
    padding : {"edge", "reflect", "constant"}, default "edge"
        How samples outside the source are filled (module docstring).
    cval : float, default -1000.0
        Value outside the source for ``padding="constant"``; must fit an integer output dtype.
    dtype : dtype, optional
        Output dtype; default float32 for orders 1 and 3, the input dtype for order 0 (float32
        for a float64 input). Integer outputs are rounded half away from zero and clipped.
    n_threads : int, default 1
        Threads splitting the output z-range (the kernels release the GIL).

    anti_alias : bool, default False
        Before interpolating (orders 1 and 3), smooth every axis downsampled by a factor
        ``f = new_spacing / old_spacing > 1`` with a gaussian of sigma ``(f - 1) / 2`` voxels
        (float32, mirror boundary, truncated at 4 sigma). Ignored for order 0 (labels).

    Returns
    -------
    out : ndarray, shape ``shape``
        The resampled volume.
    geometry : Geometry
        ``geometry.resampled(image.shape, shape, spacing)``.

    Raises
    ------
    InvalidParameterError
        Any argument outside its contract (the message names the function and the value).

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> img = np.array([0, 10, 20, 30], dtype=np.int16).reshape(4, 1, 1)
    >>> out, g = resample(img, Geometry((2.0, 1.0, 1.0)), (7, 1, 1), (1.0, 1.0, 1.0))
    >>> out.ravel().tolist()
    [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    >>> g.spacing.tolist(), g.origin.tolist()
    ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    where = "resample"
    return _resample(
        image, geometry, shape, spacing, order, padding, cval, dtype, n_threads, anti_alias, where
    )


def _resample(
    image: Any,
    geometry: Any,
    shape: Any,
    spacing: Any,
    order: Any,
    padding: Any,
    cval: Any,
    dtype: Any,
    n_threads: Any,
    anti_alias: Any,
    where: str,
) -> tuple[NDArray[Any], Geometry]:
    """Validate every argument and resample (the body of the three public functions)."""
    image = _check_image(image, where)
    geometry = check_geometry(geometry, where)
    new_shape = as_shape(shape, where=where)
    new_sp = np.asarray(as_spacing(spacing, where=where))
    order = as_choice(as_int(order, "order", where), ORDERS, "order", where)
    padding = as_choice(padding, PADDINGS, "padding", where)
    cval_f = as_float(cval, "cval", where)
    n_threads = as_threads(n_threads, where)
    out_dtype = _output_dtype(dtype, image.dtype, order, where)
    anti_alias = as_bool(anti_alias, "anti_alias", where)
    is_int = out_dtype.kind in "iub"
    lo = hi = 0.0
    if is_int:
        info = np.iinfo(out_dtype) if out_dtype.kind != "b" else None
        lo, hi = (0.0, 1.0) if info is None else (float(info.min), float(info.max))
        if padding == "constant" and not lo <= cval_f <= hi:
            raise InvalidParameterError(
                f"{where}: cval must fit the output dtype {out_dtype} ([{lo:g}, {hi:g}]) with "
                f"padding='constant'; got {cval!r}"
            )

    old_shape = image.shape
    out_geometry = geometry.resampled(old_shape, new_shape, new_sp)
    ratios = new_sp / geometry.spacing
    tables = [
        axis_table(old_shape[a], new_shape[a], float(ratios[a]), order, padding) for a in range(3)
    ]
    # unsigned indices spare numba's negative-index test in the gathers
    zi, yi, xi = (t[0].astype(np.uint64) for t in tables)
    (_, zw, inz), (_, yw, iny), (_, xw, inx) = tables
    blend = padding == "constant"

    src: NDArray[Any] = np.ascontiguousarray(image)
    if src.dtype == np.bool_:
        src = src.view(np.uint8)
    owned = False  # src is a float32 temporary of our own (may be modified in place)
    if anti_alias and order > 0:
        smoothed = smooth_for_downsampling(src, ratios, n_threads)
        owned = smoothed is not src
        src = smoothed
    out = memory.empty(new_shape, out_dtype)
    dst = out.view(np.uint8) if out_dtype == np.bool_ else out
    n_thr = max(1, min(n_threads, out.size // _MIN_VOXELS_PER_THREAD))

    if order == 0:
        round_out = is_int and src.dtype.kind == "f"
        lo_hi = (lo, hi)
        if is_int and src.dtype.kind in "iu":
            src_info = np.iinfo(src.dtype)
            round_out = src_info.min < lo or src_info.max > hi  # clip when the range shrinks
        c = _round_half_away(cval_f) if is_int else cval_f

        def run_nearest(z0: int, z1: int) -> None:
            resample_nearest(
                src, dst, zi[:, 0], yi[:, 0], xi[:, 0], inz, iny, inx, c, round_out, *lo_hi, z0, z1
            )

        run_ranges(run_nearest, new_shape[0], n_thr)
        return out, out_geometry

    if order == 3:
        src = bspline_coefficients(src, n_threads, in_place=owned)

    def run_interp(z0: int, z1: int) -> None:
        resample_separable(
            src, dst, zi, zw, yi, yw, xi, xw, inz, iny, inx, blend, cval_f, is_int, lo, hi, z0, z1
        )

    run_ranges(run_interp, new_shape[0], n_thr)
    return out, out_geometry


def _round_half_away(v: float) -> float:
    """Round half away from zero (as the kernels round integer outputs)."""
    return float(np.sign(v) * np.floor(abs(v) + 0.5))


def resize(
    image: NDArray[Any],
    geometry: Geometry,
    shape: ArrayLike,
    *,
    order: int = 1,
    dtype: DTypeLike | None = None,
    n_threads: int = 1,
    anti_alias: bool = False,
) -> tuple[NDArray[Any], Geometry]:
    """Resample a volume to ``shape`` voxels, keeping its field of view (extent).

    The new spacing is ``old_spacing * old_shape / shape``; the grid stays centred, so voxel
    *boundaries* of the first and last voxels coincide with the old ones (``scipy.ndimage.zoom``
    with ``grid_mode=True``). Samples within half a voxel outside the old centres take the edge
    value (``padding="edge"``).

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        Bool, integer, float32 or float64 volume.
    geometry : Geometry
        Geometry of ``image``.
    shape : 3 ints
        Output shape (z, y, x).
    order : {0, 1, 3}, default 1
        Nearest, trilinear or cubic B-spline interpolation.
    dtype : dtype, optional
        Output dtype (default float32 for orders 1 and 3, the input dtype for order 0).
    n_threads : int, default 1
        Threads splitting the output z-range.
    anti_alias : bool, default False
        Before interpolating (orders 1 and 3), smooth every axis downsampled by a factor
        ``f = new_spacing / old_spacing > 1`` with a gaussian of sigma ``(f - 1) / 2`` voxels
        (float32, mirror boundary, truncated at 4 sigma). Ignored for order 0 (labels).

    Returns
    -------
    out : ndarray, shape ``shape``
    geometry : Geometry
        With spacing ``old_spacing * old_shape / shape`` and the same centre.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> img = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    >>> out, g = resize(img, Geometry((1.0, 1.0, 1.0)), (4, 4, 4))
    >>> out.shape, g.spacing.tolist(), g.origin.tolist()
    ((4, 4, 4), [0.5, 0.5, 0.5], [-0.25, -0.25, -0.25])
    """
    where = "resize"
    image = _check_image(image, where)
    geometry = check_geometry(geometry, where)
    new_shape = as_shape(shape, where=where)
    spacing = geometry.spacing * (np.asarray(image.shape) / np.asarray(new_shape))
    return _resample(
        image,
        geometry,
        new_shape,
        spacing,
        order,
        "edge",
        -1000.0,
        dtype,
        n_threads,
        anti_alias,
        where,
    )


def unify_spacing(
    image: NDArray[Any],
    geometry: Geometry,
    spacing: ArrayLike,
    shape: ArrayLike | None = None,
    *,
    order: int = 1,
    padding: Padding = "reflect",
    cval: float = -1000.0,
    dtype: DTypeLike | None = None,
    n_threads: int = 1,
    anti_alias: bool = False,
) -> tuple[NDArray[Any], Geometry]:
    """Resample a volume to exactly ``spacing`` mm, optionally to a fixed ``shape``.

    Without ``shape`` the output has ``round(old_shape * old_spacing / spacing)`` voxels (at least
    1) per axis. With ``shape`` the output is that shape centred on the scan centre: cropping or
    padding (``padding``) happens in the same single resampling pass.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        Bool, integer, float32 or float64 volume.
    geometry : Geometry
        Geometry of ``image``.
    spacing : 3 floats or float
        Output spacing (z, y, x), mm.
    shape : 3 ints (or None per axis), optional
        Output shape; default keeps the field of view. ``None`` on an axis keeps that axis's
        field of view, e.g. ``(None, 256, 256)`` fixes only the in-plane size, so scans of
        different fields of view can share one batch.
    order : {0, 1, 3}, default 1
        Nearest, trilinear or cubic B-spline interpolation.
    padding : {"reflect", "edge", "constant"}, default "reflect"
        How samples outside the scan are filled (module docstring).
    cval : float, default -1000.0
        Value outside the scan for ``padding="constant"`` (air).
    dtype : dtype, optional
        Output dtype (default float32 for orders 1 and 3, the input dtype for order 0).
    n_threads : int, default 1
        Threads splitting the output z-range.
    anti_alias : bool, default False
        Before interpolating (orders 1 and 3), smooth every axis downsampled by a factor
        ``f = new_spacing / old_spacing > 1`` with a gaussian of sigma ``(f - 1) / 2`` voxels
        (float32, mirror boundary, truncated at 4 sigma). Ignored for order 0 (labels).

    Returns
    -------
    out : ndarray
    geometry : Geometry
        ``geometry.resampled(image.shape, out.shape, spacing)``.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> img = np.zeros((10, 20, 20), dtype=np.int16)
    >>> out, g = unify_spacing(img, Geometry((2.5, 0.7, 0.7)), (1.0, 1.0, 1.0))
    >>> out.shape, out.dtype.name
    ((25, 14, 14), 'float32')
    >>> unify_spacing(img, Geometry((2.5, 0.7, 0.7)), 1.0, shape=(8, 8, 8))[0].shape
    (8, 8, 8)
    """
    where = "unify_spacing"
    image = _check_image(image, where)
    geometry = check_geometry(geometry, where)
    new_sp = np.asarray(as_spacing(spacing, where=where))
    n = np.floor(np.asarray(image.shape) * geometry.spacing / new_sp + 0.5)
    natural = [int(max(1, v)) for v in n]
    if shape is None:
        shape = natural
    elif isinstance(shape, (tuple, list)) and len(shape) == 3:
        # ``None`` on an axis keeps that axis's field of view, e.g. (None, 256, 256)
        shape = [natural[k] if v is None else v for k, v in enumerate(shape)]
    new_shape = as_shape(shape, where=where)
    return _resample(
        image,
        geometry,
        new_shape,
        new_sp,
        order,
        padding,
        cval,
        dtype,
        n_threads,
        anti_alias,
        where,
    )
