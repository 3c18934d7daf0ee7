"""Intensity augmentations of one scan: additive noise and cutout.

Random functions take a :class:`numpy.random.Generator` (the pipeline hands each item its own,
seeded from the run seed), so equal seeds give equal results whatever the thread count. Noise is
drawn in float32 directly (``Generator.standard_normal(dtype=np.float32)``) a block of slices at
a time, so no float64 or second full-size temporary is ever allocated; the draws are the same as
one call over the whole volume in C order.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.validation import as_choice, as_float, check_volume

__all__ = ["NOISE_KINDS", "apply_noise", "cutout"]

#: Noise distributions of :func:`apply_noise`.
NOISE_KINDS = ("gaussian", "uniform")

#: Voxels of noise drawn per block (4 Mi float32 = 16 MiB).
_BLOCK_VOXELS = 1 << 22


def apply_noise(
    image: NDArray[Any],
    sigma: float,
    rng: np.random.Generator,
    *,
    kind: Literal["gaussian", "uniform"] = "gaussian",
) -> NDArray[np.float32]:
    """Add zero-mean random noise of standard deviation ``sigma`` to a volume.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume (any real dtype; HU for CT).
    sigma : float
        Standard deviation of the noise, in image units (HU); ``>= 0``.
    rng : numpy.random.Generator
        Source of randomness.
    kind : {"gaussian", "uniform"}, default "gaussian"
        ``"gaussian"``: N(0, sigma²); ``"uniform"``: U(-sigma·√3, sigma·√3), which has the same
        standard deviation.

    Returns
    -------
    ndarray, float32
        ``image + noise``, a new array.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((4, 64, 64), np.int16)
    >>> out = apply_noise(img, 10.0, np.random.default_rng(0))
    >>> out.dtype, 9.5 < float(out.std()) < 10.5
    (dtype('float32'), True)
    """
    where = "apply_noise"
    image = check_volume(image, where)
    s = as_float(sigma, "sigma", where, lo=0.0, unit="(image units)")
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"{where}: rng must be a numpy.random.Generator (np.random.default_rng(seed)); "
            f"got {type(rng).__name__}"
        )
    as_choice(kind, NOISE_KINDS, "kind", where)

    out = np.array(image, dtype=np.float32, order="C")  # always a new C-ordered array
    flat = out.reshape(-1)
    block = np.empty(min(_BLOCK_VOXELS, flat.size), np.float32)
    half_width = np.float32(s * np.sqrt(3.0))
    scale = np.float32(s)
    for i in range(0, flat.size, block.size):
        noise = block[: min(block.size, flat.size - i)]
        if kind == "gaussian":
            rng.standard_normal(dtype=np.float32, out=noise)
            noise *= scale
        else:
            rng.random(dtype=np.float32, out=noise)  # [0, 1)
            noise *= 2 * half_width
            noise -= half_width
        flat[i : i + noise.size] += noise
    return out


def _fill_value(image: NDArray[Any], fill: Any, where: str) -> Any:
    """Return the cutout value as a scalar of the image dtype (statistic, rounded, checked)."""
    if isinstance(fill, str):
        if fill == "min":
            value = image.min()
        elif fill == "max":
            value = image.max()
        elif fill == "mean":
            value = image.mean(dtype=np.float64)  # a scalar accumulator, not a volume
        else:
            raise InvalidParameterError(
                f"{where}: fill must be a number or one of 'min', 'max', 'mean'; got {fill!r}"
            )
    elif isinstance(fill, int | float | np.number) and not isinstance(fill, bool):
        value = fill
    else:
        raise InvalidParameterError(
            f"{where}: fill must be a number or one of 'min', 'max', 'mean'; got {fill!r}"
        )
    if image.dtype.kind in "iub":
        v = float(value)
        if not np.isfinite(v):
            raise InvalidParameterError(
                f"{where}: fill must be finite for {image.dtype}; got {fill!r}"
            )
        v = float(np.floor(v + 0.5) if v >= 0 else -np.floor(0.5 - v))  # half away from zero
        lo, hi = (
            (0, 1)
            if image.dtype.kind == "b"
            else (np.iinfo(image.dtype).min, np.iinfo(image.dtype).max)
        )
        if not lo <= v <= hi:
            raise InvalidParameterError(
                f"{where}: fill must fit the image dtype {image.dtype} ([{lo}, {hi}]); got {fill!r}"
            )
        return np.asarray(v).astype(image.dtype)
    return np.asarray(value).astype(image.dtype)


def cutout(
    image: NDArray[Any],
    start: ArrayLike,
    shape: ArrayLike,
    fill: float | Literal["min", "max", "mean"] = "min",
) -> NDArray[Any]:
    """Copy of a volume with a box filled with one value ("cutout" / random erasing).

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        The volume.
    start : 3 ints
        Voxel index (z, y, x) of the box's first corner; may be negative or beyond the volume.
    shape : 3 ints
        Size of the box (z, y, x), >= 0 each; the box is clipped to the volume.
    fill : float or {"min", "max", "mean"}, default "min"
        The value, or a statistic of the whole image ("min" of a CT is air / outside the field
        of view). Rounded half away from zero for integer images; it must fit the dtype.

    Returns
    -------
    ndarray
        A new array, same dtype and shape as ``image``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(27, dtype=np.int16).reshape(3, 3, 3)
    >>> out = cutout(img, (-1, 1, 1), (2, 5, 1), fill="max")
    >>> out[0].tolist()
    [[0, 1, 2], [3, 26, 5], [6, 26, 8]]
    >>> int(img[0, 1, 1])
    4
    """
    where = "cutout"
    image = check_volume(image, where)
    try:
        raw_start = np.asarray(start)
        st = raw_start.astype(np.int64)
        ok = st.shape == (3,) and bool(np.all(st == raw_start))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(f"{where}: start must be 3 integers (z, y, x); got {start!r}")
    try:
        raw_shape = np.asarray(shape)
        sh = raw_shape.astype(np.int64)
        ok = sh.shape == (3,) and bool(np.all(sh == raw_shape)) and bool(np.all(sh >= 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"{where}: shape must be 3 integers >= 0 (z, y, x); got {shape!r}"
        )
    value = _fill_value(image, fill, where)
    out = image.copy()
    lo = np.clip(st, 0, image.shape)
    hi = np.clip(st + sh, 0, image.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    out[box] = value
    return out
