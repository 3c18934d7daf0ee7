"""Spatial operations on one scan: rotation about the centre of a plane.

:func:`rotate` follows ``scipy.ndimage.rotate(image, angle, axes=axes, reshape=False,
order=order, mode="constant", cval=cval)`` exactly — same direction of rotation, same centre
``(n - 1) / 2`` on each plane axis, same "outside ``[0, n - 1]`` gives ``cval``" rule — but runs
as a numba ``nogil`` kernel (:mod:`ctflow.kernels.rotate`) that can split the non-rotated axis
across threads. Given the voxel ``spacing``, it rotates in millimetres instead, which differs
from scipy's rotation of voxel indices when the two spacings of the plane differ (see
"Anisotropic planes").

Rotation convention
-------------------
With ``axes = (a, b)`` sorted so that ``a < b``, output voxel ``(i, j)`` of each plane takes the
input value at::

    src_a =  cos(angle) * (i - ca) + sin(angle) * (j - cb) + ca
    src_b = -sin(angle) * (i - ca) + cos(angle) * (j - cb) + cb

with ``c = (n - 1) / 2``, i.e. ``src = c + R (o - c)`` with ``R = [[cos, sin], [-sin, cos]]``.
For ``axes=(1, 2)`` (the axial plane, rotation about z) a positive angle turns the picture
counter-clockwise as displayed by ``matplotlib.pyplot.imshow`` (row 0 at the top). The shape is
kept (scipy's ``reshape=False``): corners that leave the field of view are lost and voxels whose
source lies outside are filled with ``cval``. The grid does not change: the anatomy moves on a
fixed grid; :meth:`ctflow.geometry.Geometry.rotated` gives the output geometry under which every
voxel keeps the world position of the anatomy it shows.

Anisotropic planes
------------------
If the two spacings ``s_a, s_b`` of the plane differ (e.g. 0.68 x 0.73 mm pixels, or a plane
including z at 2.5 mm), a rotation of voxel indices is a shear in millimetres. With
``spacing`` given, :func:`rotate` rotates in millimetres instead::

    src = c + M (o - c),    M = S^-1 R S = [[cos, sin * s_b / s_a], [-sin * s_a / s_b, cos]]

with ``S = diag(s_a, s_b)``: the millimetre offset from the plane centre is rotated,
``S (src - c) = R S (o - c)``. When the two spacings agree to a relative ``1e-6``, ``M = R``
and the result is bit-identical to a call without ``spacing``.

On an identity-direction scan with ``spacing`` given, angle ``t`` in the plane ``axes`` is
SimpleITK's ``Euler3DTransform`` centred on the image centre with rotation ``t`` about its z
axis for ``axes=(1, 2)``, ``-t`` about y for ``(0, 2)`` and ``t`` about x for ``(0, 1)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray
from scipy import special

from ctflow import memory
from ctflow.errors import InvalidParameterError
from ctflow.kernels.rotate import rotate_bilinear, rotate_nearest
from ctflow.threads import run_ranges
from ctflow.validation import (
    as_choice,
    as_float,
    as_int,
    as_plane,
    as_spacing,
    as_threads,
    check_volume,
)

__all__ = ["rotate"]

#: plane spacings within this relative difference count as equal: voxel-space rotation, ``M = R``
#: (``Geometry.rotated`` uses the same tolerance)
_SAME_SPACING_RTOL = 1e-6


def _output_dtype(image: NDArray[Any], order: int, dtype: DTypeLike | None) -> np.dtype[Any]:
    """Return the output dtype: ``dtype`` (any integer or float dtype) or the default."""
    if dtype is not None:
        try:
            out = np.dtype(dtype)
        except TypeError:
            raise InvalidParameterError(
                f"rotate: dtype must be a numpy integer or float dtype; got {dtype!r}"
            ) from None
        if out.kind not in "biuf":
            raise InvalidParameterError(
                f"rotate: dtype must be a numpy integer or float dtype; got {out}"
            )
        return out
    return image.dtype if order == 0 else np.dtype(np.float32)


def _plane_matrix(
    angle: float, spacing_a: float | None, spacing_b: float | None
) -> tuple[float, float, float, float]:
    """Return ``(m_aa, m_ab, m_ba, m_bb)`` of ``M = S^-1 R S`` (``M = R`` for equal spacings).

    Examples
    --------
    >>> [round(v, 6) for v in _plane_matrix(30.0, None, None)]
    [0.866025, 0.5, -0.5, 0.866025]
    >>> [round(v, 6) for v in _plane_matrix(30.0, 2.5, 0.5)]
    [0.866025, 0.1, -2.5, 0.866025]
    """
    # scipy uses cosdg/sindg: exact at multiples of 90 degrees
    cos_a = float(special.cosdg(angle))
    sin_a = float(special.sindg(angle))
    if spacing_a is None or spacing_b is None:
        return cos_a, sin_a, -sin_a, cos_a
    if abs(spacing_a - spacing_b) <= _SAME_SPACING_RTOL * max(spacing_a, spacing_b):
        return cos_a, sin_a, -sin_a, cos_a
    return cos_a, sin_a * (spacing_b / spacing_a), -sin_a * (spacing_a / spacing_b), cos_a


def rotate(
    image: NDArray[Any],
    angle_deg: float,
    axes: tuple[int, int] = (1, 2),
    *,
    order: int = 1,
    cval: float = -1000.0,
    dtype: DTypeLike | None = None,
    n_threads: int = 1,
    spacing: ArrayLike | None = None,
) -> NDArray[Any]:
    """Rotate a (z, y, x) volume by ``angle_deg`` about the centre of the plane ``axes``.

    Without ``spacing`` (or if the plane's two spacings are equal): the same result as
    ``scipy.ndimage.rotate(image, angle_deg, axes=axes, reshape=False, order=order,
    mode="constant", cval=cval)``, a rotation of voxel indices. With ``spacing`` and unequal
    plane spacings: a rotation by ``angle_deg`` in millimetres about the plane centre, so the
    anatomy is not sheared (see the module docstring for the formulas).

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        Integer, boolean or float volume (HU image or uint8 mask).
    angle_deg : float
        Rotation angle in degrees.
    axes : pair of int, default (1, 2)
        The rotation plane: ``(1, 2)`` rotates the axial (y, x) plane about the z axis,
        ``(0, 2)`` the coronal (z, x) plane, ``(0, 1)`` the sagittal (z, y) plane. Order does
        not matter (scipy sorts them too); negative axes count from the end.
    order : {0, 1}, default 1
        0 = nearest neighbour (use for masks), 1 = bilinear in the rotation plane.
    cval : float, default -1000.0
        Value of voxels whose source lies outside the volume: -1000 HU (air) suits images;
        pass ``cval=0`` for masks. Must lie in the range of an integer output dtype (it is
        rounded like the voxels); NaN is allowed for float outputs.
    dtype : numpy dtype, optional
        Output dtype. Default: float32 for ``order=1``, the input dtype for ``order=0`` (a uint8
        mask stays uint8). An integer dtype rounds half away from zero (e.g. ``dtype=np.int16``
        to keep HU as int16); values are not clipped, so pick a dtype that holds the input's
        range. Bilinear interpolation is computed in float32.
    n_threads : int, default 1
        Threads to split the non-rotated axis over (the kernel releases the GIL).
    spacing : array_like of 3 floats, optional
        Voxel spacing (z, y, x) in mm. Given, the rotation happens in millimetres, which matters
        when the two spacings of the plane differ (anisotropic pixels, or a plane including z);
        :meth:`ctflow.geometry.Geometry.rotated` gives the matching output geometry. Omitted,
        the rotation acts on voxel indices (scipy's convention).

    Returns
    -------
    ndarray
        The rotated volume, same shape as ``image``.

    Raises
    ------
    InvalidScanError
        ``image`` is not a non-empty 3-D numeric array.
    InvalidParameterError
        Non-finite angle, bad ``axes``, ``order`` not in {0, 1}, bad ``dtype``, ``cval`` that
        does not fit an integer output dtype, ``n_threads < 1``, or ``spacing`` that is not 3
        positive finite floats.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((1, 5, 5), np.int16)
    >>> img[0, 2, 4] = 100
    >>> out = rotate(img, 90, cval=0)
    >>> [int(v) for v in np.argwhere(out[0] == 100)[0]]
    [0, 2]
    >>> out.dtype
    dtype('float32')
    >>> rotate(img.astype(np.uint8), 90, order=0, cval=0).dtype
    dtype('uint8')

    On 0.5 x 1.0 mm pixels (y, x), +90 degrees moves a point 2 mm right of the centre to 2 mm
    above it, 4 rows up (a voxel-space rotation would take it only 2 rows, 1 mm, up):

    >>> img = np.zeros((1, 9, 5), np.uint8)
    >>> img[0, 4, 4] = 1
    >>> out = rotate(img, 90, order=0, cval=0, spacing=(1.0, 0.5, 1.0))
    >>> [int(v) for v in np.argwhere(out[0] == 1)[0]]
    [0, 2]
    """
    where = "rotate"
    image = check_volume(image, where)
    angle = as_float(angle_deg, "angle_deg", where, unit="(degrees)")
    ax = as_plane(axes, "axes", where)
    plane_sp: tuple[float | None, float | None] = (None, None)
    if spacing is not None:
        sp_zyx = as_spacing(spacing, where=where)
        plane_sp = (sp_zyx[ax[0]], sp_zyx[ax[1]])
    order = as_choice(as_int(order, "order", where), (0, 1), "order", where)
    n_threads = as_threads(n_threads, where)
    out_dtype = _output_dtype(image, order, dtype)
    try:
        fill = float(cval)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{where}: cval must be a number; got {cval!r}") from None
    if not np.isfinite(fill) and out_dtype.kind != "f":
        raise InvalidParameterError(
            f"{where}: cval must be finite for the integer output dtype {out_dtype}; got {cval!r}"
        )
    if out_dtype.kind in "iub":
        lo, hi = (
            (0, 1) if out_dtype.kind == "b" else (np.iinfo(out_dtype).min, np.iinfo(out_dtype).max)
        )
        if not lo <= fill <= hi:
            raise InvalidParameterError(
                f"{where}: cval must fit the output dtype {out_dtype} ([{lo}, {hi}]); got {cval!r}"
                + (" (pass cval=0 for masks)" if out_dtype.kind in "ub" else "")
            )

    # numba kernels index flat arrays; bool volumes travel as uint8
    src = np.ascontiguousarray(image)
    if src.dtype == np.bool_:
        src = src.view(np.uint8)
    out = memory.empty(image.shape, out_dtype)
    dst = out.view(np.uint8) if out_dtype == np.bool_ else out
    integer_out = out_dtype.kind in "iub"
    round_out = integer_out and (order == 1 or src.dtype.kind == "f")
    if integer_out:  # store cval as the rounded integer the voxels would get
        fill = float(np.floor(fill + 0.5) if fill >= 0 else -np.floor(0.5 - fill))

    m_aa, m_ab, m_ba, m_bb = _plane_matrix(angle, *plane_sp)
    kernel = rotate_bilinear if order == 1 else rotate_nearest
    a, b = ax
    p_axis = 3 - a - b  # the non-rotated axis
    # both arrays are C-ordered with the same shape: one set of element strides serves both
    elem = np.asarray(dst.strides) // dst.itemsize
    n_p, na, nb = src.shape[p_axis], src.shape[a], src.shape[b]
    sp, sa, sb = int(elem[p_axis]), int(elem[a]), int(elem[b])
    flat_src, flat_dst = src.reshape(-1), dst.reshape(-1)

    def run(p0: int, p1: int) -> None:
        kernel(
            flat_src, flat_dst, na, nb, sp, sa, sb, p0, p1, m_aa, m_ab, m_ba, m_bb, fill, round_out
        )

    run_ranges(run, n_p, n_threads)
    return out
