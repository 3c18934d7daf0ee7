"""DICOM RT Structure Sets (RTSTRUCT): rasterise ROI contours onto an image grid.

:func:`read_rtstruct` reads an RT Structure Set with pydicom and draws its ROIs on a given
grid (the scan's), one label per ROI; :func:`rasterize_contours` is the drawing on its own.

Rules
-----
ROIs
    Every item of the StructureSetROISequence is an ROI (ROINumber, ROIName); its contours
    come from the ROIContourSequence item that refers to its number. ``rois=None`` draws them
    all in the file's order; a sequence of names (exact, else case-insensitive) or ROI numbers
    picks some, in that order. The k-th ROI drawn gets label k (1, 2, ...); the returned
    ``segments`` give each ROI's number, name and label value. An ROI without any contour
    keeps its label and draws nothing (a warning says so).
Contours
    CLOSED_PLANAR (and CLOSED_PLANAR_XOR) contours are drawn; POINT, OPEN_PLANAR and
    OPEN_NONPLANAR contours enclose nothing and are left out (a warning counts them). Each
    contour is mapped to the grid by the world position of its points (ContourData, LPS mm):
    it belongs to the slice nearest to its points. A contour whose points are not in one
    slice plane of the grid (spread over more than 0.1 slice: oblique to the grid) is left
    out, and so is a contour on no slice of the grid; a contour more than a quarter slice from
    the nearest slice, or reaching outside the grid in-plane (clipped), is drawn. Each of these
    is a warning naming the ROI and how many contours.
Inside, per slice: the even-odd rule
    All contours of one ROI on one slice are taken together: a voxel centre is inside when a
    ray from it crosses the contours an odd number of times. A contour inside another is
    therefore a hole, a contour inside that hole an island again, and where two contours of
    one ROI overlap the overlap is outside (as CLOSED_PLANAR_XOR says). A voxel centre lying
    on a contour (within 0.001 voxel) is inside: a contour traced through the centres of a
    mask's boundary voxels draws that mask back exactly.
Overlapping ROIs
    As for SEG (:mod:`ctflow.io.dicom.seg`): ``overlap="error"`` refuses ROIs sharing a voxel
    (RT structure sets often hold a BODY / EXTERNAL contour around everything: pick the ROIs
    with ``rois=``, or choose), ``"first"`` / ``"last"`` keep the ROI drawn first / last,
    ``"channels"`` returns one binary channel per ROI.

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> square = np.array([[0.5, 0.5, 2.0], [2.5, 0.5, 2.0], [2.5, 2.5, 2.0], [0.5, 2.5, 2.0]])
>>> rasterize_contours([square], Geometry((1, 1, 1)), (3, 4, 4))[2].astype(int).tolist()
[[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.dicom.label_canvas import OVERLAP, _Canvas
from ctflow.io.dicom.label_objects import DicomLabels, Segment, _expect, _read_dataset
from ctflow.validation import as_choice, as_shape, check_geometry

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["rasterize_contours", "read_rtstruct"]

_CLOSED = ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")
_EDGE_TOL = 1e-3  # a voxel centre this close (in voxels) to a contour is on it: inside
_PLANE_TOL = 0.1  # a contour's points may spread this much (in slices) off one plane
_BETWEEN = 0.25  # a contour this far (in slices) from the nearest slice is reported


def _expand(
    first: NDArray[np.int64], counts: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Return (i, v) for every v in ``first[i] .. first[i] + counts[i] - 1``, all i."""
    which = np.repeat(np.arange(len(first)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return which, first[which] + offsets


def _spans(
    rows: NDArray[np.int64],
    start: NDArray[np.int64],
    stop: NDArray[np.int64],
    shape: tuple[int, int],
) -> NDArray[np.bool_]:
    """Return a (Y, X) mask with columns ``start .. stop - 1`` of each row set.

    ``start`` and ``stop`` are clipped to [0, X]. One running sum over the flattened rows
    (each row one column longer) paints every span: a row's +1 and -1 both fall in it.
    """
    n_x = shape[1]
    out = np.zeros(shape, bool)
    if rows.size == 0:
        return out
    top, bottom = int(rows.min()), int(rows.max()) + 1
    width = n_x + 1
    marks = np.zeros((bottom - top) * width, np.int32)
    base = (rows - top) * width
    np.add.at(marks, base + np.clip(start, 0, n_x), 1)
    np.add.at(marks, base + np.clip(stop, 0, n_x), -1)
    out[top:bottom] = np.cumsum(marks, dtype=np.int32).reshape(bottom - top, width)[:, :n_x] > 0
    return out


def _crossings(
    y0: NDArray[np.float64],
    x0: NDArray[np.float64],
    y1: NDArray[np.float64],
    x1: NDArray[np.float64],
    n_y: int,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Return (row, x) of every crossing of the edges with the rows y = 0 .. n_y - 1.

    An edge crosses row y when ``min(y0, y1) <= y < max(y0, y1)`` (half-open, so that a
    vertex on a row counts once and horizontal edges never), which gives every row an even
    number of crossings.
    """
    first = np.clip(np.ceil(np.minimum(y0, y1)), 0, n_y).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1)), 0, n_y).astype(np.int64)
    edge, rows = _expand(first, np.maximum(stop - first, 0))
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    return rows, x0[edge] + t * (x1[edge] - x0[edge])


def _on_edges(
    y0: NDArray[np.float64],
    x0: NDArray[np.float64],
    y1: NDArray[np.float64],
    x1: NDArray[np.float64],
    shape: tuple[int, int],
) -> NDArray[np.bool_]:
    """Return the voxel centres lying on an edge (within ``_EDGE_TOL`` voxel)."""
    n_y, n_x = shape
    flat = np.abs(y1 - y0) <= _EDGE_TOL
    # a slanted edge passes at most one voxel centre per row
    first = np.clip(np.ceil(np.minimum(y0, y1) - _EDGE_TOL), 0, n_y).astype(np.int64)
    stop = np.clip(np.floor(np.maximum(y0, y1) + _EDGE_TOL) + 1, 0, n_y).astype(np.int64)
    edge, rows = _expand(first, np.where(flat, 0, np.maximum(stop - first, 0)))
    t = np.clip((rows - y0[edge]) / (y1[edge] - y0[edge]), 0.0, 1.0)
    x = x0[edge] + t * (x1[edge] - x0[edge])
    y = y0[edge] + t * (y1[edge] - y0[edge])
    col = np.rint(x).astype(np.int64)
    hit = (np.abs(x - col) <= _EDGE_TOL) & (np.abs(y - rows) <= _EDGE_TOL)
    hit &= (col >= 0) & (col < n_x)
    out = np.zeros(shape, bool)
    out[rows[hit], col[hit]] = True
    # a horizontal edge on a row of centres covers a run of them
    row = np.rint(y0)
    on_row = flat & (np.abs(y0 - row) <= _EDGE_TOL) & (row >= 0) & (row < n_y)
    lo, hi = np.minimum(x0, x1)[on_row], np.maximum(x0, x1)[on_row]
    run_start = np.ceil(lo - _EDGE_TOL).astype(np.int64)
    run_stop = np.floor(hi + _EDGE_TOL).astype(np.int64) + 1
    return out | _spans(row[on_row].astype(np.int64), run_start, run_stop, shape)


def _fill_even_odd(
    polygons: Sequence[NDArray[np.float64]], shape: tuple[int, int]
) -> NDArray[np.bool_]:
    """Return the voxel centres inside ``polygons`` ((K, 2) y, x voxel coords) by even-odd."""
    if not polygons:
        return np.zeros(shape, bool)
    y0 = np.concatenate([p[:, 0] for p in polygons])
    x0 = np.concatenate([p[:, 1] for p in polygons])
    y1 = np.concatenate([np.roll(p[:, 0], -1) for p in polygons])
    x1 = np.concatenate([np.roll(p[:, 1], -1) for p in polygons])
    rows, xs = _crossings(y0, x0, y1, x1, shape[0])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # crossings pair up in each row: voxel centres x with c_2i <= x < c_2i+1 are inside
    start = np.ceil(xs[0::2]).astype(np.int64)
    stop = np.ceil(xs[1::2]).astype(np.int64)
    inside = _spans(rows[0::2], start, stop, shape)
    return inside | _on_edges(y0, x0, y1, x1, shape)


def _slice_of(points: NDArray[np.float64], n_z: int) -> tuple[int | None, NDArray[np.float64], str]:
    """Return (slice, (K, 2) y x, problem) of one contour's voxel coordinates (K, 3) z y x.

    The slice is None when the contour is drawn nowhere; ``problem`` names what to report.
    """
    z = points[:, 0]
    if np.ptp(z) > _PLANE_TOL:
        return None, points[:, 1:], "not in a slice plane of the grid (oblique)"
    k = int(np.rint(z.mean()))
    if not 0 <= k < n_z:
        return None, points[:, 1:], "on no slice of the grid"
    if abs(z.mean() - k) > _BETWEEN:
        return k, points[:, 1:], "between slices (drawn on the nearest)"
    return k, points[:, 1:], ""


def rasterize_contours(
    contours: Sequence[Any],
    geometry: Geometry,
    shape: Any,
    *,
    problems: Counter[str] | None = None,
) -> NDArray[np.bool_]:
    """Draw closed planar contours (world LPS mm) on a grid, by the even-odd rule per slice.

    Parameters
    ----------
    contours : sequence of (K, 3) arrays
        Each a closed polygon's points, world (x, y, z) LPS mm as DICOM's ContourData (the
        last point joins the first).
    geometry : Geometry
        The grid's geometry.
    shape : 3 ints
        The grid's (Z, Y, X).
    problems : collections.Counter, optional
        Counts the contours that were left out, clipped or between slices, by what happened
        (the rules of :mod:`ctflow.io.dicom.rtstruct`).

    Returns
    -------
    ndarray of bool (Z, Y, X)
        True inside.

    Examples
    --------
    A square through voxel centres (0..6) with a square hole (2..4): the centres on both
    contours are inside, the one centre inside the hole is not.

    >>> outer = np.array([[0, 0, 0], [6, 0, 0], [6, 6, 0], [0, 6, 0]], float)
    >>> mask = rasterize_contours([outer, outer / 3 + (2, 2, 0)], Geometry((1, 1, 1)), (1, 7, 7))
    >>> int(mask.sum()), bool(mask[0, 3, 3]), bool(mask[0, 2, 2])
    (48, False, True)
    """
    geometry = check_geometry(geometry, "rasterize_contours")
    n_z, n_y, n_x = as_shape(shape, where="rasterize_contours")
    problems = Counter() if problems is None else problems
    by_slice: dict[int, list[NDArray[np.float64]]] = {}
    for contour in contours:
        points = np.asarray(contour, np.float64).reshape(-1, 3)
        k, yx, problem = _slice_of(geometry.world_to_voxel(points[:, ::-1]), n_z)
        if problem:
            problems[problem] += 1
        if k is None or len(yx) < 3:
            continue
        if np.any((yx < -0.5) | (yx > np.array([n_y, n_x]) - 0.5)):
            problems["reaching outside the grid in-plane (clipped)"] += 1
        by_slice.setdefault(k, []).append(yx)
    out = np.zeros((n_z, n_y, n_x), bool)
    for k, polygons in by_slice.items():
        out[k] = _fill_even_odd(polygons, (n_y, n_x))
    return out


def _roi_table(p: Path, ds: Dataset) -> list[tuple[int, str, str]]:
    """Return (ROINumber, ROIName, ROIDescription) of every ROI, in the file's order."""
    out = []
    for item in ds.get("StructureSetROISequence", None) or []:
        try:
            number = int(item.ROINumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise CorruptFileError(
                f"read_rtstruct: {p}: a StructureSetROISequence item has no valid ROINumber"
            ) from exc
        out.append(
            (number, str(item.get("ROIName", "") or ""), str(item.get("ROIDescription", "") or ""))
        )
    if not out:
        raise CorruptFileError(f"read_rtstruct: {p}: the structure set has no ROI")
    return out


def _contours(p: Path, ds: Dataset) -> dict[int, list[tuple[str, NDArray[np.float64]]]]:
    """Return each ROI number's contours as (ContourGeometricType, (K, 3) x y z points)."""
    out: dict[int, list[tuple[str, NDArray[np.float64]]]] = {}
    for item in ds.get("ROIContourSequence", None) or []:
        number = int(item.get("ReferencedROINumber", -1))
        for contour in item.get("ContourSequence", None) or []:
            kind = str(contour.get("ContourGeometricType", "") or "").strip().upper()
            try:
                points = np.array([float(v) for v in contour.ContourData], np.float64)
            except (AttributeError, TypeError, ValueError) as exc:
                raise CorruptFileError(
                    f"read_rtstruct: {p}: ROI {number}: a contour without valid ContourData"
                ) from exc
            if points.size % 3 or not np.all(np.isfinite(points)):
                raise CorruptFileError(
                    f"read_rtstruct: {p}: ROI {number}: ContourData must be finite (x, y, z) "
                    f"triplets; got {points.size} numbers"
                )
            out.setdefault(number, []).append((kind, points.reshape(-1, 3)))
    return out


def _interpreted_types(ds: Dataset) -> dict[int, tuple[str, str]]:
    """Return ROI number -> (RTROIInterpretedType, ROIGenerationAlgorithm)."""
    out: dict[int, tuple[str, str]] = {}
    for item in ds.get("RTROIObservationsSequence", None) or []:
        number = int(item.get("ReferencedROINumber", -1))
        out[number] = (str(item.get("RTROIInterpretedType", "") or ""), "")
    for item in ds.get("StructureSetROISequence", None) or []:
        number = int(item.get("ROINumber", -1))
        kind = out.get(number, ("", ""))[0]
        out[number] = (kind, str(item.get("ROIGenerationAlgorithm", "") or ""))
    return out


def _segments(
    table: list[tuple[int, str, str]], types: dict[int, tuple[str, str]]
) -> tuple[Segment, ...]:
    """Return the ROIs to draw as segments: label k + 1 for the k-th."""
    out = []
    for k, (number, name, description) in enumerate(table):
        interpreted, algorithm = types.get(number, ("", ""))
        out.append(Segment(number, k + 1, name, description, interpreted, "", algorithm))
    return tuple(out)


def _pick(p: Path, table: list[tuple[int, str, str]], rois: Any) -> list[tuple[int, str, str]]:
    """Return the ROIs to draw, in order (``rois``: None, or names / numbers)."""
    if rois is None:
        return table
    if isinstance(rois, str | int):
        rois = [rois]
    picked = []
    for want in rois:
        if isinstance(want, bool) or not isinstance(want, str | int | np.integer):
            raise InvalidParameterError(
                f"read_rtstruct: rois must be ROI names (str) or numbers (int); got {want!r}"
            )
        found = [r for r in table if (r[1] == want if isinstance(want, str) else r[0] == want)]
        if not found and isinstance(want, str):
            found = [r for r in table if r[1].casefold() == want.casefold()]
        if len(found) != 1:
            listed = ", ".join(f"{n} {name!r}" for n, name, _ in table)
            what = "no" if not found else "more than one"
            raise InvalidParameterError(
                f"read_rtstruct: {p}: {what} ROI {want!r} in the structure set; it holds {listed}"
            )
        picked.append(found[0])
    return picked


def read_rtstruct(
    path: str | os.PathLike[str],
    geometry: Geometry,
    shape: Any,
    rois: Sequence[str | int] | None = None,
    *,
    overlap: str = "error",
) -> DicomLabels:
    """Rasterise the ROIs of a DICOM RT Structure Set onto an image grid, one label per ROI.

    The rules (ROIs, contours, the even-odd rule, overlap) are in the docstring of
    :mod:`ctflow.io.dicom.rtstruct`.

    Parameters
    ----------
    path : path
        The RTSTRUCT file.
    geometry : Geometry
        The grid to draw on (the scan's), world LPS mm.
    shape : 3 ints
        The grid's (Z, Y, X).
    rois : sequence of str or int, optional
        ROI names or numbers to draw, in label order; default all, in the file's order.
    overlap : {"error", "first", "last", "channels"}
        ROIs sharing voxels: refuse (default), keep the ROI drawn first / last, or return one
        binary channel per ROI.

    Returns
    -------
    DicomLabels
        ``labels`` (Z, Y, X) uint8 (uint16 past 255 ROIs; (S, Z, Y, X) channels),
        ``geometry``, ``segments`` (ROI number, label value, name, description, interpreted
        type), ``source`` and ``info`` with ``warnings`` (ROIs without contours, contours left
        out, clipped or between slices, ROIs that drew no voxel) and
        ``referenced_series_uid``.

    Raises
    ------
    UnsupportedFormatError
        Not a DICOM file, or a DICOM object that is not an RT Structure Set.
    CorruptFileError
        Unparsable file, ROIs without numbers, bad ContourData.
    InvalidScanError
        Overlapping ROIs with ``overlap="error"``.
    InvalidParameterError
        Unknown ROIs in ``rois``, a bad ``overlap``, geometry or shape.

    Examples
    --------
    >>> import tempfile, pydicom
    >>> from pydicom.dataset import Dataset, FileMetaDataset
    >>> from ctflow.io.dicom.seg import RT_STRUCTURE_SET_STORAGE as RTSS
    >>> ds = Dataset()
    >>> ds.file_meta = FileMetaDataset()
    >>> ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = RTSS
    >>> ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid()
    >>> ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    >>> ds.Modality = "RTSTRUCT"
    >>> roi = Dataset(); roi.ROINumber, roi.ROIName = 1, "box"
    >>> ds.StructureSetROISequence = [roi]
    >>> c = Dataset(); c.ContourGeometricType = "CLOSED_PLANAR"
    >>> c.ContourData = [0.5, 0.5, 1.0, 2.5, 0.5, 1.0, 2.5, 2.5, 1.0, 0.5, 2.5, 1.0]
    >>> item = Dataset(); item.ReferencedROINumber = 1; item.ContourSequence = [c]
    >>> ds.ROIContourSequence = [item]
    >>> path = f"{tempfile.mkdtemp()}/rs.dcm"
    >>> pydicom.dcmwrite(path, ds, enforce_file_format=True)
    >>> out = read_rtstruct(path, Geometry((1, 1, 1)), (2, 4, 4))
    >>> out.names, int(out.labels.sum()), out.labels[1, 1:3, 1:3].tolist()
    (('box',), 4, [[1, 1], [1, 1]])
    """
    where = "read_rtstruct"
    as_choice(overlap, OVERLAP, "overlap", where)
    geometry = check_geometry(geometry, where)
    grid = as_shape(shape, what="shape", where=where)
    p, ds = _read_dataset(path, where)
    _expect(p, ds, "rtstruct", where)
    table = _pick(p, _roi_table(p, ds), rois)
    contours = _contours(p, ds)
    segments = _segments(table, _interpreted_types(ds))
    warnings: list[str] = []
    canvas = _Canvas(grid, segments, overlap, f"{where}: {p}", kind="ROIs")
    for segment in segments:
        drawn = _draw_roi(canvas, segment, contours.get(segment.number, []), geometry, grid)
        warnings.extend(drawn)
    info: dict[str, Any] = {
        "format": "dicom-rtstruct",
        "reader": "ctflow.io.dicom.rtstruct",
        "referenced_series_uid": _referenced_series(ds),
        "warnings": warnings,
    }
    return DicomLabels(canvas.out, geometry, segments, str(p), info)


def _draw_roi(
    canvas: _Canvas,
    segment: Segment,
    contours: list[tuple[str, NDArray[np.float64]]],
    geometry: Geometry,
    shape: tuple[int, int, int],
) -> list[str]:
    """Draw one ROI on the canvas; return its warnings."""
    name = f"ROI {segment.number} {segment.label!r}"
    if not contours:
        return [f"{name} has no contour: label {segment.value} is empty"]
    closed = [points for kind, points in contours if kind in _CLOSED]
    warnings = []
    others = Counter(kind or "(none)" for kind, _ in contours if kind not in _CLOSED)
    if others:
        shown = ", ".join(f"{n} {kind}" for kind, n in sorted(others.items()))
        warnings.append(f"{name}: {shown} contour(s) enclose no area and were left out")
    problems: Counter[str] = Counter()
    mask = rasterize_contours(closed, geometry, shape, problems=problems)
    for problem, n in sorted(problems.items()):
        left = " and left out" if problem.startswith(("not in", "on no")) else ""
        warnings.append(f"{name}: {n} contour(s) {problem}{left}")
    values = np.zeros(shape[1:], np.uint16)
    for k in np.nonzero(mask.any(axis=(1, 2)))[0].tolist():
        values[...] = 0
        values[mask[k]] = segment.value
        canvas.add(k, 0, 0, values)
    if not mask.any():
        warnings.append(f"{name} drew no voxel on the grid (label {segment.value} is empty)")
    return warnings


def _referenced_series(ds: Dataset) -> str:
    """Return the SeriesInstanceUID the structure set's contours were drawn on, if given."""
    for frame in ds.get("ReferencedFrameOfReferenceSequence", None) or []:
        for study in frame.get("RTReferencedStudySequence", None) or []:
            for series in study.get("RTReferencedSeriesSequence", None) or []:
                uid = str(series.get("SeriesInstanceUID", "") or "")
                if uid:
                    return uid
    return ""
