"""One-pass geometric resampling: an affine map, an optional elastic field, another affine map.

:func:`warp` is the single resampling a fused chain of geometric actions (resample, crop, flip,
rotate, random affine, elastic deformation) runs. Every output voxel ``o = (z, y, x)`` goes
through three stages to the continuous source index it takes its value from::

    p = P[:, :3] @ o + P[:, 3]      output index -> "frame" point (mm)
    p = p + D(p)                    elastic displacement (mm), when ``coef`` is given
    s = Q[:, :3] @ p + Q[:, 3]      frame point -> source index

``D`` is a uniform cubic B-spline field: control point ``(i, j, k)`` sits at frame position
``grid_origin + (i, j, k) * grid_step`` and carries the displacement ``coef[:, i, j, k]``
(mm, components along the frame axes 0, 1, 2 = z, y, x). Control points beyond the grid count
as zero. :func:`random_elastic_field` draws such a field the way TorchIO's
``RandomElasticDeformation`` does, and refuses amplitudes that could fold the volume.

Sampling is :func:`ctflow.ops.affine.resample_to`'s: trilinear or nearest, ``cval`` outside the
source's voxel extent ``[-0.5, n - 0.5)``, the edge value within half a voxel of it. Without a
field the result is exactly ``resample_to`` through ``M = Q o P``. The displacement is evaluated
exactly at every voxel, a row at a time; no field is ever stored (see
:mod:`ctflow.kernels.warp` for how it stays fast).

Examples
--------
>>> import numpy as np
>>> img = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
>>> eye = np.hstack([np.eye(3), np.zeros((3, 1))])       # index = frame = source index
>>> half = eye.copy(); half[2, 3] = 0.5                    # then half a voxel along x
>>> warp(img, eye, half, (2, 2, 1)).ravel().tolist()
[0.5, 2.5, 4.5, 6.5]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.kernels.warp import warp_linear, warp_nearest
from ctflow.kernels.warp_field import bspline_displacement
from ctflow.ops.affine import output_arrays
from ctflow.threads import run_ranges
from ctflow.validation import (
    as_choice,
    as_float,
    as_int,
    as_shape,
    as_spacing,
    as_threads,
    check_volume,
)

__all__ = ["FOLDING_K", "elastic_displacement", "random_elastic_field", "warp"]

#: Choi & Lee (2000): a 3-D uniform cubic B-spline displacement is locally injective (no
#: folding: positive Jacobian determinant everywhere) when every coefficient component along
#: an axis stays below ``grid_step / FOLDING_K`` along that axis (~0.403 control spacings).
FOLDING_K = 2.479772

#: ITK's B-spline transform domain covers the voxels' extent plus this much (voxels) per side.
_DOMAIN_MARGIN = 0.125

_NO_FIELD = np.zeros((3, 0, 0, 0), dtype=np.float32)


def _as_map(value: Any, what: str, where: str) -> NDArray[np.float64]:
    """Return a 3x4 float64 affine map (4x4 homogeneous accepted: last row (0, 0, 0, 1))."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    ok = arr.shape in ((3, 4), (4, 4)) and bool(np.all(np.isfinite(arr)))
    if ok and arr.shape == (4, 4):
        ok = bool(np.array_equal(arr[3], [0.0, 0.0, 0.0, 1.0]))
    if not ok:
        raise InvalidParameterError(
            f"{where}: {what} must be a finite 3x4 affine map (or 4x4 with last row 0, 0, 0, 1); "
            f"got {np.asarray(value).shape if hasattr(value, '__len__') else value!r}"
        )
    return np.ascontiguousarray(arr[:3])


def _as_vector3(value: Any, what: str, where: str) -> NDArray[np.float64]:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or isinstance(value, str):
        raise InvalidParameterError(
            f"{where}: {what} must be 3 finite floats (z, y, x) in mm; got {value!r}"
        )
    return arr


def _as_field(
    coef: Any, grid_origin: Any, grid_step: Any, where: str
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Return a valid B-spline field: float32 (3, cz, cy, cx) coefficients, origin, step."""
    if coef is None:
        if grid_origin is not None or grid_step is not None:
            raise InvalidParameterError(
                f"{where}: grid_origin and grid_step need coef (the elastic field's coefficients)"
            )
        return _NO_FIELD, np.zeros(3), np.ones(3)
    arr = np.asarray(coef)
    if arr.ndim != 4 or arr.shape[0] != 3 or arr.dtype.kind not in "iuf":
        raise InvalidParameterError(
            f"{where}: coef must be a real (3, cz, cy, cx) array (displacements along z, y, x in "
            f"mm); got {arr.dtype} {arr.shape}"
        )
    if grid_origin is None or grid_step is None:
        raise InvalidParameterError(f"{where}: coef needs grid_origin and grid_step (mm)")
    origin = _as_vector3(grid_origin, "grid_origin", where)
    step = np.array(as_spacing(grid_step, what="grid_step", where=where), dtype=np.float64)
    if arr.size == 0:
        return _NO_FIELD, origin, step
    field = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(field)):
        raise InvalidParameterError(f"{where}: coef must be finite (no NaN or inf)")
    return field, origin, step


def warp(
    image: NDArray[Any],
    P: ArrayLike,
    Q: ArrayLike,
    shape: Any,
    *,
    coef: ArrayLike | None = None,
    grid_origin: ArrayLike | None = None,
    grid_step: ArrayLike | None = None,
    order: int = 1,
    cval: float = -1000.0,
    dtype: DTypeLike | None = None,
    n_threads: int = 1,
) -> NDArray[Any]:
    """Resample ``image`` onto a new grid through ``Q o (identity + D) o P`` in one pass.

    Parameters
    ----------
    image : ndarray (Z, Y, X)
        The source volume (any real dtype; label maps with ``order=0``).
    P : array_like (3, 4) or (4, 4)
        Output voxel index ``(z, y, x)`` -> frame point (mm): ``p = P[:, :3] @ o + P[:, 3]``.
    Q : array_like (3, 4) or (4, 4)
        Frame point -> continuous source index: ``s = Q[:, :3] @ p + Q[:, 3]``.
    shape : 3 ints
        The output's (Z, Y, X).
    coef : array_like (3, cz, cy, cx), optional
        Cubic B-spline coefficients of the displacement (mm; ``coef[c]`` moves along frame
        axis ``c``), e.g. from :func:`random_elastic_field`. None (or zero size): no elastic
        stage, the map is the affine ``Q o P``.
    grid_origin, grid_step : 3 floats, optional
        Frame position of control point ``(0, 0, 0)`` and the control spacing (mm), with
        ``coef``. Control points outside the grid count as zero, so the field is whole (as
        ITK's ``BSplineTransform`` computes it) from control point 1 to control point
        ``c - 2`` per axis: give the grid one control point beyond each end of the region
        that must see it (as :func:`random_elastic_field` does). Beyond, it fades to 0 over
        two control spacings (ITK: 0 at once).
    order : {0, 1}, default 1
        0 nearest (labels and masks: values are copied, never mixed), 1 trilinear.
    cval : float, default -1000
        Value where the source index leaves the volume (air for HU; use 0 for masks).
    dtype : numpy dtype, optional
        Output dtype (default float32 for ``order=1``, the input's for ``order=0``). Integer
        outputs of ``order=1`` are rounded half away from zero.
    n_threads : int, default 1
        Threads splitting the output planes (the result does not depend on it).

    Returns
    -------
    ndarray
        ``shape``, C-contiguous, a new array.

    Raises
    ------
    InvalidParameterError
        A map that is not a finite affine 3x4, a field without its grid (or the reverse),
        non-finite coefficients, ``cval`` that does not fit an integer output dtype.
    InvalidScanError
        ``image`` is not a non-empty 3-D real volume.

    Examples
    --------
    A field of zeros leaves the image as it is; a uniform one shifts it (B-splines sum to 1):

    >>> img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> eye = np.eye(4)
    >>> coef = np.zeros((3, 5, 5, 5), np.float32)
    >>> grid = dict(coef=coef, grid_origin=(-2.0, -2.0, -2.0), grid_step=(2.0, 2.0, 2.0))
    >>> np.array_equal(warp(img, eye, eye, img.shape, **grid), img)
    True
    >>> coef[2] = 1.0                                  # +1 mm along x everywhere
    >>> warp(img, eye, eye, img.shape, order=0, **grid)[0, 0].tolist()
    [1.0, 2.0, 3.0, -1000.0]
    """
    where = "warp"
    img = check_volume(image, where)
    p = _as_map(P, "P", where)
    q = _as_map(Q, "Q", where)
    out_shape = as_shape(shape, where=where)
    field, origin, step = _as_field(coef, grid_origin, grid_step, where)
    as_choice(order, (0, 1), "order", where)
    value = as_float(cval, "cval", where)
    threads = as_threads(n_threads, where)
    out, src_arr, dst_arr = output_arrays(img, out_shape, order, value, dtype, where)
    if order == 0:
        fill = dst_arr.dtype.type(round(value) if dst_arr.dtype.kind in "iu" else value)

        def part(z0: int, z1: int) -> None:
            warp_nearest(src_arr, dst_arr, p, q, field, origin, step, fill, z0, z1)
    else:
        round_out = dst_arr.dtype.kind in "iu"

        def part(z0: int, z1: int) -> None:
            warp_linear(src_arr, dst_arr, p, q, field, origin, step, value, z0, z1, round_out)

    run_ranges(part, out_shape[0], threads, per_thread=2)
    return out


def random_elastic_field(
    shape: Any,
    spacing: Any,
    rng: np.random.Generator,
    control_points: Any = 7,
    max_displacement_mm: Any = 7.5,
    locked_borders: int = 2,
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Draw a random elastic deformation of a volume: cubic B-spline coefficients and their grid.

    The field lives in the frame ``index * spacing`` of a ``shape`` grid (frame origin at the
    centre of voxel 0). The control grid is the one TorchIO's ``RandomElasticDeformation``
    gets from ITK's ``BSplineTransformInitializer``: ``control_points - 3`` cells spanning the
    voxels' extent widened by an eighth of a voxel on each side,
    ``[-0.625, n - 0.375] * spacing``, plus one control point beyond each end::

        grid_step = (shape + 0.25) * spacing / (control_points - 3)
        grid_origin = -0.625 * spacing - grid_step

    so every voxel has its 4 x 4 x 4 control points inside the grid. Each coefficient
    component is uniform in ``[-max, max]`` (mm); the ``locked_borders`` outermost layers of
    control points on every side are set to 0 (1: the layer outside the volume, 2: also the
    one on its border), so the volume's faces hardly move. (TorchIO locks only two of its
    three axes' borders; here all three are locked.)

    The map ``p -> p + D(p)`` never folds: every coefficient component along an axis is
    below ``grid_step / FOLDING_K`` (~0.4 control spacings) along that axis — Choi and Lee's
    sufficient condition for a positive Jacobian determinant everywhere — or this function
    refuses the parameters.

    Parameters
    ----------
    shape : 3 ints
        The volume's (Z, Y, X) the field deforms.
    spacing : 3 floats
        Its voxel spacing (mm), which defines the frame.
    rng : numpy.random.Generator
        The random source.
    control_points : int or 3 ints, default 7
        Control points per axis (z, y, x), at least 4 (at least 5 with ``locked_borders=2``).
    max_displacement_mm : float or 3 floats, default 7.5
        Largest coefficient per component (z, y, x), mm. The displacement itself is a
        weighted mean of coefficients, so it never exceeds this either.
    locked_borders : {0, 1, 2}, default 2
        Layers of control points set to 0 on every side.

    Returns
    -------
    coef : ndarray (3, cz, cy, cx) float32
        The coefficients (``coef[c]`` moves along axis ``c``), for :func:`warp`.
    grid_origin, grid_step : ndarray (3,) float64
        The control grid, mm.

    Raises
    ------
    InvalidParameterError
        Bad parameters, or ``max_displacement_mm`` so large for the control spacing that the
        map could fold (the message gives the limit).

    Examples
    --------
    >>> coef, origin, step = random_elastic_field((64, 64, 64), 1.5, np.random.default_rng(0))
    >>> coef.shape, step.tolist(), origin.tolist()
    ((3, 7, 7, 7), [24.09375, 24.09375, 24.09375], [-25.03125, -25.03125, -25.03125])
    >>> bool(np.abs(coef).max() <= 7.5), bool(np.all(coef[:, :2] == 0))
    (True, True)
    >>> random_elastic_field((32, 32, 32), 1.0, np.random.default_rng(0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: random_elastic_field: max_displacement_mm ... could fold...
    """
    where = "random_elastic_field"
    grid_shape = np.array(as_shape(shape, where=where), dtype=np.int64)
    sp = np.array(as_spacing(spacing, where=where), dtype=np.float64)
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"{where}: rng must be a numpy.random.Generator (np.random.default_rng(seed)); "
            f"got {type(rng).__name__}"
        )
    locked = as_int(locked_borders, "locked_borders", where, lo=0, hi=2)
    least = 5 if locked == 2 else 4
    if isinstance(control_points, list | tuple | np.ndarray):
        raw = list(control_points)
    else:
        raw = [control_points] * 3
    if len(raw) != 3:
        raise InvalidParameterError(
            f"{where}: control_points must be an integer or 3 integers (z, y, x); "
            f"got {control_points!r}"
        )
    counts = np.array([as_int(c, "control_points", where, lo=least) for c in raw], dtype=np.int64)
    try:
        mx = np.broadcast_to(np.asarray(max_displacement_mm, dtype=np.float64), (3,)).copy()
        ok = not isinstance(max_displacement_mm, str | bool) and bool(
            np.all(np.isfinite(mx) & (mx >= 0))
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"{where}: max_displacement_mm must be one or 3 finite floats >= 0 (z, y, x), mm; "
            f"got {max_displacement_mm!r}"
        )
    step = (grid_shape + 2 * _DOMAIN_MARGIN) * sp / (counts - 3)
    origin = -(0.5 + _DOMAIN_MARGIN) * sp - step
    limit = step / FOLDING_K
    bad = np.flatnonzero(mx >= limit)
    if bad.size:
        a = int(bad[0])
        raise InvalidParameterError(
            f"{where}: max_displacement_mm {mx[a]:g} along axis {a} could fold the volume: it "
            f"must be below {limit[a]:.4g} mm there (control spacing {step[a]:.4g} mm / "
            f"{FOLDING_K}); use fewer control points or a smaller displacement"
        )
    coef = rng.uniform(-1.0, 1.0, (3, *counts.tolist())) * mx[:, None, None, None]
    for i in range(locked):
        coef[:, [i, -1 - i], :, :] = 0.0
        coef[:, :, [i, -1 - i], :] = 0.0
        coef[:, :, :, [i, -1 - i]] = 0.0
    return coef.astype(np.float32), origin, step


def elastic_displacement(
    points: ArrayLike, coef: ArrayLike, grid_origin: ArrayLike, grid_step: ArrayLike
) -> NDArray[np.float64]:
    """Return the displacement ``D`` (mm, (n, 3), z y x) of a B-spline field at frame points.

    The field is :func:`warp`'s (same ``coef``, ``grid_origin``, ``grid_step``): a frame point
    ``p`` of the output is read from ``p + D(p)``.

    Examples
    --------
    >>> coef = np.zeros((3, 4, 4, 4), np.float32); coef[0] = 2.0      # 2 mm along z
    >>> elastic_displacement([[1.0, 1.0, 1.0], [50.0, 0.0, 0.0]], coef, (-2, -2, -2), (2, 2, 2))
    array([[2., 0., 0.],
           [0., 0., 0.]])
    """
    where = "elastic_displacement"
    pts = np.array(points, dtype=np.float64, ndmin=2)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise InvalidParameterError(
            f"{where}: points must be finite (n, 3) frame positions (z, y, x), mm; "
            f"got shape {pts.shape}"
        )
    field, origin, step = _as_field(coef, grid_origin, grid_step, where)
    out: NDArray[np.float64] = bspline_displacement(field, origin, step, pts)
    return out
