"""numba kernels folding one patch into a running (weighted) mean (loops only, no validation).

The arithmetic is :class:`ctflow.ops.patches_grid._WeightedMean`'s, voxel by voxel and in the
same float32 order, so the result is bit-identical to the numpy form it replaces: with counts,
``t = total + 1; mean += (value - mean) / t``; with weights, ``t = total + w;
mean += (value - mean) * (w / t)``. One pass over the patch's region instead of five numpy
passes with temporaries, and the planes of the region can be split between threads (each plane
is touched by one call only).

``mean`` is ``(C, Z, Y, X)`` float32, ``total`` ``(Z, Y, X)`` (uint16 counts or float32
weights), ``values`` ``(C, pz, py, px)`` float32, ``weights`` ``(pz, py, px)`` float32. The
region starts at ``(z, y, x)`` and spans ``(dz, dy, dx)`` voxels; a call folds its planes
``k0 <= k < k1`` (relative to ``z``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["fold_counts", "fold_weights"]


@numba.njit(nogil=True, cache=True)
def fold_counts(mean, total, values, z, y, x, dy, dx, k0, k1):
    """Fold planes ``k0:k1`` of ``values`` into ``mean`` with a contribution count."""
    n_channels = mean.shape[0]
    for k in range(k0, k1):
        zz = z + k
        for j in range(dy):
            t = total[zz, y + j, x : x + dx]
            for i in range(dx):
                t[i] += 1
        for c in range(n_channels):
            for j in range(dy):  # contiguous rows: the loop over i vectorises
                m = mean[c, zz, y + j, x : x + dx]
                t = total[zz, y + j, x : x + dx]
                v = values[c, k, j, :dx]
                for i in range(dx):
                    mi = m[i]
                    m[i] = mi + (v[i] - mi) / np.float32(t[i])


@numba.njit(nogil=True, cache=True)
def fold_weights(mean, total, values, weights, z, y, x, dy, dx, k0, k1):
    """Fold planes ``k0:k1`` of ``values`` into ``mean`` with per-voxel ``weights``."""
    n_channels = mean.shape[0]
    for k in range(k0, k1):
        zz = z + k
        for j in range(dy):
            t = total[zz, y + j, x : x + dx]
            w = weights[k, j, :dx]
            for i in range(dx):
                t[i] += w[i]
        for c in range(n_channels):
            for j in range(dy):  # contiguous rows: the loop over i vectorises
                m = mean[c, zz, y + j, x : x + dx]
                t = total[zz, y + j, x : x + dx]
                w = weights[k, j, :dx]
                v = values[c, k, j, :dx]
                for i in range(dx):
                    mi = m[i]
                    m[i] = mi + (v[i] - mi) * (w[i] / t[i])
