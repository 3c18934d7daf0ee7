"""numba kernels for the DICOM rescale: stored pixel values -> HU (loops only, no validation).

Both kernels take one slice of stored values (any integer dtype, flat and contiguous) and
write its HU into ``out`` (flat, contiguous), in one pass without temporaries::

    out = -1000                       where pad_lo <= stored <= pad_hi (padding: air)
    out = stored * slope + intercept  elsewhere

and return how many voxels were padding. :func:`rescale_int16` computes in int64 (``slope`` and
``intercept`` integral, ``|slope| <= 2**20``, ``|intercept| <= 2**30``: no overflow) and returns
-1 when a HU leaves the int16 range (the caller redoes the volume in
float32). :func:`rescale_float32` computes in float64 per voxel and rounds once to float32 (as
``stored.astype(float64) * slope + intercept`` does). ``pad_lo > pad_hi`` means no padding.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["AIR_HU", "rescale_float32", "rescale_int16"]

#: The HU written for padding voxels.
AIR_HU = -1000


@numba.njit(nogil=True, cache=True)
def _value_range(src):
    """Smallest and largest value (in the source dtype: the loop vectorises)."""
    low = src[0]
    high = src[0]
    for q in range(src.shape[0]):
        v = src[q]
        low = min(low, v)
        high = max(high, v)
    return np.int64(low), np.int64(high)


@numba.njit(nogil=True, cache=True)
def _affine_int16(src, out, slope, intercept):
    """``out = src * slope + intercept`` (the caller knows every result fits int16)."""
    for q in range(src.shape[0]):
        out[q] = np.int64(src[q]) * slope + intercept


@numba.njit(nogil=True, cache=True)
def _rescale_int16_padded(src, out, slope, intercept, pad_lo, pad_hi):
    """Rescale voxel by voxel: padding -> -1000, the range of the other HU checked."""
    n_padding = 0
    low = 0
    high = 0
    for q in range(src.shape[0]):
        v = np.int64(src[q])
        pad = (v >= pad_lo) & (v <= pad_hi)
        hu = AIR_HU if pad else v * slope + intercept
        low = min(low, hu)
        high = max(high, hu)
        n_padding += pad
        out[q] = hu
    if low < -32768 or high > 32767:
        return -1
    return n_padding


@numba.njit(nogil=True, cache=True)
def rescale_int16(src, out, slope, intercept, pad_lo, pad_hi):
    """``out = src * slope + intercept`` as int16, padding -> -1000; padding count or -1.

    A slice without padding values (the padding range misses its value range) takes two
    vectorised passes (value range, then the rescale) instead of the exact loop.
    """
    if src.shape[0] == 0:
        return 0
    low, high = _value_range(src)
    if pad_lo <= pad_hi and pad_lo <= high and pad_hi >= low:
        return _rescale_int16_padded(src, out, slope, intercept, pad_lo, pad_hi)
    a = low * slope + intercept
    b = high * slope + intercept
    if min(a, b) < -32768 or max(a, b) > 32767:
        return -1
    _affine_int16(src, out, slope, intercept)
    return 0


@numba.njit(nogil=True, cache=True)
def rescale_float32(src, out, slope, intercept, pad_lo, pad_hi):
    """``out = float32(float64(src) * slope + intercept)``, padding -> -1000; padding count."""
    n_padding = 0
    for q in range(src.shape[0]):
        v = np.int64(src[q])
        if pad_lo <= v <= pad_hi:
            out[q] = AIR_HU
            n_padding += 1
        else:
            out[q] = np.float64(v) * slope + intercept
    return n_padding
