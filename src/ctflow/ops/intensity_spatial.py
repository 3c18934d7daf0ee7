"""Intensity augmentations that depend on where a voxel is: Gaussian blur and a bias field.

:func:`gaussian_blur` mixes each voxel with its neighbours (a numba ``nogil`` separable kernel,
:mod:`ctflow.kernels.blur`); :func:`apply_bias_field` scales attenuation by a smooth
polynomial field of the voxel's position, evaluated one slice at a time. Both return a new
float32 volume; ``n_threads`` splits the work and results do not depend on it. The random
actions ``random_blur`` and ``random_bias_field`` call them; every name here is also importable
from :mod:`ctflow.ops.intensity_random`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import InvalidParameterError
from ctflow.kernels.blur import blur_xy, blur_z
from ctflow.ops.intensity_blocks import _as_float32_copy, _min_size, _over_slices
from ctflow.threads import run_ranges
from ctflow.validation import as_float, as_int, as_spacing, as_threads, check_volume

__all__ = [
    "MAX_BIAS_ORDER",
    "apply_bias_field",
    "bias_field_size",
    "gaussian_blur",
    "gaussian_half_kernel",
]

#: Highest polynomial degree of :func:`apply_bias_field`.
MAX_BIAS_ORDER = 10


# -- blur ------------------------------------------------------------------------------------
def gaussian_half_kernel(sigma: float, truncate: float = 4.0) -> NDArray[np.float32]:
    """Return the taps ``w[0..r]`` of a normalised 1-D Gaussian (``w[k]`` at offsets ``+-k``).

    The same kernel as :func:`scipy.ndimage.gaussian_filter`: radius ``r = int(truncate *
    sigma + 0.5)``, weights ``exp(-k² / (2 sigma²))`` normalised over ``-r..r`` (in float64,
    stored as float32). ``sigma <= 1e-15`` gives ``[1.0]`` (no blur).

    Examples
    --------
    >>> [round(float(w), 4) for w in gaussian_half_kernel(1.0, truncate=2.0)]
    [0.4026, 0.2442, 0.0545]
    """
    if sigma <= 1e-15:
        return np.ones(1, np.float32)
    r = int(truncate * sigma + 0.5)
    k = np.arange(-r, r + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * k * k)
    phi /= phi.sum()
    return np.ascontiguousarray(phi[r:], dtype=np.float32)


def gaussian_blur(
    image: NDArray[Any],
    std_mm: float | Sequence[float],
    spacing: float | Sequence[float] = 1.0,
    *,
    truncate: float = 4.0,
    n_threads: int = 1,
) -> NDArray[np.float32]:
    """Blur a volume with a Gaussian of standard deviations given in mm (edges repeated).

    The standard deviation along each axis is ``std_mm / spacing`` voxels; the kernel and the
    borders are those of ``scipy.ndimage.gaussian_filter(image, std_mm / spacing,
    mode="nearest", truncate=truncate)`` (which the tests compare against). It is computed
    separably in float32 by numba ``nogil`` kernels — x and y one slice at a time, then z one
    row at a time, in place — so nothing but the output is full-size, and ``n_threads``
    threads share the slices (then the rows). An axis with standard deviation 0 (or a radius
    of 0 voxels) is not blurred.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume (any real dtype).
    std_mm : float or 3 floats
        Standard deviation (z, y, x) in mm, ``>= 0``; one number for all three axes.
    spacing : float or 3 floats, default 1.0
        Voxel size (z, y, x) in mm (1.0: ``std_mm`` is in voxels).
    truncate : float, default 4.0
        The kernel stops at ``truncate`` standard deviations, ``> 0``.
    n_threads : int, default 1
        Threads splitting the work.

    Returns
    -------
    ndarray, float32
        A new volume of ``image``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((1, 1, 7), np.int16)
    >>> img[0, 0, 3] = 100
    >>> gaussian_blur(img, (0.0, 0.0, 0.7), spacing=(1.0, 1.0, 0.7)).round(1)
    array([[[ 0.4,  5.4, 24.2, 39.9, 24.2,  5.4,  0.4]]], dtype=float32)
    >>> from scipy.ndimage import gaussian_filter
    >>> vol = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    >>> ref = gaussian_filter(vol, (1.0, 1.5, 0.5), mode="nearest", truncate=4.0)
    >>> bool(np.allclose(gaussian_blur(vol, (2.0, 1.05, 0.35), (2.0, 0.7, 0.7)), ref, atol=1e-6))
    True
    """
    where = "gaussian_blur"
    image = check_volume(image, where)
    try:
        std = np.broadcast_to(np.asarray(std_mm, dtype=np.float64), (3,))
        ok = not isinstance(std_mm, bool | str) and bool(np.all(np.isfinite(std) & (std >= 0)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"{where}: std_mm must be a number or 3 numbers (z, y, x) >= 0 in mm; got {std_mm!r}"
        )
    sp = np.asarray(as_spacing(spacing, where=where))
    trunc = as_float(truncate, "truncate", where, lo=0.0, lo_open=True)
    n_threads = as_threads(n_threads, where)
    wz, wy, wx = (gaussian_half_kernel(float(s), trunc) for s in std / sp)
    if image.dtype == np.bool_:
        image = image.view(np.uint8)
    elif image.dtype == np.float16:
        image = image.astype(np.float32)
    src = np.ascontiguousarray(image)
    out = memory.empty(image.shape, np.float32)
    nz, ny, nx = image.shape
    min_planes = _min_size(ny * nx)
    run_ranges(lambda a, b: blur_xy(src, out, wy, wx, a, b), nz, n_threads, min_size=min_planes)
    if wz.size > 1:
        min_rows = _min_size(nz * nx)
        run_ranges(lambda a, b: blur_z(out, wz, a, b), ny, n_threads, min_size=min_rows)
    return out


# -- bias field ------------------------------------------------------------------------------
def bias_field_size(order: int) -> int:
    """Return how many coefficients a bias field of degree ``order`` has: ``(o+1)(o+2)(o+3)/6``.

    Examples
    --------
    >>> [bias_field_size(o) for o in range(4)]
    [1, 4, 10, 20]
    """
    o = as_int(order, "order", "bias_field_size", lo=0, hi=MAX_BIAS_ORDER)
    return (o + 1) * (o + 2) * (o + 3) // 6


def _bias_tensor(coefficients: Sequence[float], order: int) -> NDArray[np.float64]:
    """``C[i, j, k]``, the coefficient of ``z**i * y**j * x**k`` (0 when ``i + j + k > order``)."""
    c = np.zeros((order + 1,) * 3)
    n = 0
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                c[i, j, k] = coefficients[n]
                n += 1
    return c


def _unit_coords(n: int) -> NDArray[np.float64]:
    """``n`` voxel centres spread over ``[-1, 1]`` (the single centre of a 1-voxel axis is 0)."""
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def apply_bias_field(
    image: NDArray[Any],
    coefficients: Sequence[float],
    order: int = 3,
    *,
    air_hu: float = -1000.0,
    n_threads: int = 1,
) -> NDArray[np.float32]:
    """Multiply the attenuation above air by a smooth field ``exp(P(z, y, x))``.

    ``P`` is a polynomial of degree ``order`` in normalised voxel coordinates (each axis's
    voxel centres spread evenly over ``[-1, 1]``), TorchIO's ``RandomBiasField`` model::

        P = sum over i + j + k <= order of  coefficients[n] * z**i * y**j * x**k

    with ``n`` counting ``i`` (z power), then ``j`` (y), then ``k`` (x) upwards. In CT the
    field scales what lies above air, so air stays air::

        out = air_hu + (x - air_hu) * exp(P)    where x > air_hu,   out = x   elsewhere

    (continuous at ``air_hu``; padding below air, e.g. -2048, is left alone). Water (0 HU)
    becomes ``1000 * (exp(P) - 1)`` HU for the default ``air_hu``. The field is evaluated
    one slice at a time in float32 (Horner's scheme along x on per-row coefficients), never as
    a full-size array.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume in HU (any real dtype).
    coefficients : sequence of float
        :func:`bias_field_size` (``order``) finite numbers.
    order : int, default 3
        Degree of the polynomial, ``0..10``.
    air_hu : float, default -1000.0
        The value the field does not move (air, in HU).
    n_threads : int, default 1
        Threads splitting the slices.

    Returns
    -------
    ndarray, float32
        A new volume of ``image``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.array([-1024, -1000, 0, 1000], np.int16).reshape(1, 1, 4)
    >>> apply_bias_field(img, [np.log(2.0)], order=0).ravel().tolist()
    [-1024.0, -1000.0, 1000.0, 3000.0]
    """
    where = "apply_bias_field"
    image = check_volume(image, where)
    o = as_int(order, "order", where, lo=0, hi=MAX_BIAS_ORDER)
    n_coef = bias_field_size(o)
    try:
        coef = [as_float(v, "coefficients", where) for v in coefficients]
    except (TypeError, InvalidParameterError):
        coef = []
    if len(coef) != n_coef:
        raise InvalidParameterError(
            f"{where}: coefficients must be {n_coef} finite numbers for order {o}; "
            f"got {coefficients!r}"
        )
    air = as_float(air_hu, "air_hu", where, unit="(HU)")
    n_threads = as_threads(n_threads, where)
    nz, ny, nx = image.shape
    c = _bias_tensor(coef, o)
    zp = np.vander(_unit_coords(nz), o + 1, increasing=True)  # (nz, o+1): z**i
    yp = np.vander(_unit_coords(ny), o + 1, increasing=True)
    xs = _unit_coords(nx).astype(np.float32)
    # per-slice, per-row coefficients of x**k: rows[z][y, k] = sum_ij C[i,j,k] z**i y**j (small)
    cz = np.einsum("zi,ijk->zjk", zp, c)  # (nz, o+1, o+1)
    out = memory.empty(image.shape, np.float32)
    air32 = np.float32(air)

    def block(a: int, b: int) -> None:
        _as_float32_copy(image, out, a, b)
        field = np.empty((ny, nx), np.float32)
        above = np.empty((ny, nx), np.float32)
        for z in range(a, b):
            d = (yp @ cz[z]).astype(np.float32)  # (ny, o+1): coefficients of x**k per row
            field[:] = d[:, o, None]
            for k in range(o - 1, -1, -1):  # Horner along x
                field *= xs
                field += d[:, k, None]
            np.expm1(field, out=field)  # exp(P) - 1, accurate for a weak field
            o_z = out[z]
            np.subtract(o_z, air32, out=above)
            np.maximum(above, np.float32(0.0), out=above)  # NaN stays NaN
            above *= field
            o_z += above  # x + max(x - air, 0) * (exp(P) - 1)

    _over_slices(block, image.shape, n_threads, 1)  # one slice per step
    return out
