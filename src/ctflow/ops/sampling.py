"""Training-crop sampling: where to cut nodule-centred and random crops, and how to cut them.

:func:`sample_crop_starts` plans a batch of crops over a list of scans (it only decides item
and start voxel of each crop); :func:`ctflow.ops.crop.extract_crop` (also importable from here)
copies one crop out of a volume, padding where it reaches outside. ``CTBatch.sample_nodules``
uses both.

Conventions
-----------
* All positions are **voxel indices** ``(z, y, x)`` of the item's scan. A crop of shape ``S``
  starting at ``start`` covers voxels ``start .. start + S - 1``; its centre is
  ``start + (S - 1) / 2``. Starts may be negative or reach past the end (the crop is padded).
* A nodule ``(c, r)`` (continuous centre and radii in voxels) occupies the **voxel box**
  ``lo = min(ceil(c - r), round(c))``, ``hi = max(floor(c + r), round(c))`` (inclusive, with a
  1e-6 voxel slack outwards; ``round(c) = floor(c + 0.5)``): every voxel whose centre lies
  within the radius along each axis, plus the voxel containing the centre -- the voxels
  :func:`ctflow.ops.masks.create_mask` can mark. Boxes are clipped to the scan; a nodule whose
  box lies wholly outside its scan is never sampled (a warning says so).
* **Nodule crops** (``round(batch_size * share)``, halves rounded up): a nodule is drawn
  uniformly with replacement; the crop is centred on it (nearest voxel), its centre jittered by
  a normal of the given ``variance`` (voxels², per axis) when given. The start is then clamped
  so that the crop contains the nodule's whole box (when the crop is at least as large as the
  box; otherwise the crop lies inside the box, with a warning), and then shifted inside the scan
  when the scan is at least as large as the crop (so no padding), or placed so that it covers
  the whole scan along that axis (padding on the sides) otherwise. Both clamps are compatible,
  so a nodule crop always contains its nodule.
* **Random crops** (the rest): the item is drawn uniformly among the items that have room for a
  crop not touching any nodule box, and the start uniformly among all such starts (exactly, by
  splitting the start space at the nodule boxes; no rejection). With ``histo`` the crop centre
  is drawn from the histogram instead (relative coordinate ``p`` in [0, 1] -> voxel
  ``p * n - 0.5``, i.e. 0 and 1 are the outer faces of the scan), the crop shifted inside the
  scan, and rejected when it touches a nodule box (up to ``max_tries`` draws per crop).
  A random crop never touches a nodule box. When that is impossible, fewer random crops are
  returned and :attr:`CropPlan.warnings` says why.
* Nodule crops come first in the plan, then random crops.
* Randomness comes only from the given ``numpy.random.Generator``: same seed, same plan.

Examples
--------
>>> import numpy as np
>>> plan = sample_crop_starts([(40, 64, 64)], np.array([[20.0, 30.0, 30.0]]), np.array([0]),
...                           np.array([[3.0, 3.0, 3.0]]), batch_size=2, crop_shape=(16, 32, 32),
...                           share=0.5, variance=None, rng=np.random.default_rng(0))
>>> plan.starts[0].tolist(), plan.is_nodule.tolist()
([13, 15, 15], [True, False])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.ops.crop import FreeStarts, extract_crop, nodule_voxel_boxes, start_range
from ctflow.validation import as_float, as_int, as_shape

__all__ = ["CropPlan", "check_histo", "extract_crop", "nodule_voxel_boxes", "sample_crop_starts"]


@dataclass
class CropPlan:
    """Where to cut each crop of a batch (see :func:`sample_crop_starts`).

    Attributes
    ----------
    items : ndarray (K,) int64
        Item (scan) index of each crop.
    starts : ndarray (K, 3) int64
        First voxel ``(z, y, x)`` of each crop in its scan; may be negative or reach past the
        end of the scan (the crop is then padded by :func:`extract_crop`).
    is_nodule : ndarray (K,) bool
        True for nodule-centred crops.
    nodule_index : ndarray (K,) int64
        Row of the nodule each crop is centred on (-1 for random crops).
    warnings : list of str
        Human-readable notes: fewer crops than asked, nodules never sampled, etc.
    """

    items: NDArray[np.int64]
    starts: NDArray[np.int64]
    is_nodule: NDArray[np.bool_]
    nodule_index: NDArray[np.int64]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        """Return the number of crops planned."""
        return int(self.items.shape[0])


# ---------------------------------------------------------------------------------- validation
def _shapes(shapes: Any, where: str) -> NDArray[np.int64]:
    """Check the scan shapes; return them as an (N, 3) int64 array."""
    if isinstance(shapes, np.ndarray) and shapes.ndim == 2:
        shapes = list(shapes)
    if not isinstance(shapes, Sequence) or isinstance(shapes, str) or len(shapes) == 0:
        raise InvalidParameterError(
            f"{where}: shapes must be a non-empty list of (Z, Y, X) scan shapes; got {shapes!r}"
        )
    return np.array(
        [as_shape(s, what=f"shapes[{i}]", where=where) for i, s in enumerate(shapes)],
        dtype=np.int64,
    ).reshape(-1, 3)


def _nodules(
    voxels: Any, items: Any, radii: Any, n_items: int, where: str
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
    """Check the nodule centres, items and radii; return them as float64 / int64 arrays."""
    try:
        c = np.asarray(voxels, dtype=np.float64)
        r = np.asarray(radii, dtype=np.float64)
        it = np.asarray(items)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"{where}: nodule_voxels, nodule_items and nodule_radii_vox must be numeric arrays"
        ) from None
    if c.size == 0 and r.size == 0 and it.size == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    if c.ndim != 2 or c.shape[1] != 3:
        raise InvalidParameterError(
            f"{where}: nodule_voxels must be an (M, 3) array of voxel (z, y, x); "
            f"got shape {c.shape}"
        )
    m = c.shape[0]
    if r.shape != (m, 3):
        raise InvalidParameterError(
            f"{where}: nodule_radii_vox must have shape ({m}, 3); got shape {r.shape}"
        )
    if it.shape != (m,):
        raise InvalidParameterError(
            f"{where}: nodule_items must have shape ({m},); got shape {it.shape}"
        )
    if not np.all(np.isfinite(c)):
        raise InvalidParameterError(f"{where}: nodule_voxels must be finite; got {c.tolist()}")
    if not np.all(np.isfinite(r) & (r >= 0)):
        raise InvalidParameterError(
            f"{where}: nodule_radii_vox must be finite and >= 0; got {r.tolist()}"
        )
    ok_dtype = np.issubdtype(it.dtype, np.integer) or (
        np.issubdtype(it.dtype, np.floating) and bool(np.all(it == np.round(it)))
    )
    if not ok_dtype or np.any(it < 0) or np.any(it >= n_items):
        raise InvalidParameterError(
            f"{where}: nodule_items must be integer item indices in [0, {n_items}); "
            f"got {it.tolist()}"
        )
    return c, it.astype(np.int64), r


def _variance(variance: Any, where: str) -> NDArray[np.float64] | None:
    """Check the jitter variance: None, or 3 finite floats >= 0 (a scalar is broadcast)."""
    if variance is None:
        return None
    try:
        v = np.broadcast_to(np.asarray(variance, dtype=np.float64), (3,)).copy()
    except (TypeError, ValueError):
        v = np.full(3, np.nan)
    if not np.all(np.isfinite(v) & (v >= 0)):
        raise InvalidParameterError(
            f"{where}: variance must be None or 3 finite floats >= 0 (voxels², z, y, x); "
            f"got {variance!r}"
        )
    return v


def check_histo(histo: Any, where: str) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
    """Check a ``numpy.histogramdd`` result ``(counts, edges)`` of relative crop centres.

    Parameters
    ----------
    histo : (counts, edges)
        ``counts`` a 3-D array of finite values >= 0 with a positive sum, ``edges`` 3
        increasing arrays of ``counts.shape[k] + 1`` values (relative positions, z y x).
    where : str
        Name of the caller, for the error message.

    Returns
    -------
    counts : ndarray, float64
    edges : list of 3 ndarray, float64

    Raises
    ------
    InvalidParameterError
        ``histo`` is not such a pair.

    Examples
    --------
    >>> counts, edges = np.histogramdd(np.random.default_rng(0).random((50, 3)), bins=2)
    >>> check_histo((counts, edges), "where")[0].shape
    (2, 2, 2)
    """
    msg = (
        f"{where}: histo must be (counts, edges) as numpy.histogramdd returns over relative "
        "(z, y, x) positions: counts a 3-D array of finite values >= 0 with a positive sum, "
        "edges 3 increasing arrays of len(counts.shape[k]) + 1"
    )
    try:
        counts_raw, edges_raw = histo
        counts = np.asarray(counts_raw, dtype=np.float64)
        edges = [np.asarray(e, dtype=np.float64) for e in edges_raw]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{msg}; got {type(histo).__name__}") from None
    if counts.ndim != 3 or len(edges) != 3:
        raise InvalidParameterError(
            f"{msg}; got counts of shape {counts.shape} and {len(edges)} edge arrays"
        )
    if not np.all(np.isfinite(counts) & (counts >= 0)) or counts.sum() <= 0:
        raise InvalidParameterError(f"{msg}; counts have negative/non-finite values or sum 0")
    for k, e in enumerate(edges):
        if e.shape != (counts.shape[k] + 1,) or not np.all(np.isfinite(e)):
            raise InvalidParameterError(f"{msg}; edges[{k}] has shape {e.shape}")
        if np.any(np.diff(e) <= 0):
            raise InvalidParameterError(f"{msg}; edges[{k}] is not increasing")
    return counts, edges


def _histo_start(
    shape: NDArray[np.int64],
    crop: NDArray[np.int64],
    counts: NDArray[np.float64],
    edges: list[NDArray[np.float64]],
    cum: NDArray[np.float64],
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """Draw a crop start whose centre follows the histogram ``(counts, edges)``, in the scan.

    A cell is drawn by weight (``cum`` = cumulative counts), the relative position uniformly
    within it; relative ``p`` in [0, 1] is voxel ``p * n - 0.5``.
    """
    cell = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    cell = min(cell, cum.size - 1)
    k = np.unravel_index(cell, counts.shape)
    u = rng.random(3)
    rel = np.array(
        [edges[ax][k[ax]] + u[ax] * (edges[ax][k[ax] + 1] - edges[ax][k[ax]]) for ax in range(3)]
    )
    centre = np.clip(rel, 0.0, 1.0) * shape - 0.5
    st = np.floor(centre - (crop - 1) / 2 + 0.5).astype(np.int64)
    r_lo, r_hi = start_range(shape, crop)
    return np.asarray(np.clip(st, r_lo, r_hi), dtype=np.int64)


# ---------------------------------------------------------------------------------- planning
def sample_crop_starts(
    shapes: Sequence[Sequence[int]],
    nodule_voxels: ArrayLike,
    nodule_items: ArrayLike,
    nodule_radii_vox: ArrayLike,
    *,
    batch_size: int,
    crop_shape: ArrayLike,
    share: float,
    variance: ArrayLike | None,
    rng: np.random.Generator,
    histo: Any = None,
    max_tries: int = 1000,
) -> CropPlan:
    """Plan a batch of training crops: ``share`` of them on nodules, the rest away from nodules.

    Parameters
    ----------
    shapes : list of (Z, Y, X)
        Shape of each item's scan.
    nodule_voxels : array_like (M, 3)
        Nodule centres in continuous voxel indices of their item's scan.
    nodule_items : array_like (M,) int
        Item index of each nodule.
    nodule_radii_vox : array_like (M, 3)
        Nodule radii in voxels along (z, y, x).
    batch_size : int
        Number of crops asked for (>= 1).
    crop_shape : 3 ints
        Crop shape (z, y, x) in voxels.
    share : float in [0, 1]
        Fraction of nodule crops: ``floor(batch_size * share + 0.5)`` of them.
    variance : 3 floats >= 0 or None
        Variance (voxels²) of the normal jitter of a nodule crop's centre, per axis; None = no
        jitter (the crop's centre is the voxel nearest to the nodule centre).
    rng : numpy.random.Generator
        The only source of randomness.
    histo : (counts, edges), optional
        ``numpy.histogramdd`` output over relative (z, y, x) positions in [0, 1] of the scan;
        random crop centres are drawn from it instead of uniformly.
    max_tries : int
        Draws per random crop with ``histo`` before giving that crop up.

    Returns
    -------
    CropPlan
        Nodule crops first, then random crops; possibly fewer than ``batch_size`` random crops
        (see ``warnings``). Semantics in the module docstring.

    Raises
    ------
    InvalidParameterError
        Any argument outside its contract.

    Examples
    --------
    >>> import numpy as np
    >>> plan = sample_crop_starts([(32, 48, 48), (30, 48, 48)], np.zeros((0, 3)), [],
    ...                           np.zeros((0, 3)), batch_size=3, crop_shape=(16, 16, 16),
    ...                           share=0.0, variance=None, rng=np.random.default_rng(1))
    >>> len(plan), bool(plan.is_nodule.any()), plan.warnings
    (3, False, [])
    """
    where = "sample_crop_starts"
    batch_size = as_int(batch_size, "batch_size", where, lo=1)
    max_tries = as_int(max_tries, "max_tries", where, lo=1)
    crop = np.array(as_shape(crop_shape, what="crop_shape", where=where), dtype=np.int64)
    share = as_float(share, "share", where, lo=0.0, hi=1.0)
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"{where}: rng must be a numpy.random.Generator; got {type(rng).__name__}"
        )
    shp = _shapes(shapes, where)
    centres, owners, radii = _nodules(
        nodule_voxels, nodule_items, nodule_radii_vox, len(shp), where
    )
    var = _variance(variance, where)
    hist = None if histo is None else check_histo(histo, where)
    warnings: list[str] = []

    # nodule boxes clipped to their scans
    lo, hi = nodule_voxel_boxes(centres, radii)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, shp[owners] - 1)
    in_scan = np.all(lo <= hi, axis=1)
    if not in_scan.all():
        outside = np.flatnonzero(~in_scan).tolist()
        warnings.append(
            f"{where}: nodules {outside} lie wholly outside their scans and are never sampled"
        )
    eligible = np.flatnonzero(in_scan)

    n_nodule = int(np.floor(batch_size * share + 0.5))
    if n_nodule > 0 and eligible.size == 0:
        warnings.append(
            f"{where}: share={share} asks for {n_nodule} nodule crops but there is no nodule "
            f"inside any scan; all {batch_size} crops are random"
        )
        n_nodule = 0

    # ---- nodule crops
    chosen = eligible[rng.integers(eligible.size, size=n_nodule)] if n_nodule else eligible[:0]
    if var is None:
        jitter = np.zeros((n_nodule, 3))
    else:
        jitter = rng.normal(0.0, np.sqrt(var), size=(n_nodule, 3))
    c_lo, c_hi = lo[chosen], hi[chosen]
    start = np.floor(centres[chosen] + jitter - (crop - 1) / 2 + 0.5).astype(np.int64)
    a = np.minimum(c_lo, c_hi - crop + 1)  # crop contains the box (or lies in it when smaller)
    b = np.maximum(c_lo, c_hi - crop + 1)
    start = np.clip(start, a, b)
    s_lo, s_hi = start_range(shp[owners[chosen]], crop)
    start = np.clip(start, s_lo, s_hi)
    too_big = np.flatnonzero(np.any(c_hi - c_lo + 1 > crop, axis=1))
    for j in sorted(set(chosen[too_big].tolist())):
        warnings.append(
            f"{where}: nodule {j} spans {(hi[j] - lo[j] + 1).tolist()} voxels, more than the "
            f"crop {crop.tolist()}; its crops show only part of it"
        )
    items = [owners[chosen]]
    starts = [start]

    # ---- random crops
    n_random = batch_size - n_nodule
    rand_items: list[int] = []
    rand_starts: list[NDArray[np.int64]] = []
    if n_random > 0:
        free = []
        for i in range(len(shp)):
            r_lo, r_hi = start_range(shp[i], crop)
            sel = owners == i
            free.append(FreeStarts(r_lo, r_hi, lo[sel], hi[sel], crop))
        roomy = np.array([i for i in range(len(shp)) if free[i].total > 0], dtype=np.int64)
        if roomy.size == 0:
            warnings.append(
                f"{where}: no scan has room for a {crop.tolist()} crop that touches no nodule; "
                f"returning {n_nodule} crops instead of {batch_size} (no random crops)"
            )
        elif hist is None:
            for _ in range(n_random):
                i = int(roomy[rng.integers(roomy.size)])
                rand_items.append(i)
                rand_starts.append(free[i].draw(rng))
        else:
            counts, edges = hist
            cum = np.cumsum(counts.ravel())
            failed = 0
            for _ in range(n_random):
                for _try in range(max_tries):
                    i = int(roomy[rng.integers(roomy.size)])
                    st = _histo_start(shp[i], crop, counts, edges, cum, rng)
                    sel = owners == i
                    touches = np.all((st <= hi[sel]) & (st + crop - 1 >= lo[sel]), axis=1)
                    if not touches.any():
                        rand_items.append(i)
                        rand_starts.append(st)
                        break
                else:
                    failed += 1
            if failed:
                warnings.append(
                    f"{where}: {failed} of {n_random} random crops drawn from histo touched a "
                    f"nodule in all {max_tries} tries; returning {batch_size - failed} crops "
                    f"instead of {batch_size}"
                )
        if roomy.size and roomy.size < len(shp):
            none = [i for i in range(len(shp)) if i not in set(roomy.tolist())]
            warnings.append(
                f"{where}: items {none} have no room for a random crop that touches no nodule; "
                "random crops come from the other items"
            )
    items.append(np.array(rand_items, dtype=np.int64))
    starts.append(np.array(rand_starts, dtype=np.int64).reshape(-1, 3))
    n_rand = len(rand_items)
    return CropPlan(
        items=np.concatenate(items).astype(np.int64),
        starts=np.concatenate(starts).astype(np.int64).reshape(-1, 3),
        is_nodule=np.concatenate([np.ones(n_nodule, dtype=bool), np.zeros(n_rand, dtype=bool)]),
        nodule_index=np.concatenate([chosen, np.full(n_rand, -1)]).astype(np.int64),
        warnings=warnings,
    )
