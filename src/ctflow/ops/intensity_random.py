"""Intensity augmentations of one CT scan, with their random parameters given explicitly.

The random actions of :mod:`ctflow.actions.augmentation` (``random_gamma``,
``random_contrast``, ``random_blur``, ``random_bias_field``, ``random_noise``) draw their
parameters per item and call these functions with them, so each function here is
deterministic (:func:`add_hu_noise` takes a generator, like
:func:`ctflow.ops.augment.apply_noise`) and can be checked on its own.

Every function returns a new float32 volume (any real input dtype; int16 HU is read directly)
and never allocates a float64 or a second full-size temporary: voxel-wise maps run in place on
the output a block of slices at a time (float32 arithmetic), the blur is a numba ``nogil``
separable kernel (:mod:`ctflow.kernels.blur`) and the bias field is evaluated one slice at a
time. ``n_threads`` splits the slices across threads; results do not depend on it.

======================  ==========================================================================
:func:`adjust_gamma`    clip to a HU window, ``lo + span * ((x - lo) / span) ** gamma``
:func:`adjust_contrast` scale the window about its centre and shift; outside it, follow the edges
:func:`gaussian_blur`   Gaussian blur, standard deviations in mm, edges repeated
:func:`apply_bias_field` multiply attenuation above air by ``exp(polynomial)``
:func:`add_hu_noise`    Gaussian noise in HU, uniform or growing with attenuation ("lowdose")
======================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import InvalidParameterError
from ctflow.kernels.blur import blur_xy, blur_z
from ctflow.ops.augment import apply_noise
from ctflow.threads import run_ranges
from ctflow.validation import as_choice, as_float, as_int, as_spacing, as_threads, check_volume

__all__ = [
    "MAX_BIAS_ORDER",
    "NOISE_KINDS",
    "add_hu_noise",
    "adjust_contrast",
    "adjust_gamma",
    "apply_bias_field",
    "bias_field_size",
    "gaussian_blur",
    "gaussian_half_kernel",
]

#: Noise models of :func:`add_hu_noise`.
NOISE_KINDS = ("gaussian", "lowdose")
#: Voxels processed per block by the voxel-wise maps and drawn per block of noise (16 MiB).
_BLOCK_VOXELS = 1 << 22
#: Voxels below which extra threads are not worth starting.
_MIN_VOXELS_PER_THREAD = 1 << 18
#: Highest polynomial degree of :func:`apply_bias_field`.
MAX_BIAS_ORDER = 10


# -- helpers ---------------------------------------------------------------------------------
def _window(value: Any, what: str, where: str) -> tuple[float, float]:
    """Two finite numbers ``lo < hi`` (HU)."""
    try:
        lo, hi = value
        lo = as_float(lo, what, where)
        hi = as_float(hi, what, where)
        ok = lo < hi
    except (TypeError, ValueError, InvalidParameterError):
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"{where}: {what} must be two finite numbers (low, high) in HU with low < high; "
            f"got {value!r}"
        )
    return float(lo), float(hi)


def _as_float32_copy(image: NDArray[Any], out: NDArray[np.float32], a: int, b: int) -> None:
    """``out[a:b] = image[a:b]`` as float32 (slices ``[a, b)``)."""
    np.copyto(out[a:b], image[a:b], casting="unsafe")


def _over_slices(
    fn: Callable[[int, int], None], shape: tuple[int, ...], n_threads: int, block: int
) -> None:
    """Run ``fn(z0, z1)`` over the slices in blocks of about ``block`` voxels, on threads."""
    plane = max(1, int(shape[1]) * int(shape[2]))
    step = max(1, block // plane)

    def part(a: int, b: int) -> None:
        for z in range(a, b, step):
            fn(z, min(z + step, b))

    run_ranges(part, int(shape[0]), n_threads, min_size=max(1, _MIN_VOXELS_PER_THREAD // plane))


# -- gamma -----------------------------------------------------------------------------------
def adjust_gamma(
    image: NDArray[Any],
    gamma: float,
    hu_range: Sequence[float] = (-1000.0, 400.0),
    *,
    n_threads: int = 1,
) -> NDArray[np.float32]:
    """Gamma-correct a HU window: ``lo + (hi - lo) * t ** gamma``, ``t = (x - lo) / (hi - lo)``.

    Voxels are first clipped to the window ``hu_range = (lo, hi)`` (so ``t`` is in ``[0, 1]``
    and the power is defined): the result lies in the window, and what was below or above it
    becomes ``lo`` or ``hi``, as a later ``normalize_hu`` with the same window would make it.
    ``gamma < 1`` brightens the window (lung and soft tissue move up), ``gamma > 1`` darkens
    it; the window's ends stay put. NaN stays NaN.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume in HU (any real dtype).
    gamma : float
        The exponent, ``> 0`` (TorchIO's ``RandomGamma`` draws ``exp(log_gamma)``).
    hu_range : 2 floats, default (-1000.0, 400.0)
        The window ``(lo, hi)`` in HU, ``lo < hi``.
    n_threads : int, default 1
        Threads splitting the slices.

    Returns
    -------
    ndarray, float32
        A new volume of ``image``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.array([-2000, -1000, -300, 400, 1000], np.int16).reshape(1, 1, 5)
    >>> adjust_gamma(img, 2.0).ravel().tolist()
    [-1000.0, -1000.0, -650.0, 400.0, 400.0]
    """
    where = "adjust_gamma"
    image = check_volume(image, where)
    g = as_float(gamma, "gamma", where, lo=0.0, lo_open=True)
    lo, hi = _window(hu_range, "hu_range", where)
    n_threads = as_threads(n_threads, where)
    out = memory.empty(image.shape, np.float32)
    span = np.float32(hi - lo)
    inv_span = np.float32(1.0 / (hi - lo))
    lo32, g32 = np.float32(lo), np.float32(g)

    def block(a: int, b: int) -> None:
        _as_float32_copy(image, out, a, b)
        o = out[a:b]
        np.clip(o, lo32, np.float32(hi), out=o)
        o -= lo32
        o *= inv_span
        np.minimum(o, np.float32(1.0), out=o)  # (hi - lo) * (1 / (hi - lo)) may round above 1
        np.power(o, g32, out=o)
        o *= span
        o += lo32

    _over_slices(block, image.shape, n_threads, _BLOCK_VOXELS)
    return out


# -- contrast --------------------------------------------------------------------------------
def adjust_contrast(
    image: NDArray[Any],
    factor: float,
    shift_hu: float = 0.0,
    window: Sequence[float] = (-1000.0, 400.0),
    *,
    n_threads: int = 1,
) -> NDArray[np.float32]:
    """Scale the contrast of a HU window about its centre, and shift it.

    With ``window = (lo, hi)``, ``c = (lo + hi) / 2`` and ``t = clip(x, lo, hi)``::

        out = c + factor * (t - c) + shift_hu + (x - t)

    Inside the window this is ``c + factor * (x - c) + shift_hu``: the window's contrast
    (lung against soft tissue, say) is scaled and its level moved. Outside it the map has slope
    1 (``x - t`` is how far a voxel lies beyond the window), so it is continuous and increasing,
    nothing is clipped, and air below the window and bone above it keep their own contrast —
    they move with the window's edge. ``factor=1, shift_hu=0`` leaves every value as it was.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume in HU (any real dtype).
    factor : float
        Contrast factor inside the window, ``> 0``.
    shift_hu : float, default 0.0
        Added to the window (and everything beyond it), in HU.
    window : 2 floats, default (-1000.0, 400.0)
        The HU window ``(lo, hi)``, ``lo < hi``.
    n_threads : int, default 1
        Threads splitting the slices.

    Returns
    -------
    ndarray, float32
        A new volume of ``image``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.array([-1100, -1000, -300, 0, 400, 500], np.int16).reshape(1, 1, 6)
    >>> adjust_contrast(img, 1.5, 10.0).ravel().tolist()
    [-1440.0, -1340.0, -290.0, 160.0, 760.0, 860.0]
    """
    where = "adjust_contrast"
    image = check_volume(image, where)
    f = as_float(factor, "factor", where, lo=0.0, lo_open=True)
    s = as_float(shift_hu, "shift_hu", where, unit="(HU)")
    lo, hi = _window(window, "window", where)
    n_threads = as_threads(n_threads, where)
    out = memory.empty(image.shape, np.float32)
    lo32, hi32 = np.float32(lo), np.float32(hi)
    centre = np.float32((lo + hi) / 2.0)
    offset = np.float32((lo + hi) / 2.0 + s)
    f32 = np.float32(f)

    def block(a: int, b: int) -> None:
        _as_float32_copy(image, out, a, b)
        o = out[a:b]
        t = np.clip(o, lo32, hi32)  # one block-sized temporary
        o -= t  # beyond the window (0 inside)
        t -= centre
        t *= f32
        o += t
        o += offset

    _over_slices(block, image.shape, n_threads, _BLOCK_VOXELS // 2)
    return out


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
    min_planes = max(1, _MIN_VOXELS_PER_THREAD // max(1, ny * nx))
    run_ranges(lambda a, b: blur_xy(src, out, wy, wx, a, b), nz, n_threads, min_size=min_planes)
    if wz.size > 1:
        min_rows = max(1, _MIN_VOXELS_PER_THREAD // max(1, nz * nx))
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


# -- noise -----------------------------------------------------------------------------------
def add_hu_noise(
    image: NDArray[Any],
    std_hu: float,
    rng: np.random.Generator,
    *,
    kind: Literal["gaussian", "lowdose"] = "gaussian",
    floor: float = 0.05,
) -> NDArray[np.float32]:
    """Add zero-mean Gaussian noise in HU, uniform or growing with the attenuation.

    ``"gaussian"``: ``x + std_hu * n`` — exactly :func:`ctflow.ops.augment.apply_noise`.
    ``"lowdose"``: ``x + sigma(x) * n`` with::

        sigma(x) = std_hu * sqrt(max(mu(x) / mu_water, floor)),   mu(x) / mu_water = 1 + x / 1000

    the noise standard deviation grows with the voxel's attenuation ``mu`` (from its HU), like
    quantum noise whose variance follows the signal: ``std_hu`` at water, ``std_hu *
    sqrt(2)`` at 1000 HU, ``std_hu * sqrt(floor)`` in air. This is a simple image-domain
    approximation; simulating Poisson noise on the projections (forward projection, noise,
    filtered back-projection) is out of scope. ``n`` is standard normal, drawn in float32 a
    block at a time in C order (the same numbers for both kinds and one ``rng`` seed).

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume in HU (any real dtype).
    std_hu : float
        Standard deviation in HU (at water for ``"lowdose"``), ``>= 0``.
    rng : numpy.random.Generator
        Source of randomness.
    kind : {"gaussian", "lowdose"}, default "gaussian"
        The noise model.
    floor : float, default 0.05
        Smallest relative attenuation in ``sigma(x)`` (``"lowdose"``), in ``(0, 1]``: air
        keeps a little noise.

    Returns
    -------
    ndarray, float32
        A new volume of ``image``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((4, 64, 64), -1000, np.int16)
    >>> img[2:] = 1000
    >>> out = add_hu_noise(img, 20.0, np.random.default_rng(0), kind="lowdose")
    >>> round(float(out[:2].std()), 0), round(float(out[2:].std()), 0)  # 20*sqrt(.05), 20*sqrt(2)
    (4.0, 28.0)
    """
    where = "add_hu_noise"
    image = check_volume(image, where)
    s = as_float(std_hu, "std_hu", where, lo=0.0, unit="(HU)")
    as_choice(kind, NOISE_KINDS, "kind", where)
    fl = as_float(floor, "floor", where, lo=0.0, hi=1.0, lo_open=True)
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"{where}: rng must be a numpy.random.Generator (np.random.default_rng(seed)); "
            f"got {type(rng).__name__}"
        )
    if kind == "gaussian":
        return apply_noise(image, s, rng)
    out = np.array(image, dtype=np.float32, order="C")  # always a new C-ordered array
    flat = out.reshape(-1)
    noise_block = np.empty(min(_BLOCK_VOXELS, flat.size), np.float32)
    sigma_block = np.empty_like(noise_block)
    scale = np.float32(s)
    for i in range(0, flat.size, noise_block.size):
        m = min(noise_block.size, flat.size - i)
        noise, sigma, x = noise_block[:m], sigma_block[:m], flat[i : i + m]
        rng.standard_normal(dtype=np.float32, out=noise)
        np.multiply(x, np.float32(0.001), out=sigma)
        sigma += np.float32(1.0)
        np.maximum(sigma, np.float32(fl), out=sigma)
        np.sqrt(sigma, out=sigma)
        sigma *= scale
        noise *= sigma
        x += noise
    return out
