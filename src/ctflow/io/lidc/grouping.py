"""Group a scan's annotations into nodules (pylidc's rule) and place them in world mm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.geometry import Geometry
from ctflow.io.annotations import NODULE_COLUMNS
from ctflow.io.lidc.database import _Annotation

_MAX_GROUP = 4  # at most four radiologists read each LIDC scan
_FACTOR, _MIN_TOL = 0.9, 0.1


def _min_distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Return the smallest distance between two point sets."""
    if len(a) * len(b) > 2_000:
        from scipy.spatial import cKDTree

        near, _ = cKDTree(b).query(a, k=1)
        return float(near.min())
    sq = np.zeros((len(a), len(b)))
    for axis in range(a.shape[1]):
        d = a[:, axis, None] - b[None, :, axis]
        sq += d * d
    return float(np.sqrt(sq.min()))


def _cluster(anns: Sequence[_Annotation], tol: float) -> list[list[int]]:
    """Group ``anns`` into nodules by pylidc's ``cluster_annotations`` rule; return indices."""
    from scipy.sparse.csgraph import connected_components

    n = len(anns)
    if n == 0:
        return []
    pts = [a.points.astype(np.float64) for a in anns]
    lo = np.array([p.min(axis=0) for p in pts])
    hi = np.array([p.max(axis=0) for p in pts])
    # smallest distance between contour points; only values <= tol matter (tol only shrinks)
    dist = np.full((n, n), np.inf)
    np.fill_diagonal(dist, 0.0)
    gap = np.maximum(0.0, np.maximum(lo[:, None] - hi[None], lo[None] - hi[:, None]))
    near_boxes = np.sqrt((gap * gap).sum(axis=-1)) <= tol  # farther boxes can never link
    for i, j in zip(*np.nonzero(np.triu(near_boxes, k=1)), strict=True):
        # only points within tol of the other annotation's box can be within tol of it
        a = pts[i][np.all((pts[i] >= lo[j] - tol) & (pts[i] <= hi[j] + tol), axis=1)]
        b = pts[j][np.all((pts[j] >= lo[i] - tol) & (pts[j] <= hi[i] + tol), axis=1)]
        if len(a) and len(b):
            dist[i, j] = dist[j, i] = _min_distance(a, b)
    while True:
        _, labels = connected_components(dist <= tol, directed=False)
        counts = np.bincount(labels)
        if counts.max() <= _MAX_GROUP:
            break
        tol *= _FACTOR
        if tol < _MIN_TOL:
            break
    groups: list[list[int]] = [[] for _ in range(int(labels.max()) + 1)]
    for idx, label in enumerate(labels):
        groups[int(label)].append(idx)
    mean_k = [np.mean([anns[i].points[:, 2].mean() for i in g]) for g in groups]
    order = sorted(range(len(groups)), key=lambda g: mean_k[g])  # stable, as pylidc's sorted()
    return [groups[g] for g in order]


# ---------------------------------------------------------------------------------- world
def _xy_mapper(
    item_id: str, scan_id: int, spacing: float, origins: Mapping[Any, Any] | None
) -> tuple[Any, str]:
    """Return a function (row, col) -> (y, x) world mm, and the name of the frame it gives."""
    origin = None
    if origins is not None:
        origin = origins.get(item_id, origins.get(scan_id))
    if origin is None:
        return (lambda r, c: (r * spacing, c * spacing)), "pixel (0, 0)"
    if isinstance(origin, Geometry):
        g = origin

        def mapper(r: Any, c: Any) -> tuple[Any, Any]:
            idx = np.stack([np.zeros_like(r), r, c], axis=-1)
            w = g.voxel_to_world(idx)
            return w[..., 1], w[..., 2]

        return mapper, "LPS"
    oy, ox = (float(v) for v in np.asarray(origin, dtype=np.float64).ravel()[-2:])
    return (lambda r, c: (oy + r * spacing, ox + c * spacing)), "LPS"


def _annotation_rows(
    scans: pd.DataFrame,
    anns: dict[int, list[_Annotation]],
    origins: Mapping[Any, Any] | None,
) -> pd.DataFrame:
    """Build the per-annotation table of :func:`~ctflow.io.lidc.read_lidc_annotations`."""
    rows: list[dict[str, Any]] = []
    scan_rows: list[dict[str, Any]] = scans.to_dict("records")  # type: ignore[assignment]
    for scan in scan_rows:
        scan_id = int(scan["scan_id"])
        items = anns.get(scan_id, [])
        groups = _cluster(items, float(scan["slice_thickness"]))
        mapper, frame = _xy_mapper(
            str(scan["item_id"]), scan_id, float(scan["pixel_spacing"]), origins
        )
        for nodule, members in enumerate(groups):
            for idx in members:
                a = items[idx]
                row, col, k = a.points.mean(axis=0)
                y, x = mapper(np.float64(row), np.float64(col))
                rows.append(
                    {
                        "id": str(scan["item_id"]),
                        "z": float(a.z_mm.mean()),
                        "y": float(y),
                        "x": float(x),
                        "diameter": a.diameter,
                        "annotation_id": a.id,
                        "nodule": nodule,
                        "scan_id": scan_id,
                        "patient_id": scan.get("patient_id", ""),
                        "row": float(row),
                        "col": float(col),
                        "k": float(k),
                        "n_contours": a.n_contours,
                        "slice_thickness": float(scan["slice_thickness"]),
                        "pixel_spacing": float(scan["pixel_spacing"]),
                        "xy_frame": frame,
                        **a.ratings,
                    }
                )
    columns = [
        *NODULE_COLUMNS,
        "annotation_id",
        "nodule",
        "scan_id",
        "patient_id",
        "row",
        "col",
        "k",
        "n_contours",
        "slice_thickness",
        "pixel_spacing",
        "xy_frame",
    ]
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
        for c in ("z", "y", "x", "diameter", "row", "col", "k"):
            table[c] = table[c].astype(np.float64)
    table["id"] = table["id"].astype(str)
    return table
