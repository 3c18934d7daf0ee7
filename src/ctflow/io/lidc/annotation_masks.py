"""Each radiologist annotation of an LIDC scan as voxels of the scan's native grid.

:class:`AnnotationMask` holds one annotation's box of contour points and its voxels there;
:func:`lidc_annotation_masks` makes them for every annotation of a scan, from the database
alone (on the grid of :func:`~ctflow.io.lidc.lidc_grid`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.io.lidc.contours import _read_scan, _Scan
from ctflow.io.lidc.grid import _db_grid, _slice_finder
from ctflow.io.lidc.polygons import _annotation_box
from ctflow.validation import as_choice

__all__ = ["EDGES", "AnnotationMask", "lidc_annotation_masks"]

#: Whether the pixels an outline passes through are nodule: ``"exclude"`` (pylidc) or not.
EDGES = ("exclude", "include")


@dataclass(frozen=True)
class AnnotationMask:
    """One radiologist's annotation as voxels of the scan's native grid (:func:`lidc_grid`).

    Attributes
    ----------
    annotation_id : int
        The annotation's id in the database.
    nodule : int
        Its nodule group in the scan (0-based, as ``read_lidc_annotations``' ``nodule``).
    start : tuple of 3 ints
        Native voxel ``(k, row, col)`` of ``mask[0, 0, 0]``: the first corner of the box of the
        contour points (pylidc's ``Annotation.bbox()``, whose ``stop`` is ``start + shape``).
    mask : ndarray of bool, (Z, Y, X)
        The annotation's voxels in that box.
    spacing : tuple of 3 floats
        The native grid's spacing (slice step, pixel spacing, pixel spacing), mm.
    """

    annotation_id: int
    nodule: int
    start: tuple[int, int, int]
    mask: NDArray[np.bool_] = field(repr=False)
    spacing: tuple[float, float, float]

    @property
    def bbox(self) -> tuple[slice, slice, slice]:
        """The box as slices of the native grid: ``native_volume[m.bbox][m.mask]``."""
        return tuple(  # type: ignore[return-value]
            slice(s, s + n) for s, n in zip(self.start, self.mask.shape, strict=True)
        )

    @property
    def n_voxels(self) -> int:
        """How many voxels the annotation covers."""
        return int(np.count_nonzero(self.mask))

    @property
    def volume(self) -> float:
        """Voxel count times voxel volume, mm^3."""
        return self.n_voxels * float(np.prod(self.spacing))


def _annotation_masks(
    scan: _Scan, slice_of: Any, edges: str, spacing: tuple[float, float, float]
) -> list[AnnotationMask]:
    """Every annotation of the scan (with contours) on the native slices ``slice_of(z)``."""
    out = []
    rows: list[dict[str, Any]] = scan.table.to_dict("records")  # type: ignore[assignment]
    for row in rows:
        contours = scan.contours.get(int(row["annotation_id"]), [])
        if not contours:
            continue
        ks = [slice_of(c.z) for c in contours]
        start, mask = _annotation_box(contours, ks, edges)
        out.append(
            AnnotationMask(int(row["annotation_id"]), int(row["nodule"]), start, mask, spacing)
        )
    return out


def lidc_annotation_masks(
    db: str | os.PathLike[str],
    scan: Any,
    *,
    id_column: str = "series_instance_uid",
    edges: str = "exclude",
) -> list[AnnotationMask]:
    """Rasterise every radiologist annotation of a scan on its native grid (:func:`lidc_grid`).

    Parameters
    ----------
    db : path
        ``pylidc.sqlite``.
    scan : str or int
        The scan: its ``id_column`` value (a series instance UID by default) or its row id.
    id_column : str, default "series_instance_uid"
        One of :data:`~ctflow.io.lidc.ID_COLUMNS`.
    edges : {"exclude", "include"}, default "exclude"
        Whether the pixels an outline passes through are nodule (see :mod:`ctflow.io.lidc.masks`;
        ``"exclude"`` is pylidc's ``Annotation.boolean_mask()``).

    Returns
    -------
    list of AnnotationMask
        One per annotation, in the order of :func:`~ctflow.io.lidc.read_lidc_annotations` (by
        nodule, then annotation id): its box of contour points on the grid of :func:`lidc_grid`
        and its voxels there.

    Raises
    ------
    CorruptFileError
        Not a pylidc database, unreadable contours, a scan without z-values.
    InvalidParameterError
        Unknown scan, ``id_column`` or ``edges``.

    Examples
    --------
    A 5 x 5 outline with a 3 x 3 hole outline inside it, in a one-slice scan:

    >>> import sqlite3, tempfile
    >>> db = f"{tempfile.mkdtemp()}/tiny.sqlite"
    >>> with sqlite3.connect(db) as con:
    ...     _ = con.executescript(
    ...         "CREATE TABLE scans (id, series_instance_uid, slice_thickness, pixel_spacing);"
    ...         "CREATE TABLE annotations (id, scan_id); CREATE TABLE zvals (id, scan_id, val);"
    ...         "CREATE TABLE contours (id, annotation_id, inclusion, image_z_position, coords);"
    ...         "INSERT INTO scans VALUES (1, 'se1', 1.0, 1.0); INSERT INTO zvals VALUES (1, 1, 0);"
    ...         "INSERT INTO annotations VALUES (7, 1);"
    ...     )
    ...     outer = chr(10).join(["0,0", "6,0", "6,6", "0,6"])
    ...     hole = chr(10).join(["2,2", "4,2", "4,4", "2,4"])
    ...     _ = con.execute("INSERT INTO contours VALUES (1, 7, 1, 0.0, ?)", (outer,))
    ...     _ = con.execute("INSERT INTO contours VALUES (2, 7, 0, 0.0, ?)", (hole,))
    >>> m = lidc_annotation_masks(db, "se1")[0]
    >>> m.annotation_id, m.start, m.n_voxels       # 5 x 5 inside, minus the 3 x 3 hole
    (7, (0, 0, 0), 16)
    >>> lidc_annotation_masks(db, "se1", edges="include")[0].n_voxels  # 7 x 7 minus 1 x 1
    48
    """
    where = "lidc_annotation_masks"
    as_choice(edges, EDGES, "edges", where)
    info = _read_scan(db, scan, id_column, where)
    geometry, _ = _db_grid(info, (0.0, 0.0))
    slice_of = _slice_finder(geometry, info, where)
    spacing = (float(geometry.spacing[0]), info.pixel_spacing, info.pixel_spacing)
    return _annotation_masks(info, slice_of, edges, spacing)
