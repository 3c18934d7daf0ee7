"""Reading a DICOM SEG: :func:`read_dicom_seg` and the drawing of its frames.

The rules are in :mod:`ctflow.io.dicom.seg`; the header is read by
:mod:`~ctflow.io.dicom.seg_headers`, the grid chosen by :mod:`~ctflow.io.dicom.seg_grid`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry
from ctflow.io.dicom.label_canvas import OVERLAP, _Canvas
from ctflow.io.dicom.label_objects import DicomLabels, Segment, _expect, _read_dataset
from ctflow.io.dicom.seg_grid import _as_reference, _on_reference, _own_grid
from ctflow.io.dicom.seg_headers import _Frames, _referenced, _seg_frames, _seg_segments
from ctflow.labels import labels_on_grid
from ctflow.validation import as_choice

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ctflow.io.scan import Scan

__all__ = ["read_dicom_seg"]


def _frame_box(
    p: Path, pixels: NDArray[Any], lut: NDArray[np.int64] | None, value: int, threshold: float
) -> tuple[int, int, NDArray[Any]] | None:
    """Return (row, column, label values) of the box around a frame's content, or None.

    The values are uint16 (0 = none): ``value`` where a BINARY / FRACTIONAL frame reaches
    ``threshold``, the looked-up value of each segment number of a LABELMAP frame.
    """
    mask = pixels >= threshold if lut is None else pixels != 0
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    ya, yb, xa, xb = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if lut is None:
        return ya, xa, mask[ya:yb, xa:xb] * np.uint16(value)
    box = pixels[ya:yb, xa:xb]
    found = np.unique(box)
    if int(found[-1]) >= len(lut) or np.any(lut[found[found < len(lut)]] < 0):
        bad = [v for v in found.tolist() if v >= len(lut) or lut[v] < 0]
        raise CorruptFileError(
            f"read_dicom_seg: {p}: LABELMAP pixel values {bad[:5]} are no described segment"
        )
    return ya, xa, lut[box].astype(np.uint16)


def _frames_pixels(p: Path, ds: Dataset) -> Iterator[NDArray[Any]]:
    """Yield the decoded frames one at a time (bit-packed BINARY frames unpacked)."""
    from pydicom.pixels import iter_pixels

    try:
        for frame in iter_pixels(ds):
            yield frame.reshape(int(ds.Rows), int(ds.Columns))
    except (CorruptFileError, InvalidScanError):
        raise
    except Exception as exc:  # decoders raise many types
        raise CorruptFileError(
            f"read_dicom_seg: {p}: cannot decode the SEG's pixel data ({type(exc).__name__}: "
            f"{exc})"[:600]
        ) from exc


def read_dicom_seg(
    path: str | os.PathLike[str],
    reference: Scan | tuple[Geometry, Any] | str | os.PathLike[str] | None = None,
    *,
    overlap: str = "error",
) -> DicomLabels:
    """Read a DICOM SEG into a (z, y, x) label map with its geometry and segments.

    The rules (frames, segment values, fractional threshold, grid, overlap) are in the
    docstring of :mod:`ctflow.io.dicom.seg`.

    Parameters
    ----------
    path : path
        The SEG file (BINARY, FRACTIONAL or LABELMAP; any transfer syntax pydicom decodes).
    reference : path, Scan or (Geometry, shape), optional
        The grid to put the labels on: the folder of the segmented DICOM series (its grid as
        :func:`~ctflow.io.dicom.read_dicom_series` reads it, from the headers alone; the
        series the SEG references when the folder holds several), a scan read by ctflow, or a
        geometry and (Z, Y, X). Default: the grid spanning the frames.
    overlap : {"error", "first", "last", "channels"}
        Segments sharing voxels: refuse (default), keep the first / last segment, or return
        one binary channel per segment.

    Returns
    -------
    DicomLabels
        ``labels`` (Z, Y, X) uint8/uint16 (or (S, Z, Y, X) channels), ``geometry``,
        ``segments`` (number, value, label, description, property type ...), ``source`` and
        ``info`` (``segmentation_type``, ``n_frames``, ``referenced_series_uid``,
        ``referenced_instances``, ``frame_of_reference_uid``, ``placed``, ``warnings``).

    Raises
    ------
    UnsupportedFormatError
        Not a DICOM file, a DICOM object that is not a SEG, a SEG without plane positions.
    CorruptFileError
        Unparsable header or pixel data, frames without segment identification, undescribed
        segment numbers.
    InvalidScanError
        Frames that disagree (orientation, pixel spacing, positions off their grid), frames
        oblique to ``reference`` or between its voxels, overlapping segments with
        ``overlap="error"``, a grid over :data:`~ctflow.io.voxels.MAX_VOXELS_BYTES`.
    InvalidParameterError
        A bad ``overlap`` or ``reference``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.dicom import write_dicom_seg
    >>> from ctflow.io.dicom_writer import write_dicom_series
    >>> folder = tempfile.mkdtemp()
    >>> grid = Geometry((2.0, 0.5, 0.5), (-10.0, 0.0, 0.0))
    >>> _ = write_dicom_series(folder, np.zeros((4, 3, 3), np.int16), grid)
    >>> labels = np.zeros((4, 3, 3), np.uint8)
    >>> labels[2, 0, 0] = 1
    >>> seg = write_dicom_seg(f"{tempfile.mkdtemp()}/seg.dcm", labels, folder)
    >>> alone = read_dicom_seg(seg)  # only slice 2 has a frame: a one-slice grid
    >>> alone.labels.shape, alone.geometry.origin.tolist()
    ((1, 3, 3), [-6.0, 0.0, 0.0])
    >>> read_dicom_seg(seg, reference=folder).labels.shape
    (4, 3, 3)
    """
    where = "read_dicom_seg"
    as_choice(overlap, OVERLAP, "overlap", where)
    p, ds = _read_dataset(path, where)
    _expect(p, ds, "seg", where)
    if "PixelData" not in ds:
        raise CorruptFileError(f"{where}: {p}: the SEG has no pixel data (a truncated file?)")
    seg_type = str(ds.get("SegmentationType", "") or "").strip().upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise UnsupportedFormatError(
            f"{where}: {p}: SegmentationType must be BINARY, FRACTIONAL or LABELMAP; "
            f"got {seg_type!r}"
        )
    labelmap = seg_type == "LABELMAP"
    segments = _seg_segments(p, ds, labelmap)
    frames = _seg_frames(p, ds, labelmap)
    ref_uid, n_ref = _referenced(ds)
    info: dict[str, Any] = {
        "format": "dicom-seg",
        "reader": "ctflow.io.dicom.seg",
        "segmentation_type": seg_type,
        "n_frames": len(frames.positions),
        "referenced_series_uid": ref_uid,
        "referenced_instances": n_ref,
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "") or ""),
        "warnings": [],
    }
    target = None if reference is None else _as_reference(reference, ref_uid, where)
    offsets = None
    if target is not None:
        if target[2] and ref_uid and target[2] != ref_uid:
            info["warnings"].append(
                f"the SEG references series {ref_uid}, its labels were put on series {target[2]}"
            )
        offsets = _on_reference(p, frames, target[0], target[1])
    if offsets is not None and target is not None:
        geometry, shape = target[0], target[1]
        info["placed"] = "on the reference grid"
    else:
        geometry, shape, offsets = _own_grid(p, frames, info)
        info["placed"] = "on the frames' grid"
    labels = _draw_seg(p, ds, frames, segments, offsets, shape, overlap, seg_type)
    if target is not None and info["placed"] != "on the reference grid":
        labels = _resample(labels, geometry, target[0], target[1], where=f"SEG {p}")
        geometry = target[0]
        info["placed"] = "resampled onto the reference grid (nearest neighbour)"
    return DicomLabels(labels, geometry, segments, str(p), info)


def _draw_seg(
    p: Path,
    ds: Dataset,
    frames: _Frames,
    segments: tuple[Segment, ...],
    offsets: NDArray[np.int64],
    shape: tuple[int, int, int],
    overlap: str,
    seg_type: str,
) -> NDArray[Any]:
    """Draw every frame of the SEG on a canvas of ``shape``."""
    canvas = _Canvas(shape, segments, overlap, f"read_dicom_seg: {p}")
    value_of = {s.number: s.value for s in segments}
    lut = None
    if seg_type == "LABELMAP":
        lut = np.full(max(value_of, default=0) + 1, -1, np.int64)
        lut[0] = 0
        for number, value in value_of.items():
            lut[number] = value
    threshold = 1.0
    if seg_type == "FRACTIONAL":
        threshold = 0.5 * float(ds.get("MaximumFractionalValue", 255) or 255)
    for k, pixels in enumerate(_frames_pixels(p, ds)):
        if k >= len(offsets):
            raise CorruptFileError(f"{p}: the pixel data holds more frames than NumberOfFrames")
        value = 0
        if frames.numbers is not None:
            number = int(frames.numbers[k])
            if number not in value_of:
                raise CorruptFileError(
                    f"read_dicom_seg: {p}: frame {k} refers to segment {number}, which the "
                    f"SegmentSequence does not describe (segments {sorted(value_of)})"
                )
            value = value_of[number]
        box = _frame_box(p, pixels, lut, value, threshold)
        if box is None:
            continue
        z, y0, x0 = (int(v) for v in offsets[k])
        if not canvas.add(z, y0 + box[0], x0 + box[1], box[2]):
            raise InvalidScanError(
                f"read_dicom_seg: {p}: frame {k} (ImagePositionPatient "
                f"{frames.positions[k].tolist()}) has labels outside the grid it should go on "
                f"{shape}: not a SEG of these images?"
            )
    return canvas.out


def _resample(
    labels: NDArray[Any], geometry: Geometry, target: Geometry, shape: Any, where: str
) -> NDArray[Any]:
    """Put labels (or channels) on another grid with nearest neighbour."""
    if labels.ndim == 4:
        return np.stack([labels_on_grid(c, geometry, target, shape, where=where) for c in labels])
    return labels_on_grid(labels, geometry, target, shape, where=where)
