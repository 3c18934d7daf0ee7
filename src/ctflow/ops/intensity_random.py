"""Intensity augmentations of one CT scan, with their random parameters given explicitly.

The random actions of :mod:`ctflow.actions.augmentation_intensity` (``random_gamma``,
``random_contrast``, ``random_blur``, ``random_bias_field``, ``random_noise``) draw their
parameters per item and call these functions with them, so each function here is
deterministic (:func:`add_hu_noise` takes a generator, like
:func:`ctflow.ops.augment.apply_noise`) and can be checked on its own.

Every function returns a new float32 volume (any real input dtype; int16 HU is read directly)
and never allocates a float64 or a second full-size temporary: voxel-wise maps run in place on
the output a block of slices at a time (float32 arithmetic), the blur is a numba ``nogil``
separable kernel (:mod:`ctflow.kernels.blur`) and the bias field is evaluated one slice at a
time. ``n_threads`` splits the slices across threads; results do not depend on it. The blur
and the bias field are in :mod:`ctflow.ops.intensity_spatial`, the threaded block loops in
:mod:`ctflow.ops.intensity_blocks`; every name of the table is importable from here.

======================  ==========================================================================
:func:`adjust_gamma`    clip to a HU window, ``lo + span * ((x - lo) / span) ** gamma``
:func:`adjust_contrast` scale the window about its centre and shift; outside it, follow the edges
:func:`gaussian_blur`   Gaussian blur, standard deviations in mm, edges repeated
:func:`apply_bias_field` multiply attenuation above air by ``exp(polynomial)``
:func:`add_hu_noise`    Gaussian noise in HU, uniform or growing with attenuation ("lowdose")
======================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import InvalidParameterError
from ctflow.ops.augment import apply_noise
from ctflow.ops.intensity_blocks import _as_float32_copy, _over_slices
from ctflow.ops.intensity_spatial import (
    MAX_BIAS_ORDER,
    apply_bias_field,
    bias_field_size,
    gaussian_blur,
    gaussian_half_kernel,
)
from ctflow.validation import as_choice, as_float, as_threads, check_volume

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
