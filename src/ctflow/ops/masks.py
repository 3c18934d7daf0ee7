"""Nodule masks of one scan: rasterise world-mm nodules, binarise, and nodules back from a mask.

Conventions
-----------
* Nodules are given in **world LPS millimetres**, ``(z, y, x)`` order (ctflow's nodule table,
  :data:`ctflow.io.annotations.NODULE_COLUMNS`): centres ``(N, 3)`` and diameters ``(N,)``
  (spheres) or ``(N, 3)`` (per world axis z, y, x: ellipsoids / boxes aligned with the world
  axes).
* Rasterisation happens in world space, so masks are right for any spacing and any direction:
  voxel ``v`` belongs to nodule ``i`` when its world position ``w = geometry.voxel_to_world(v)``
  satisfies ``sum(((w - c) / (d / 2)) ** 2) <= 1`` (``mode="ellipsoid"``) or
  ``max(|w - c| - d / 2) <= 0`` per axis (``mode="cuboid"``). Boundaries are inclusive.
* A nodule partly outside the volume is clipped; one wholly outside contributes nothing.
* **Small nodules never vanish**: a nodule that contains no voxel centre at all (smaller than a
  voxel, or thin along one axis) marks the voxel containing its centre, i.e. the voxel
  ``floor(geometry.world_to_voxel(c) + 0.5)`` (the voxel centre nearest to ``c``), when that
  voxel is inside the volume.
* Masks are ``uint8`` 0/1 volumes of shape ``(Z, Y, X)``.
* :func:`nodules_from_mask` inverts :func:`create_mask` for spheres: one nodule per
  26-connected component, centre = world position of the component's voxel centroid, diameter
  = diameter of the sphere of the same volume, ``(6 * n_voxels * voxel_volume / pi) ** (1/3)``
  with ``voxel_volume = prod(spacing)``.

Examples
--------
>>> from ctflow.geometry import Geometry
>>> g = Geometry(spacing=(2.0, 1.0, 1.0), origin=(-20.0, 0.0, 0.0))
>>> mask = create_mask((20, 32, 32), g, [[0.0, 16.0, 16.0]], [10.0])
>>> centers, diameters = nodules_from_mask(mask, g)
>>> centers.round(3).tolist()
[[0.0, 16.0, 16.0]]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.kernels.masks import paint_nodules
from ctflow.validation import as_choice, as_float, as_shape, check_geometry

__all__ = [
    "MASK_MODES",
    "binarize_mask",
    "create_mask",
    "mask_components",
    "nodules_from_mask",
]

#: Shapes create_mask can draw.
MASK_MODES = ("ellipsoid", "cuboid")

# voxels of slack around a nodule's analytic bounding box (the kernel tests each voxel exactly)
_BOX_SLACK = 1e-3


def _nodule_arrays(
    centers: ArrayLike, diameters: ArrayLike, where: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate centres (N, 3) and diameters (N,) / (N, 3); return centres and radii (N, 3)."""
    try:
        c = np.asarray(centers, dtype=np.float64)
        d = np.asarray(diameters, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"{where}: centers and diameters must be numeric arrays; "
            f"got {centers!r} and {diameters!r}"
        ) from None
    if c.size == 0 and d.size == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    if c.ndim != 2 or c.shape[1] != 3:
        raise InvalidParameterError(
            f"{where}: centers must be an (N, 3) array of world (z, y, x) mm; got shape {c.shape}"
        )
    n = c.shape[0]
    if d.shape == (n,):
        d = np.repeat(d[:, None], 3, axis=1)
    elif d.shape != (n, 3):
        raise InvalidParameterError(
            f"{where}: diameters must have shape ({n},) or ({n}, 3) for {n} centers; "
            f"got shape {d.shape}"
        )
    if not np.all(np.isfinite(c)):
        row = int(np.flatnonzero(~np.all(np.isfinite(c), axis=1))[0])
        raise InvalidParameterError(
            f"{where}: centers must be finite; got {c[row].tolist()} for nodule {row}"
        )
    bad = ~np.all(np.isfinite(d) & (d > 0), axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidParameterError(
            f"{where}: diameters must be finite and > 0 (mm); "
            f"got {d[row].tolist()} for nodule {row}"
        )
    return np.ascontiguousarray(c), np.ascontiguousarray(d / 2)


def create_mask(
    shape: ArrayLike,
    geometry: Geometry,
    centers: ArrayLike,
    diameters: ArrayLike,
    *,
    mode: str = "ellipsoid",
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Rasterise nodules given in world mm into a uint8 0/1 mask of ``shape``.

    Parameters
    ----------
    shape : 3 ints
        Mask shape ``(Z, Y, X)``.
    geometry : Geometry
        Geometry of the scan (spacing, origin, direction).
    centers : array_like (N, 3)
        Nodule centres, world LPS mm ``(z, y, x)``. ``N = 0`` gives an empty mask.
    diameters : array_like (N,) or (N, 3)
        Diameters in mm: one per nodule (sphere / cube) or one per world axis (z, y, x).
    mode : {"ellipsoid", "cuboid"}
        Shape to draw (see the module docstring for the exact inequalities).
    out : uint8 ndarray, optional
        A mask of ``shape`` to paint into; it is not cleared first (nodules are added to what it
        holds) and it is returned.

    Returns
    -------
    ndarray of uint8, shape ``shape``
        1 inside any nodule, 0 elsewhere. A nodule that contains no voxel centre marks the voxel
        containing its centre (when inside the volume), so no annotation silently vanishes.

    Raises
    ------
    InvalidParameterError
        Bad shape, geometry, centres, diameters, mode or ``out``.

    Examples
    --------
    >>> from ctflow.geometry import Geometry
    >>> g = Geometry(spacing=(1.0, 1.0, 1.0))
    >>> int(create_mask((11, 11, 11), g, [[5.0, 5.0, 5.0]], [4.0]).sum())  # |v - c| <= 2
    33
    >>> int(create_mask((11, 11, 11), g, [[5.0, 5.0, 5.0]], [4.0], mode="cuboid").sum())
    125
    """
    where = "create_mask"
    dims = as_shape(shape, where=where)
    g = check_geometry(geometry, where)
    as_choice(mode, MASK_MODES, "mode", where)
    c, r = _nodule_arrays(centers, diameters, where)
    if out is None:
        mask = np.zeros(dims, dtype=np.uint8)  # calloc: pages without a nodule stay unmapped
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != dims:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise InvalidParameterError(
                f"{where}: out must be a uint8 array of shape {dims}; got {got}"
            )
        if not out.flags.writeable:
            raise InvalidParameterError(f"{where}: out must be writeable")
        mask = out
    if len(c) == 0:
        return mask
    # continuous voxel position of each centre, and the half-extent (voxels) along each voxel
    # axis j of the world ellipsoid / box: D[k, j] * r[k] summed over world axes k
    vc = g.world_to_voxel(c)
    proj = np.abs(g.direction)[None, :, :] * r[:, :, None]  # (N, world k, voxel j)
    if mode == "ellipsoid":
        ext = np.sqrt(np.sum(proj**2, axis=1)) / g.spacing
    else:
        ext = np.sum(proj, axis=1) / g.spacing
    upper = np.asarray(dims, dtype=np.float64)
    lo = np.clip(np.ceil(vc - ext - _BOX_SLACK), 0, upper)
    hi = np.clip(np.floor(vc + ext + _BOX_SLACK) + 1, 0, upper)
    boxes = np.empty((len(c), 6), dtype=np.int64)
    boxes[:, 0::2] = lo
    boxes[:, 1::2] = hi
    # voxel containing the centre; far-away centres are clamped just outside (never painted)
    centre_vox = np.clip(np.floor(vc + 0.5), -1, upper).astype(np.int64)
    paint_nodules(
        mask,
        g.origin,
        g.spacing,
        np.ascontiguousarray(g.direction),
        c,
        r,
        boxes,
        centre_vox,
        mode == "cuboid",
    )
    return mask


def binarize_mask(mask: ArrayLike, threshold: float = 0.5) -> NDArray[np.uint8]:
    """Binarise a soft mask (e.g. a network's probabilities): 1 where ``mask > threshold``.

    Parameters
    ----------
    mask : array_like
        Real-valued (or boolean) array of any shape. NaN gives 0.
    threshold : float
        Voxels strictly greater than it become 1.

    Returns
    -------
    ndarray of uint8
        Same shape, values 0/1.

    Raises
    ------
    InvalidParameterError
        ``mask`` is not real-valued or ``threshold`` is not a finite number.

    Examples
    --------
    >>> import numpy as np
    >>> binarize_mask(np.array([0.2, 0.5, 0.7])).tolist()
    [0, 0, 1]
    """
    where = "binarize_mask"
    arr = np.asarray(mask)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise InvalidParameterError(
            f"{where}: mask must be a real-valued or boolean array; got dtype {arr.dtype}"
        )
    as_float(threshold, "threshold", where)
    above: NDArray[np.bool_] = np.greater(arr, threshold)
    return above.view(np.uint8)


def mask_components(
    mask: ArrayLike, geometry: Geometry
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Find the connected components of a mask, label by label.

    A label map (integers) gives one component per 26-connected region of each non-zero label:
    regions of different labels that touch are never merged. Float or boolean masks have one
    foreground (non-zero voxels).

    Parameters
    ----------
    mask : array_like (Z, Y, X)
        Any numeric or boolean volume.
    geometry : Geometry
        Geometry of the mask.

    Returns
    -------
    centers : ndarray (N, 3) float64
        World LPS mm ``(z, y, x)`` of each component's voxel centroid, i.e.
        ``geometry.voxel_to_world(mean of the component's voxel indices)``.
    diameters : ndarray (N,) float64
        Equivalent-sphere diameter in mm: ``(6 * n_voxels * prod(spacing) / pi) ** (1 / 3)``.
    labels : ndarray (N,) int64
        The label of each component (1 for a float or boolean mask).

    Components come by label, then in ``scipy.ndimage.label`` order (raster order of their
    first voxel).

    Raises
    ------
    InvalidParameterError
        ``mask`` is not a 3-D numeric array or ``geometry`` is not a Geometry.

    Examples
    --------
    >>> from ctflow.geometry import Geometry
    >>> m = np.zeros((1, 1, 6), np.uint8); m[0, 0, 1:3] = 2; m[0, 0, 3:5] = 5  # touching
    >>> c, d, lab = mask_components(m, Geometry((1.0, 1.0, 1.0)))
    >>> c[:, 2].tolist(), lab.tolist()
    ([1.5, 3.5], [2, 5])
    """
    where = "nodules_from_mask"
    arr = np.asarray(mask)
    if arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InvalidParameterError(
            f"{where}: mask must be a 3-D numeric (z, y, x) array; got {arr.dtype} {arr.shape}"
        )
    g = check_geometry(geometry, where)
    fg = arr != 0
    # label only the bounding box of the foreground: the int32 label volume stays small
    spans = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(np.any(fg, axis=other))
        if nz.size == 0:
            return np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int64)
        spans.append((int(nz[0]), int(nz[-1]) + 1))
    box = tuple(slice(a, b) for a, b in spans)
    sub = arr[box]
    if arr.dtype.kind in "iu":
        values = [int(v) for v in np.unique(sub) if v != 0]
    else:
        values = [1]
        sub = fg[box]
    parts = [_components(sub == v if len(values) > 1 else sub != 0, spans) for v in values]
    centroid = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([np.full(len(p[1]), v, np.int64) for p, v in zip(parts, values)])
    centers = g.voxel_to_world(centroid)
    diameters = np.cbrt(6.0 * counts * float(np.prod(g.spacing)) / np.pi)
    return centers, diameters, labels


def _components(
    fg: NDArray[np.bool_], spans: list[tuple[int, int]]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Voxel centroids (in the full volume's indices) and voxel counts of 26-components."""
    labels, n = ndimage.label(fg, structure=np.ones((3, 3, 3), dtype=bool))
    idx = np.nonzero(labels)
    lab = labels[idx]
    counts = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    centroid = np.empty((n, 3))
    for axis in range(3):
        sums = np.bincount(lab, weights=idx[axis].astype(np.float64), minlength=n + 1)[1:]
        centroid[:, axis] = sums / counts + spans[axis][0]
    return centroid, counts


def nodules_from_mask(
    mask: ArrayLike, geometry: Geometry
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Find nodules in a mask: one per 26-connected component of each label.

    The centres and diameters of :func:`mask_components` (which also gives each component's
    label): a label map's touching labels stay separate nodules.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> m = np.zeros((5, 5, 5), np.uint8)
    >>> m[1:3, 1:3, 1:3] = 1
    >>> c, d = nodules_from_mask(m, Geometry((1.0, 1.0, 1.0)))
    >>> c.tolist(), round(float(d[0]), 3)
    ([[1.5, 1.5, 1.5]], 2.481)
    """
    centers, diameters, _ = mask_components(mask, geometry)
    return centers, diameters
