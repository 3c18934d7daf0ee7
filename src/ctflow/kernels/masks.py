"""numba kernel rasterising nodules (ellipsoids / cuboids in world mm) into a uint8 mask.

Loops only, no validation: :func:`ctflow.ops.masks.create_mask` checks the arguments, computes
each nodule's voxel bounding box and calls :func:`paint_nodules`.

For voxel ``v = (z, y, x)`` the world position is computed as in
:meth:`ctflow.geometry.Geometry.voxel_to_world`::

    w[k] = origin[k] + ((z * s0) * D[k, 0] + (y * s1) * D[k, 1]) + (x * s2) * D[k, 2]

and the voxel is inside nodule ``i`` (centre ``c``, semi-axes ``r``, world mm) when::

    ellipsoid:  ((w0 - c0) / r0)**2 + ((w1 - c1) / r1)**2 + ((w2 - c2) / r2)**2 <= 1
    cuboid:     |w0 - c0| <= r0  and  |w1 - c1| <= r1  and  |w2 - c2| <= r2

Only voxels in the nodule's (clipped) bounding box are tested.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["paint_nodules"]


@numba.njit(nogil=True, cache=True)
def paint_nodules(mask, origin, spacing, direction, centers, radii, boxes, centre_voxels, cuboid):
    """Set ``mask`` to 1 inside every nodule; return the number of voxels each one satisfied.

    Parameters
    ----------
    mask : uint8 (Z, Y, X)
        Painted in place (voxels are only ever set to 1).
    origin, spacing : float64 (3,)
    direction : float64 (3, 3)
        Column ``j`` = world unit vector of voxel axis ``j``.
    centers, radii : float64 (N, 3)
        World centres and semi-axes (mm) along world (z, y, x).
    boxes : int64 (N, 6)
        Half-open voxel box ``(z0, z1, y0, y1, x0, x1)`` of each nodule, already clipped to the
        mask (may be empty).
    centre_voxels : int64 (N, 3)
        Voxel containing each centre; marked when the nodule satisfied no voxel at all and the
        index lies inside the mask.
    cuboid : bool
        Cuboid test instead of the ellipsoid one.
    """
    nz, ny, nx = mask.shape
    n = centers.shape[0]
    hits = np.zeros(n, np.int64)
    for i in range(n):
        c0 = centers[i, 0]
        c1 = centers[i, 1]
        c2 = centers[i, 2]
        r0 = radii[i, 0]
        r1 = radii[i, 1]
        r2 = radii[i, 2]
        count = 0
        for z in range(boxes[i, 0], boxes[i, 1]):
            pz = z * spacing[0]
            az0 = pz * direction[0, 0]
            az1 = pz * direction[1, 0]
            az2 = pz * direction[2, 0]
            for y in range(boxes[i, 2], boxes[i, 3]):
                py = y * spacing[1]
                a0 = az0 + py * direction[0, 1]
                a1 = az1 + py * direction[1, 1]
                a2 = az2 + py * direction[2, 1]
                for x in range(boxes[i, 4], boxes[i, 5]):
                    px = x * spacing[2]
                    d0 = origin[0] + (a0 + px * direction[0, 2]) - c0
                    d1 = origin[1] + (a1 + px * direction[1, 2]) - c1
                    d2 = origin[2] + (a2 + px * direction[2, 2]) - c2
                    if cuboid:
                        inside = abs(d0) <= r0 and abs(d1) <= r1 and abs(d2) <= r2
                    else:
                        q0 = d0 / r0
                        q1 = d1 / r1
                        q2 = d2 / r2
                        inside = q0 * q0 + q1 * q1 + q2 * q2 <= 1.0
                    if inside:
                        mask[z, y, x] = 1
                        count += 1
        hits[i] = count
        if count == 0:
            vz = centre_voxels[i, 0]
            vy = centre_voxels[i, 1]
            vx = centre_voxels[i, 2]
            if 0 <= vz < nz and 0 <= vy < ny and 0 <= vx < nx:
                mask[vz, vy, vx] = 1
    return hits
