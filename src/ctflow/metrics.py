"""Scores of a prediction against a reference: overlap per label, surface distance in mm, FROC.

* :func:`dice` — per-label Dice coefficient of two label volumes.
* :func:`hausdorff95` — per-label 95th-percentile symmetric surface distance, in millimetres
  (the voxel spacing is taken into account, so anisotropic grids score right).
* :func:`froc` — the LUNA16 detection score: sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false
  positives per scan, and the CPM (their mean).

Conventions: label 0 is background and is not scored unless asked; a label absent from both
volumes scores ``nan`` (nothing to find, nothing found — left out of means by ``np.nanmean``);
a label present in only one of them scores Dice 0 and distance ``inf``.

Examples
--------
>>> import numpy as np
>>> ref = np.zeros((4, 4, 4), np.uint8); ref[1:3, 1:3, 1:3] = 1
>>> pred = ref.copy(); pred[1, 1, 1] = 0
>>> round(dice(pred, ref)[1], 4)
0.9333
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.validation import as_spacing

__all__ = ["FROC_RATES", "FrocResult", "dice", "froc", "hausdorff95"]

#: False positives per scan at which LUNA16 reads the sensitivity (CPM = their mean).
FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _pair(pred: ArrayLike, ref: ArrayLike, where: str) -> tuple[NDArray[Any], NDArray[Any]]:
    p, r = np.asarray(pred), np.asarray(ref)
    if p.shape != r.shape:
        raise InvalidParameterError(
            f"{where}: pred and ref must have the same shape; got {p.shape} and {r.shape}"
        )
    for name, arr in (("pred", p), ("ref", r)):
        if arr.dtype.kind not in "biu":
            raise InvalidParameterError(
                f"{where}: {name} must hold integer labels (threshold probabilities first, "
                f"e.g. binarize_mask or argmax); got dtype {arr.dtype}"
            )
    return p, r


def _labels(
    p: NDArray[Any], r: NDArray[Any], labels: Iterable[int] | None, background: bool
) -> list[int]:
    if labels is not None:
        return [int(v) for v in labels]
    found = np.union1d(np.unique(p), np.unique(r))
    return [int(v) for v in found if background or v != 0]


def dice(
    pred: ArrayLike,
    ref: ArrayLike,
    labels: Iterable[int] | None = None,
    *,
    background: bool = False,
) -> dict[int, float]:
    """Return the Dice coefficient of every label: ``2 |P ∩ R| / (|P| + |R|)``.

    Parameters
    ----------
    pred, ref : array_like of int
        Label volumes of the same shape (a binary mask is labels {0, 1}).
    labels : iterable of int, optional
        Labels to score (default: every label found in either, except 0).
    background : bool, default False
        Score label 0 too when ``labels`` is not given.

    Returns
    -------
    dict of int to float
        Dice per label; ``nan`` for a label absent from both.

    Examples
    --------
    >>> a = np.array([0, 1, 1, 2, 2, 2]); b = np.array([0, 1, 2, 2, 2, 5])
    >>> {k: round(v, 3) for k, v in dice(a, b).items()}
    {1: 0.667, 2: 0.667, 5: 0.0}
    """
    p, r = _pair(pred, ref, "dice")
    out: dict[int, float] = {}
    for label in _labels(p, r, labels, background):
        pm, rm = p == label, r == label
        total = int(pm.sum()) + int(rm.sum())
        out[label] = float("nan") if total == 0 else 2.0 * int((pm & rm).sum()) / total
    return out


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Voxels of ``mask`` with a 6-neighbour outside it (the volume's border counts as outside)."""
    from scipy import ndimage as ndi

    structure = ndi.generate_binary_structure(3, 1)
    eroded: NDArray[np.bool_] = ndi.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def _directed(a_surface: NDArray[np.bool_], b_surface: NDArray[np.bool_], sp: Any) -> NDArray[Any]:
    """Distances (mm) from every surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    from scipy import ndimage as ndi

    dist = ndi.distance_transform_edt(~b_surface, sampling=sp)
    return np.asarray(dist)[a_surface]


def hausdorff95(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: ArrayLike = (1.0, 1.0, 1.0),
    labels: Iterable[int] | None = None,
    *,
    percentile: float = 95.0,
) -> dict[int, float]:
    """Return the 95th-percentile symmetric surface distance of every label, in mm.

    The surface of a label is its voxels with a face-neighbour outside it. For each label,
    the distances from every surface voxel of ``pred`` to the nearest surface voxel of ``ref``
    and back are computed with the voxel ``spacing`` (exact Euclidean distance transform);
    the score is the larger of the two directions' ``percentile``-th percentiles (100 gives
    the Hausdorff distance).

    Parameters
    ----------
    pred, ref : array_like of int, 3-D
        Label volumes of the same shape, (z, y, x).
    spacing : 3 floats, default (1, 1, 1)
        (z, y, x) voxel size in mm.
    labels : iterable of int, optional
        Labels to score (default: every label found in either, except 0).
    percentile : float, default 95

    Returns
    -------
    dict of int to float
        Millimetres per label; ``nan`` when absent from both, ``inf`` when absent from one.

    Examples
    --------
    >>> ref = np.zeros((1, 1, 10), np.uint8); ref[0, 0, 2:5] = 1
    >>> pred = np.zeros_like(ref); pred[0, 0, 4:7] = 1
    >>> hausdorff95(pred, ref, spacing=(1.0, 1.0, 0.5), percentile=100)
    {1: 1.0}
    """
    p, r = _pair(pred, ref, "hausdorff95")
    if p.ndim != 3:
        raise InvalidParameterError(f"hausdorff95: volumes must be 3-D (z, y, x); got {p.shape}")
    if not 0 <= float(percentile) <= 100:
        raise InvalidParameterError(
            f"hausdorff95: percentile must be in [0, 100]; got {percentile}"
        )
    sp = as_spacing(spacing, where="hausdorff95")
    out: dict[int, float] = {}
    for label in _labels(p, r, labels, background=False):
        pm, rm = p == label, r == label
        has_p, has_r = bool(pm.any()), bool(rm.any())
        if not has_p and not has_r:
            out[label] = float("nan")
            continue
        if not (has_p and has_r):
            out[label] = float("inf")
            continue
        ps, rs = _surface(pm), _surface(rm)
        d_pr, d_rp = _directed(ps, rs, sp), _directed(rs, ps, sp)
        out[label] = float(max(np.percentile(d_pr, percentile), np.percentile(d_rp, percentile)))
    return out


@dataclass
class FrocResult:
    """A FROC analysis: the curve, the sensitivities at the LUNA16 rates and the CPM.

    Attributes
    ----------
    fps_per_scan, sensitivity : ndarray
        The curve: for every probability threshold (highest first), the false positives per
        scan and the share of nodules found.
    rates : tuple of float
        False positives per scan at which the sensitivity is read (:data:`FROC_RATES`).
    sensitivities : ndarray
        The sensitivity at each rate (linear interpolation of the curve, as LUNA16 does).
    cpm : float
        Competition performance metric: the mean of ``sensitivities``.
    n_nodules, n_scans, n_false_positives : int
    """

    fps_per_scan: NDArray[np.float64]
    sensitivity: NDArray[np.float64]
    rates: tuple[float, ...]
    sensitivities: NDArray[np.float64]
    cpm: float
    n_nodules: int
    n_scans: int
    n_false_positives: int


def _table(value: Any, what: str, need: Sequence[str]) -> pd.DataFrame:
    from ctflow.io.annotations import read_annotations

    if isinstance(value, pd.DataFrame) and set(need) <= set(value.columns):
        return value
    try:
        return read_annotations(value)
    except Exception as exc:
        raise InvalidParameterError(
            f"froc: {what} must be a table with columns {list(need)} (ctflow's) or LUNA16's; {exc}"
        ) from None


def froc(
    candidates: pd.DataFrame,
    annotations: pd.DataFrame | str,
    scan_ids: Sequence[str],
    *,
    excluded: pd.DataFrame | str | None = None,
    rates: Sequence[float] = FROC_RATES,
    excluded_diameter: float = 10.0,
) -> FrocResult:
    """Return the LUNA16 FROC analysis of detection candidates.

    A candidate *hits* a nodule when its world position lies strictly closer than the nodule's
    radius (half its diameter) to the nodule's centre (a candidate exactly at the radius misses,
    as in LUNA16's evaluation script). Each nodule is found at most once: its score
    is the highest probability among the candidates that hit it. A candidate that hits no
    nodule but an ``excluded`` finding (LUNA16's irrelevant findings) is ignored; one that hits
    neither is a false positive. Over all thresholds, the curve is (false positives per scan,
    share of nodules found); the sensitivity at each rate is read from it by linear
    interpolation, and the CPM is their mean.

    Parameters
    ----------
    candidates : DataFrame
        ``id, z, y, x, probability`` (world mm), or LUNA16's ``seriesuid, coordX, coordY,
        coordZ, probability``.
    annotations : DataFrame or csv path
        The nodules (ctflow's ``id, z, y, x, diameter`` or LUNA16's columns).
    scan_ids : sequence of str
        Every scan evaluated (scans without candidates or nodules count).
    excluded : DataFrame or csv path, optional
        Findings to ignore (same columns as ``annotations``, like LUNA16's
        ``annotations_excluded.csv``).
    rates : sequence of float
        False positives per scan to read the sensitivity at.
    excluded_diameter : float, default 10
        Diameter (mm) of excluded findings recorded without one (a diameter of -1).

    Examples
    --------
    >>> import pandas as pd
    >>> nod = pd.DataFrame({"id": ["a", "b"], "z": [0.0, 0.0], "y": [0.0, 0.0],
    ...                     "x": [0.0, 0.0], "diameter": [10.0, 10.0]})
    >>> cand = pd.DataFrame({"id": ["a", "a", "b"], "z": [1.0, 50.0, 30.0], "y": 0.0,
    ...                      "x": 0.0, "probability": [0.9, 0.8, 0.7]})
    >>> res = froc(cand, nod, ["a", "b"])
    >>> res.n_nodules, res.n_false_positives, round(res.cpm, 3)
    (2, 2, 0.5)
    """
    if not scan_ids:
        raise InvalidParameterError("froc: scan_ids must name the scans evaluated")
    cand = candidates.copy()
    if "seriesuid" in cand.columns:
        cand = cand.rename(columns={"seriesuid": "id", "coordX": "x", "coordY": "y", "coordZ": "z"})
    missing = {"id", "z", "y", "x", "probability"} - set(cand.columns)
    if missing:
        raise InvalidParameterError(f"froc: candidates lack columns {sorted(missing)}")
    nodules = _table(annotations, "annotations", ("id", "z", "y", "x", "diameter"))
    ignored = (
        None
        if excluded is None
        else _table(excluded, "excluded", ("id", "z", "y", "x", "diameter"))
    )
    scans = [str(s) for s in scan_ids]
    nodules = nodules[nodules["id"].astype(str).isin(scans)].reset_index(drop=True)
    cand = cand[cand["id"].astype(str).isin(scans)].reset_index(drop=True)
    probs = cand["probability"].to_numpy(np.float64)
    cand_xyz = cand[["z", "y", "x"]].to_numpy(np.float64)
    cand_ids = cand["id"].astype(str).to_numpy()
    best = np.full(len(nodules), -np.inf)  # each nodule's score: best hitting probability
    false_pos = np.ones(len(cand), dtype=bool)
    for table, is_nodule in ((nodules, True), (ignored, False)):
        if table is None or len(table) == 0:
            continue
        t_xyz = table[["z", "y", "x"]].to_numpy(np.float64)
        diameters = table["diameter"].to_numpy(np.float64)
        if not is_nodule:
            diameters = np.where(diameters > 0, diameters, float(excluded_diameter))
        radius = np.clip(diameters, 0.0, None) / 2.0
        t_ids = table["id"].astype(str).to_numpy()
        for k in range(len(table)):
            same = cand_ids == t_ids[k]
            d = cand_xyz - t_xyz[k]
            dist2 = d[:, 2] ** 2 + d[:, 1] ** 2 + d[:, 0] ** 2  # LUNA16: x, y, z squared
            hit = same & (dist2 < radius[k] ** 2)  # strictly inside, as LUNA16's script
            false_pos &= ~hit
            if is_nodule and hit.any():
                best[k] = max(best[k], float(probs[hit].max()))
    fp_probs = np.sort(probs[false_pos])[::-1]
    thresholds = np.unique(np.concatenate([probs, [np.inf]]))[::-1]
    n_scans, n_nod = len(scans), len(nodules)
    fps = np.array([np.sum(fp_probs >= t) for t in thresholds], np.float64) / n_scans
    sens = (
        np.array([np.sum(best >= t) for t in thresholds], np.float64) / n_nod
        if n_nod
        else np.zeros(len(thresholds))
    )
    rate_arr = np.asarray(rates, np.float64)
    at = np.interp(rate_arr, fps, sens)
    return FrocResult(
        fps_per_scan=fps,
        sensitivity=sens,
        rates=tuple(float(v) for v in rate_arr),
        sensitivities=at,
        cpm=float(at.mean()),
        n_nodules=n_nod,
        n_scans=n_scans,
        n_false_positives=int(false_pos.sum()),
    )
