"""Classical lung segmentation of a CT volume, and the lung bounding box.

:func:`segment_lungs` finds the lungs of a ``(z, y, x)`` HU volume at any spacing without a
model:

1. **Air-like voxels** ``HU < threshold`` (-320 by default) are cut into runs along ``x`` (the
   volume is never labelled voxel by voxel; see :mod:`ctflow.kernels.lungs`).
2. **Outside air.** In every axial slice (axis 0), air connected in 2-D to the in-plane (y/x)
   border is the air around the body and is dropped. The z-border is NOT used: lungs touch the
   top and bottom slices of a chest scan. Working per slice also keeps the lungs when the airway
   opens to the outside through the mouth or nose in a scan that includes the head.
   A **cropped field of view** (median HU of the in-plane border above -900: the border cuts
   through the body, as in a crop around the heart, so lungs may touch it) has no outside air:
   then nothing is dropped here, and the body rule below is not applied.
3. **Candidates.** The remaining air is labelled in 3-D (face connectivity). A component is a
   lung candidate when all of these hold:

   * its volume is at least ``min_lung_ml`` (default 15 mL, below the smallest lung bases seen
     in abdominal scans);
   * at least half of its voxels lie inside the body, i.e. within the x-extent, on their row, of
     the slice's largest tissue region (rejects foam and hollow parts of the table and mattress);
   * its density is lung-like: at most 50 % of its voxels are "pure gas" (``HU < -950``). Lung
     parenchyma is around -850 HU with vessels (few voxels below -950, more in emphysema),
     while gas in the bowel, stomach, outside air or an isolated trachea sits near -1000 HU.
     Small components (< 200 mL, e.g. lung bases in an abdominal scan) are held to 25 % (the
     partial-volume rim of a small gas pocket is large relative to it); very large components
     (>= 1000 mL, i.e. whole lungs) are accepted up to 70 % so severe emphysema is kept;
   * it is at least 1 % of the largest candidate's volume (drops small lung-like pockets — gas
     mottled with stool — when real lungs are present);
   * it reaches above the lowest point of the largest candidate, along the patient's superior
     axis (taken from ``geometry.direction``): gas in the abdomen below the lungs is dropped.

   Airways connected to the lungs (trachea, main bronchi) are part of the lung component and are
   kept; a trachea segment that is not connected (above the apices) is pure gas and is dropped.
4. **Closing and holes.** A 3-D binary closing with a ball of radius ``closing_mm`` takes in
   juxta-pleural nodules and the notches of vessels entering the lung
   (:func:`ctflow.ops.closing.coarse_closing`). It is computed exactly (two Euclidean distance
   transforms) on a grid of blocks of about 2 mm built from the blocks that are at least half
   lung; the signed distance is interpolated back to the full grid, so the result follows a
   full-resolution closing and only ever adds voxels to the thresholded lungs. The volume is
   padded with background, so lungs cut by the first or last slice are neither eroded nor
   plugged to the border. A closing fills a nodule attached to the pleura when its radius is
   below ``closing_mm``, except a thin lens (1-2 mm) where it meets the chest wall, as an exact
   closing does. Larger radii take in larger nodules but start to bridge the mediastinum
   between the lungs. Then, per axial slice, every 2-D hole of the mask (vessels, airway walls,
   intrapulmonary nodules) is filled — ``scipy.ndimage.binary_fill_holes`` per slice — except
   holes larger than 50 cm² (the mediastinum, should the two lungs enclose it).
5. The result is a ``uint8`` 0/1 mask of the image's shape. A scan without lungs (or where no
   component passes the rules) gives an all-zero mask.

The measurements behind these thresholds are listed in the notes (``docs/ops-notes.md``).

:func:`lung_bbox` gives the voxel box of a mask enlarged by a margin in mm (``crop_to_lungs``).

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> z, y, x = np.ogrid[:40, :96, :96]
>>> vol = np.full((40, 96, 96), -1000, np.int16)
>>> vol[:, ((y[0] - 48) / 44.0) ** 2 + ((x[0] - 48) / 44.0) ** 2 < 1] = 40  # body
>>> for cx in (28, 68):                                                     # two lungs
...     vol[((z - 20) / 18.0) ** 2 + ((y - 48) / 26.0) ** 2 + ((x - cx) / 14.0) ** 2 < 1] = -850
>>> mask = segment_lungs(vol, Geometry((5.0, 2.0, 2.0)))
>>> mask.dtype, bool(mask[20, 48, 28]), bool(mask[20, 48, 48]), bool(mask[20, 2, 2])
(dtype('uint8'), True, False, False)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow import memory
from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.kernels import lungs as _k
from ctflow.ops.closing import CLOSING_GRID_MM as CLOSING_GRID_MM  # still importable from here
from ctflow.ops.closing import coarse_closing, over_ranges
from ctflow.validation import as_bool, as_float, as_threads, check_geometry, check_volume

__all__ = ["lung_bbox", "segment_lungs"]

#: Voxels below this HU count as pure gas (bowel, stomach, outside air, trachea).
GAS_HU = -950.0
#: Largest fraction of pure-gas voxels of a lung component (normal lung: a few %).
MAX_GAS_FRACTION = 0.5
#: Components smaller than this (mL) are lungs only up to :data:`MAX_GAS_FRACTION_SMALL`.
SMALL_LUNG_ML = 200.0
#: Gas fraction allowed for small components (the partial-volume rim of a small gas pocket is
#: large relative to it).
MAX_GAS_FRACTION_SMALL = 0.25
#: Components at least this large (mL) are lungs up to :data:`MAX_GAS_FRACTION_LARGE`.
LARGE_LUNG_ML = 1000.0
#: Gas fraction allowed for very large components (severe emphysema).
MAX_GAS_FRACTION_LARGE = 0.7
#: Smallest fraction of a component's voxels inside the body's row extent.
MIN_INSIDE_FRACTION = 0.5
#: Candidates smaller than this fraction of the largest candidate are dropped.
MIN_RELATIVE_VOLUME = 0.01
#: Per-slice holes larger than this (mm²) are not filled.
MAX_HOLE_MM2 = 5000.0
#: In-plane border median HU above which the field of view is taken as cut through the body.
CROPPED_BORDER_HU = -900.0
#: Range of ``threshold`` (HU) :func:`segment_lungs` accepts (``segment`` checks it when written).
THRESHOLD_RANGE = (-900.0, -100.0)
#: Largest ``min_lung_ml`` (mL) accepted.
MAX_MIN_LUNG_ML = 1.0e6
#: Largest ``closing_mm`` (mm) accepted.
MAX_CLOSING_MM = 50.0


# -- validation -----------------------------------------------------------------------------------
def _check_image(image: Any, where: str) -> NDArray[Any]:
    """Return ``image`` as a C-contiguous, native-order, real HU volume (float16 -> float32).

    Raises :class:`~ctflow.errors.InvalidParameterError` (the contract of the lung functions)
    rather than :func:`~ctflow.validation.check_volume`'s InvalidScanError.
    """
    arr = np.asarray(image)
    if arr.dtype.kind not in "iuf":
        raise InvalidParameterError(
            f"{where}: image must hold real HU values (integer or float dtype); got {arr.dtype}"
        )
    try:
        check_volume(arr, where)
    except InvalidScanError as exc:
        raise InvalidParameterError(str(exc)) from None
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif not arr.dtype.isnative:  # e.g. big-endian data straight from a file
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


# -- segmentation ---------------------------------------------------------------------------------
def segment_lungs(
    image: ArrayLike,
    geometry: Geometry,
    *,
    threshold: float = -320.0,
    min_lung_ml: float = 15.0,
    fill_holes: bool = True,
    closing_mm: float = 5.0,
    n_threads: int = 1,
) -> NDArray[np.uint8]:
    """Segment both lungs of a CT volume (classical: threshold, components, closing, holes).

    See the module documentation for the algorithm and the rules that tell lungs from bowel
    gas, outside air and the table.

    Parameters
    ----------
    image : ndarray (z, y, x)
        HU volume, any real dtype (int16 and float32 are the usual ones); axis 0 is the slice
        axis. Not modified.
    geometry : Geometry
        Spacing (for volumes in mL and radii in mm) and direction (to know which way is
        superior) of ``image``.
    threshold : float, default -320
        Voxels with ``HU < threshold`` are air-like; must be in [-900, -100].
    min_lung_ml : float, default 15
        Smallest volume of a lung component, mL; must be in [0, 1e6].
    fill_holes : bool, default True
        Fill 2-D holes per axial slice (vessels, nodules inside the lung); holes above 50 cm²
        stay open.
    closing_mm : float, default 5
        Radius of the 3-D closing ball, mm (0 disables the closing); must be in [0, 50].
    n_threads : int, default 1
        Threads to split the work over (the kernels release the GIL).

    Returns
    -------
    ndarray of uint8, shape of ``image``
        1 inside the lungs, 0 elsewhere; all zeros when no lungs are found.

    Raises
    ------
    InvalidParameterError
        ``image`` is not a non-empty 3-D real array, ``geometry`` is not a Geometry, or a
        parameter is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> vol = np.full((20, 64, 64), -1000, np.int16)   # air only: no body, no lungs
    >>> int(segment_lungs(vol, Geometry((2.0, 1.0, 1.0))).sum())
    0
    """
    where = "segment_lungs"
    img = _check_image(image, where)
    geom = check_geometry(geometry, where)
    lo, hi = THRESHOLD_RANGE
    thr = as_float(threshold, "threshold", where, lo=lo, hi=hi, unit="HU")
    min_ml = as_float(min_lung_ml, "min_lung_ml", where, lo=0.0, hi=MAX_MIN_LUNG_ML, unit="mL")
    closing = as_float(closing_mm, "closing_mm", where, lo=0.0, hi=MAX_CLOSING_MM, unit="mm")
    holes = as_bool(fill_holes, "fill_holes", where)
    n_thr = as_threads(n_threads, where)

    return _segment(img, geom, thr, min_ml, holes, closing, n_thr)


def _segment(
    img: NDArray[Any],
    geom: Geometry,
    thr: float,
    min_ml: float,
    fill_holes: bool,
    closing_mm: float,
    n_threads: int,
) -> NDArray[np.uint8]:
    """Segment validated inputs (steps 1-5 of the module documentation)."""
    nz, ny, nx = img.shape

    def over_z(fn: Callable[[int, int], Any], z0: int = 0, z1: int = nz) -> list[tuple[int, int]]:
        return over_ranges(fn, z0, z1, n_threads)

    lo_t = img.dtype.type(thr) if img.dtype.kind == "f" else thr  # compare in the image's type
    gas_t = img.dtype.type(GAS_HU) if img.dtype.kind == "f" else GAS_HU
    if img.dtype.kind in "iu":
        info = np.iinfo(img.dtype)
        lo_t = int(np.clip(math.ceil(thr), info.min, info.max))  # x < thr  <=>  x < ceil(thr)
        gas_t = int(np.clip(math.ceil(GAS_HU), info.min, info.max))

    # 1. runs of air-like voxels
    counts = np.empty(nz * ny, np.int64)
    over_z(lambda a, b: _k.runs_count(img, lo_t, a, b, counts))
    row_ptr = np.zeros(nz * ny + 1, np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    n_runs = int(row_ptr[-1])
    mask = memory.empty(img.shape, np.uint8)  # lungs touch most pages: reuse mapped ones
    over_z(lambda a, b: mask[a:b].fill(0))
    if n_runs == 0:
        return mask
    starts = np.empty(n_runs, np.int32)
    ends = np.empty(n_runs, np.int32)
    n_gas = np.empty(n_runs, np.int32)
    over_z(lambda a, b: _k.runs_fill(img, lo_t, gas_t, a, b, row_ptr, starts, ends, n_gas))

    # 2. outside air per slice, body extent per row, 3. components in 3-D
    parent = np.empty(n_runs, np.int32)
    outside = np.empty(n_runs, np.uint8)
    over_z(lambda a, b: _k.union_slices(row_ptr, starts, ends, ny, nx, a, b, parent, outside))
    cropped = _is_cropped(img)
    if cropped:  # no air around the body: nothing is "outside", there is no whole body either
        outside[:] = 0
    zr = over_z(lambda a, b: _k.union_z(row_ptr, starts, ends, ny, a + 1, b, parent, outside))
    for a, _ in zr[1:]:  # the slices where two ranges meet
        _k.union_z(row_ptr, starts, ends, ny, a, a + 1, parent, outside)
    lo = np.zeros(nz * ny, np.int32)  # cropped: every run counts as inside the body
    hi = np.full(nz * ny, nx, np.int32)
    if not cropped:
        per_slice = row_ptr[ny::ny] - row_ptr[:-1:ny]
        max_tissue = int(per_slice.max()) + ny
        over_z(lambda a, b: _k.body_span(row_ptr, starts, ends, ny, nx, a, b, max_tissue, lo, hi))
    labels = np.empty(n_runs, np.int32)
    n_labels = int(_k.label_runs(parent, labels))
    up = geom.direction[0] * geom.spacing  # mm of superior axis per voxel step along z, y, x
    vol, gas, inside, hmin, hmax, box = _k.run_stats(
        row_ptr, starts, ends, n_gas, labels, ny, lo, hi,
        float(up[0]), float(up[1]), float(up[2]), n_labels,
    )  # fmt: skip
    is_outside = np.zeros(n_labels, bool)
    is_outside[labels[outside != 0]] = True
    keep = _select(vol, gas, inside, hmin, hmax, is_outside, geom, min_ml)
    if not keep.any():
        return mask

    # paint the kept components
    keep_u8 = keep.astype(np.uint8)
    over_z(lambda a, b: _k.paint_runs(mask, row_ptr, starts, ends, labels, keep_u8, a, b))
    kb = box[keep]
    lo_box = kb[:, 0::2].min(axis=0)  # (z, y, x) first voxel of the kept components
    hi_box = kb[:, 1::2].max(axis=0)  # one past the last

    # 4. closing on a coarse grid, then per-slice hole filling
    if closing_mm > 0:
        f = coarse_closing(
            mask,
            row_ptr,
            starts,
            ends,
            labels,
            keep_u8,
            lo_box,
            hi_box,
            geom,
            closing_mm,
            n_threads,
        )
        # the closed set stays within the kept components' box, up to one block
        lo_box = lo_box - f - 1
        hi_box = hi_box + f + 1
    if fill_holes:
        z0, y0, x0 = (max(int(v), 0) for v in lo_box)
        z1, y1, x1 = (min(int(v), n) for v, n in zip(hi_box, img.shape))
        max_area = int(MAX_HOLE_MM2 / (geom.spacing[1] * geom.spacing[2]))
        over_z(lambda a, b: _k.fill_holes_slices(mask, a, b, y0, y1, x0, x1, max_area), z0, z1)
    return mask


def _is_cropped(img: NDArray[Any]) -> bool:
    """Tell whether the in-plane border is mostly not gas: the field of view cuts the body.

    That is: the median of the (finite) border voxels is above :data:`CROPPED_BORDER_HU`,
    decided by counting the voxels above it (no sort of the border; the median itself is
    computed only when exactly half are above).
    """
    views = (img[:, 0, :], img[:, -1, :], img[:, :, 0], img[:, :, -1])
    # integers: x > t  <=>  x > floor(t), compared in the image's own type
    is_float = img.dtype.kind == "f"
    t = img.dtype.type(CROPPED_BORDER_HU) if is_float else math.floor(CROPPED_BORDER_HU)
    above = sum(int(np.count_nonzero(v > t)) for v in views)  # NaN is never above
    finite = sum(int(np.count_nonzero(np.isfinite(v))) if is_float else v.size for v in views)
    if finite == 0:
        return False
    if 2 * above != finite:
        return 2 * above > finite
    border = np.concatenate(views, axis=None).astype(np.float32)
    border = border[np.isfinite(border)]
    return bool(np.median(border) > CROPPED_BORDER_HU)


def _select(
    vol: NDArray[np.int64],
    gas: NDArray[np.int64],
    inside: NDArray[np.int64],
    hmin: NDArray[np.float64],
    hmax: NDArray[np.float64],
    is_outside: NDArray[np.bool_],
    geom: Geometry,
    min_ml: float,
) -> NDArray[np.bool_]:
    """Which components are lungs (the rules of the module documentation)."""
    vol_ml = vol * (float(np.prod(geom.spacing)) / 1000.0)
    denom = np.maximum(vol, 1)
    gas_frac = gas / denom
    inside_frac = inside / denom
    limit = np.where(
        vol_ml < SMALL_LUNG_ML,
        MAX_GAS_FRACTION_SMALL,
        np.where(vol_ml >= LARGE_LUNG_ML, MAX_GAS_FRACTION_LARGE, MAX_GAS_FRACTION),
    )
    dense_ok = gas_frac <= limit
    cand = (
        ~is_outside
        & (vol_ml >= max(min_ml, 1e-9))
        & (inside_frac >= MIN_INSIDE_FRACTION)
        & dense_ok
    )
    if not cand.any():
        return cand
    largest = int(np.argmax(np.where(cand, vol, -1)))
    cand &= vol >= MIN_RELATIVE_VOLUME * vol[largest]
    cand &= hmax >= hmin[largest]
    return cand


# -- bounding box ---------------------------------------------------------------------------------
def lung_bbox(
    mask: ArrayLike, geometry: Geometry, margin_mm: float | Sequence[float]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Voxel box of the nonzero voxels of ``mask``, enlarged by ``margin_mm`` per side.

    Parameters
    ----------
    mask : ndarray (z, y, x)
        Lung mask (any dtype; nonzero = inside).
    geometry : Geometry
        Geometry of ``mask`` (its spacing turns the margin into voxels).
    margin_mm : float or 3 floats (z, y, x)
        Margin added on each side, mm (>= 0); rounded up to whole voxels per axis.

    Returns
    -------
    start, shape : ndarray of 3 int64
        The box ``mask[start[0]:start[0] + shape[0], ...]``, clipped to the volume. An empty
        mask gives the whole volume (``start = (0, 0, 0)``, ``shape = mask.shape``), so cropping
        with it is a no-op.

    Raises
    ------
    InvalidParameterError
        ``mask`` is not a non-empty 3-D array, ``geometry`` is not a Geometry, or the margin
        is negative / not finite.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> m = np.zeros((10, 20, 20), np.uint8)
    >>> m[4:6, 5:10, 8:12] = 1
    >>> start, shape = lung_bbox(m, Geometry((2.0, 1.0, 1.0)), 3.0)
    >>> start.tolist(), shape.tolist()
    ([2, 2, 5], [6, 11, 10])
    """
    where = "lung_bbox"
    arr = np.asarray(mask)
    if arr.ndim != 3 or arr.size == 0:
        raise InvalidParameterError(
            f"{where}: mask must be a non-empty 3-D (z, y, x) array; got shape {arr.shape}"
        )
    geom = check_geometry(geometry, where)
    try:
        m = np.broadcast_to(np.asarray(margin_mm, dtype=np.float64), (3,))
    except (TypeError, ValueError):
        m = np.full(3, np.nan)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise InvalidParameterError(
            f"{where}: margin_mm must be a finite number >= 0 (or 3 of them, z y x) in mm; "
            f"got {margin_mm!r}"
        )
    if arr.dtype != np.uint8:
        arr = arr != 0
    arr = np.ascontiguousarray(arr).view(np.uint8)
    shape = np.asarray(arr.shape, np.int64)
    b = _k.mask_bbox(arr, 0, arr.shape[0])
    if b[0] > b[1]:
        return np.zeros(3, np.int64), shape
    pad = np.ceil(m / geom.spacing - 1e-9).astype(np.int64)
    start = np.maximum(b[0::2] - pad, 0)
    stop = np.minimum(b[1::2] + pad, shape)
    return start, stop - start
