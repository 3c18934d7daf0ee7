"""numba kernels for in-plane rotation of a 3-D volume (loops only, no validation).

The kernels map every plane ``(a, b)`` of a volume through the same 2x2 matrix ``M`` about the
plane centre ``((na - 1) / 2, (nb - 1) / 2)``, pulling each output voxel ``(i, j)`` from the
input at::

    src_a = m_aa * (i - ca) + m_ab * (j - cb) + ca
    src_b = m_ba * (i - ca) + m_bb * (j - cb) + cb

scipy.ndimage's voxel-space rotation is ``M = R = [[cos, sin], [-sin, cos]]``; the rotation in
millimetres on a grid of plane spacings ``S = diag(s_a, s_b)`` is ``M = S^-1 R S``
(:func:`ctflow.ops.spatial.rotate` builds ``M``). Nothing here assumes ``M`` is a rotation: any
2x2 matrix works, as both source coordinates stay affine in ``j``.

A source coordinate outside ``[0, n - 1]`` on either plane axis gives ``cval``; inside, the value
is bilinear (:func:`rotate_bilinear`, computed in float32) or the nearest voxel
(:func:`rotate_nearest`, index ``floor(coord + 0.5)``). With ``round_out=True`` values are
rounded half away from zero before they are stored (for integer outputs); ``cval`` is stored
as given (the caller rounds it for integer outputs).

Memory layout
-------------
Volumes are passed as flat 1-D arrays plus element strides ``(sp, sa, sb)`` of the axes
``(p, a, b)``, where ``p`` is the non-rotated axis; input and output share the strides. This
lets one kernel serve every rotation plane of a C-ordered ``(z, y, x)`` volume without copies,
and unsigned flat indices spare numba's negative-index wrap-around. Only planes ``p0 <= p < p1``
are written, so callers can split the work across threads.

Loop order
----------
For each output row ``i`` the source offsets and weights of the row are computed once into
small tables and reused for a block of :data:`PLANE_BLOCK` planes; the planes of a block are
then swept in groups of :data:`PLANE_GROUP`, each output voxel reading its four taps from the
``PLANE_GROUP`` planes in turn. Few planes per group keep the lines a voxel touches (taps and
output, a plane apart, i.e. on the same L1 cache sets) within the cache's ways; many planes per
block amortise the coordinate arithmetic. ``python -m benchmarks.run --cases rotate`` measures
it against the peers.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["PLANE_BLOCK", "PLANE_GROUP", "rotate_bilinear", "rotate_nearest", "row_ranges"]

#: Planes sharing one computation of a row's source offsets and weights.
PLANE_BLOCK = 32
#: Planes swept together voxel by voxel inside a block.
PLANE_GROUP = 8


@numba.njit(nogil=True, cache=True)
def row_ranges(na, nb, m_aa, m_ab, m_ba, m_bb):
    """For each output row ``i``: the ``[lo, hi)`` range of ``j`` whose source is inside.

    Uses exactly the arithmetic of the rotation kernels, so their inner loops need no bounds
    test. The inside set of a row is contiguous for any matrix ``M``: both source coordinates
    are ``f0 + m * j``, monotonic in ``j`` (rounding included), so each of the four bounds cuts
    ``j`` at one place.
    """
    ca = (na - 1) * 0.5
    cb = (nb - 1) * 0.5
    amax = na - 1.0
    bmax = nb - 1.0
    lo = np.zeros(na, np.int64)
    hi = np.zeros(na, np.int64)
    for i in range(na):
        di = i - ca
        fa0 = m_aa * di - m_ab * cb + ca
        fb0 = m_ba * di - m_bb * cb + cb
        first = -1
        last = -1
        for j in range(nb):
            fa = fa0 + m_ab * j
            fb = fb0 + m_bb * j
            if fa >= 0.0 and fa <= amax and fb >= 0.0 and fb <= bmax:
                if first < 0:
                    first = j
                last = j
        if first >= 0:
            lo[i] = first
            hi[i] = last + 1
    return lo, hi


@numba.njit(nogil=True, cache=True)
def _fill_outside(out, lo, hi, p0, p1, i, nb, sp, sa, sb, fill):
    """Store ``fill`` in row ``i`` of planes ``[p0, p1)`` outside its inside range ``[lo, hi)``."""
    for p in range(p0, p1):
        row = p * sp + i * sa
        for j in range(0, lo[i]):
            out[np.uint64(row + j * sb)] = fill
        for j in range(hi[i], nb):
            out[np.uint64(row + j * sb)] = fill


@numba.njit(nogil=True, cache=True)
def _store(out, k, v, round_out):
    """Store ``v`` at flat index ``k``, rounded half away from zero when ``round_out``."""
    if round_out:
        w = np.float64(v)
        # the store truncates towards zero: +-0.5 rounds half away from zero
        out[k] = w + 0.5 if w >= 0.0 else w - 0.5
    else:
        out[k] = v


@numba.njit(nogil=True, cache=True)
def rotate_bilinear(src, out, na, nb, sp, sa, sb, p0, p1, m_aa, m_ab, m_ba, m_bb, cval, round_out):
    """Bilinear rotation of planes ``p0 <= p < p1`` (flat arrays, element strides)."""
    ca = (na - 1) * 0.5
    cb = (nb - 1) * 0.5
    lo, hi = row_ranges(na, nb, m_aa, m_ab, m_ba, m_bb)
    k0s = np.empty(nb, np.int64)  # per output column j of the current row: first tap's offset,
    das = np.empty(nb, np.int64)  # the steps to the next row / column tap (0 on the last
    dbs = np.empty(nb, np.int64)  # index, where the weight is 0) and the two weights
    was = np.empty(nb, np.float32)
    wbs = np.empty(nb, np.float32)
    for pblk in range(p0, p1, PLANE_BLOCK):
        pend = min(pblk + PLANE_BLOCK, p1)
        for i in range(na):
            di = i - ca
            fa0 = m_aa * di - m_ab * cb + ca
            fb0 = m_ba * di - m_bb * cb + cb
            jlo, jhi = lo[i], hi[i]
            for j in range(jlo, jhi):
                fa = fa0 + m_ab * j
                fb = fb0 + m_bb * j
                ia = int(fa)  # fa >= 0: truncation is floor
                ib = int(fb)
                was[j] = np.float32(fa - ia)
                wbs[j] = np.float32(fb - ib)
                das[j] = sa if ia + 1 < na else 0
                dbs[j] = sb if ib + 1 < nb else 0
                k0s[j] = ia * sa + ib * sb
            for g in range(pblk, pend, PLANE_GROUP):
                gend = min(g + PLANE_GROUP, pend)
                _fill_outside(out, lo, hi, g, gend, i, nb, sp, sa, sb, cval)
                for j in range(jlo, jhi):
                    k0, da, db, wa, wb = k0s[j], das[j], dbs[j], was[j], wbs[j]
                    o0 = i * sa + j * sb
                    for p in range(g, gend):
                        k = np.uint64(p * sp + k0)
                        v00 = np.float32(src[k])
                        v01 = np.float32(src[k + np.uint64(db)])
                        v10 = np.float32(src[k + np.uint64(da)])
                        v11 = np.float32(src[k + np.uint64(da + db)])
                        top = v00 + wb * (v01 - v00)
                        bot = v10 + wb * (v11 - v10)
                        _store(out, np.uint64(p * sp + o0), top + wa * (bot - top), round_out)


@numba.njit(nogil=True, cache=True)
def rotate_nearest(src, out, na, nb, sp, sa, sb, p0, p1, m_aa, m_ab, m_ba, m_bb, cval, round_out):
    """Nearest-neighbour rotation of planes ``p0 <= p < p1`` (flat arrays, element strides)."""
    ca = (na - 1) * 0.5
    cb = (nb - 1) * 0.5
    lo, hi = row_ranges(na, nb, m_aa, m_ab, m_ba, m_bb)
    k0s = np.empty(nb, np.int64)  # per output column j of the current row: the source offset
    for pblk in range(p0, p1, PLANE_BLOCK):
        pend = min(pblk + PLANE_BLOCK, p1)
        for i in range(na):
            di = i - ca
            fa0 = m_aa * di - m_ab * cb + ca
            fb0 = m_ba * di - m_bb * cb + cb
            jlo, jhi = lo[i], hi[i]
            for j in range(jlo, jhi):
                fa = fa0 + m_ab * j
                fb = fb0 + m_bb * j
                k0s[j] = int(np.floor(fa + 0.5)) * sa + int(np.floor(fb + 0.5)) * sb
            for g in range(pblk, pend, PLANE_GROUP):
                gend = min(g + PLANE_GROUP, pend)
                _fill_outside(out, lo, hi, g, gend, i, nb, sp, sa, sb, cval)
                for j in range(jlo, jhi):
                    k0 = k0s[j]
                    o0 = i * sa + j * sb
                    for p in range(g, gend):
                        _store(out, np.uint64(p * sp + o0), src[np.uint64(p * sp + k0)], round_out)
