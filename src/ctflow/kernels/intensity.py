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
then picks the same neighbour (the tests check every int16 value against the division).

:func:`normalize_int16_float32_stream` is the same arithmetic for int16 voxels, 16 at a time,
with non-temporal ("streaming") stores: the float32 output goes to memory without first being
read into the cache (a normal store to a line not in cache reads it first, so 2 B in + 4 B out
per voxel really moved 10 B). Bit-identical to :func:`normalize_int_float32`; x86-64 only
(:data:`STREAM_STORES`), ending with an ``sfence`` so other threads see every store.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = [
    "STREAM_STORES",
    "normalize_float32",
    "normalize_int16_float32_stream",
    "normalize_int_float32",
    "normalize_uint8",
]

#: Whether :func:`normalize_int16_float32_stream` can run here (its fence is an x86 instruction).
STREAM_STORES = platform.machine().lower() in ("x86_64", "amd64")
_LANES = 16  # voxels per streaming store: 64 bytes of float32, one cache line


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


@intrinsic
def _normalize16_stream(typingctx, src, out, q, lo, hi, inv_span):
    """``out[q:q+16] = float32((clip(src[q:q+16], lo, hi) - lo) * inv_span)``, one streaming store.

    ``src`` int16, ``out`` float32 (1-D, contiguous); ``&out[q]`` must be 64-byte aligned.
    """
    ok = (
        isinstance(src, types.Array)
        and src.dtype == types.int16
        and isinstance(out, types.Array)
        and out.dtype == types.float32
    )
    if not ok:
        return None
    sig = types.void(src, out, types.intp, types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        s_arr = context.make_array(signature.args[0])(context, builder, args[0])
        o_arr = context.make_array(signature.args[1])(context, builder, args[1])
        q = args[2]
        vin = ir.VectorType(ir.IntType(16), _LANES)
        vwide = ir.VectorType(ir.DoubleType(), _LANES)
        vout = ir.VectorType(ir.FloatType(), _LANES)

        def splat(value):
            vec = ir.Constant(vwide, ir.Undefined)
            for k in range(_LANES):
                vec = builder.insert_element(vec, value, ir.Constant(ir.IntType(32), k))
            return vec

        lo_v, hi_v, inv_v = splat(args[3]), splat(args[4]), splat(args[5])
        src_ptr = builder.bitcast(builder.gep(s_arr.data, [q]), vin.as_pointer())
        v = builder.sitofp(builder.load(src_ptr, align=2), vwide)
        v = builder.select(builder.fcmp_ordered("<", v, lo_v), lo_v, v)
        v = builder.select(builder.fcmp_ordered(">", v, hi_v), hi_v, v)
        v = builder.fptrunc(builder.fmul(builder.fsub(v, lo_v), inv_v), vout)
        dst_ptr = builder.bitcast(builder.gep(o_arr.data, [q]), vout.as_pointer())
        store = builder.store(v, dst_ptr, align=64)
        store.set_metadata(
            "nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        )
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _store_fence(typingctx):
    """``sfence``: streaming stores become visible to other threads before it returns."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        fence = builder.module.declare_intrinsic(
            "llvm.x86.sse.sfence", fnty=ir.FunctionType(ir.VoidType(), [])
        )
        builder.call(fence, [])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def normalize_int16_float32_stream(src, out, lo, hi, inv_span, a, b):
    """:func:`normalize_int_float32` for int16 ``src`` with streaming stores (x86-64 only).

    Scalar up to the first 64-byte-aligned output voxel, then 16 voxels per streaming store,
    scalar for the rest; bit-identical to :func:`normalize_int_float32`.
    """
    # voxels before the first 64-byte-aligned output address (an address is a multiple of 4)
    head = min(b, a + (-(out.ctypes.data + 4 * a) % 64) // 4)
    normalize_int_float32(src, out, lo, hi, inv_span, a, head)
    q = head
    while q + _LANES <= b:
        _normalize16_stream(src, out, q, lo, hi, inv_span)  # type: ignore[call-arg]
        q += _LANES
    normalize_int_float32(src, out, lo, hi, inv_span, q, b)
    _store_fence()  # type: ignore[call-arg]
