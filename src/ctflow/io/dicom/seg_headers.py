"""The header of a DICOM SEG: its segments, where its frames lie, the series it references.

Reads the SegmentSequence into :class:`~ctflow.io.dicom.label_objects.Segment` items and the
per-frame (else shared) functional groups into ``_Frames``; ``_MARK`` is the segment description
with which :func:`~ctflow.io.dicom.write_dicom_seg` records a label value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidScanError, UnsupportedFormatError
from ctflow.io.dicom.headers import _Header
from ctflow.io.dicom.label_objects import Segment
from ctflow.io.dicom.series import _cosines

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_MARK = "ctflow label value "
_MARK_RE = re.compile(r"^ctflow label value (\d+)$")


def _first_item(group: Any, keyword: str) -> Any:
    """Return the first item of the sequence ``keyword`` of a functional group, or None."""
    if group is None or keyword not in group:
        return None
    seq = group[keyword].value
    return seq[0] if seq else None


def _code_meaning(item: Any, keyword: str) -> str:
    code = _first_item(item, keyword)
    return "" if code is None else str(code.get("CodeMeaning", "") or "")


def _seg_segments(p: Path, ds: Dataset, labelmap: bool) -> tuple[Segment, ...]:
    """Return the described segments, sorted by number, with their label values."""
    items = list(ds.get("SegmentSequence", None) or [])
    if not items:
        raise CorruptFileError(f"read_dicom_seg: {p}: the SEG has no SegmentSequence")
    rows: list[tuple[int, Any]] = []
    for item in items:
        try:
            number = int(item.SegmentNumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise CorruptFileError(
                f"read_dicom_seg: {p}: a SegmentSequence item has no valid SegmentNumber ({exc})"
            ) from exc
        if labelmap and number == 0:
            continue  # a described background of a LABELMAP SEG
        rows.append((number, item))
    numbers = [n for n, _ in rows]
    if len(set(numbers)) != len(numbers) or min(numbers, default=1) < 1:
        raise CorruptFileError(
            f"read_dicom_seg: {p}: segment numbers must be unique positive integers; got {numbers}"
        )
    rows.sort(key=lambda r: r[0])
    descriptions = [str(item.get("SegmentDescription", "") or "") for _, item in rows]
    marks = [_MARK_RE.match(d.strip()) for d in descriptions]
    values = [n for n, _ in rows]
    if all(marks):
        marked = [int(m.group(1)) for m in marks if m]
        if len(set(marked)) == len(marked) and all(1 <= v <= 65535 for v in marked):
            values = marked
    return tuple(
        Segment(
            number=n,
            value=v,
            label=str(item.get("SegmentLabel", "") or ""),
            description=d,
            property_type=_code_meaning(item, "SegmentedPropertyTypeCodeSequence"),
            category=_code_meaning(item, "SegmentedPropertyCategoryCodeSequence"),
            algorithm_type=str(item.get("SegmentAlgorithmType", "") or ""),
        )
        for (n, item), v, d in zip(rows, values, descriptions, strict=True)
    )


@dataclass
class _Frames:
    """Where each frame of a SEG lies: positions, the shared plane, segment numbers."""

    positions: NDArray[np.float64]  # (F, 3) ImagePositionPatient, x y z
    row: NDArray[np.float64]  # row cosine (x y z): direction of increasing column index
    col: NDArray[np.float64]  # column cosine: direction of increasing row index
    normal: NDArray[np.float64]
    pixel_spacing: NDArray[np.float64]  # (between rows, between columns)
    numbers: NDArray[np.int64] | None  # (F,) ReferencedSegmentNumber; None for LABELMAP
    rows: int
    cols: int
    spacing_between: float | None
    thickness: float | None

    @property
    def iop(self) -> list[float]:
        """ImageOrientationPatient of the frames."""
        return [round(float(v), 6) for v in (*self.row, *self.col)]


def _table(raw: list[Any], n: int, what: str, p: Path) -> NDArray[np.float64]:
    """Return the per-frame values ``raw`` as an (F, n) array of finite floats."""
    try:
        arr = np.array(raw, np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape == (len(raw), n) and np.all(np.isfinite(arr)):
        return arr
    for k, value in enumerate(raw):  # find the frame to name
        try:
            ok = np.array(value, np.float64).shape == (n,) and np.all(np.isfinite(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CorruptFileError(
                f"read_dicom_seg: {p}: frame {k}: {what} must be {n} finite numbers; got {value!r}"
            )
    raise CorruptFileError(f"read_dicom_seg: {p}: bad {what} values")  # pragma: no cover


def _one(values: NDArray[np.float64], what: str, p: Path, atol: float) -> NDArray[np.float64]:
    """Return the value every frame shares; InvalidScanError when frames disagree."""
    off = np.abs(values - values[0]).max(axis=1) > atol
    if off.any():
        k = int(np.argmax(off))
        raise InvalidScanError(
            f"read_dicom_seg: {p}: all frames must share {what}; frame 0 has "
            f"{values[0].tolist()}, frame {k} {values[k].tolist()}"
        )
    return values[0]


_GROUPS = (
    "PlanePositionSequence",
    "PlaneOrientationSequence",
    "PixelMeasuresSequence",
    "SegmentIdentificationSequence",
)


def _frame_groups(p: Path, ds: Dataset) -> list[list[Any]]:
    """Return, per frame, the first item of each of ``_GROUPS`` (per-frame, else shared)."""
    shared_group = _first_item(ds, "SharedFunctionalGroupsSequence")
    shared = [_first_item(shared_group, keyword) for keyword in _GROUPS]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", None) or [])
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(per_frame) != n_frames or not per_frame:
        raise CorruptFileError(
            f"read_dicom_seg: {p}: NumberOfFrames is {n_frames} but the "
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} item(s)"
        )
    out = []
    for group in per_frame:
        items = [_first_item(group, keyword) for keyword in _GROUPS]
        out.append([s if i is None else i for i, s in zip(items, shared, strict=True)])
    return out


def _positive(item: Any, keyword: str) -> float | None:
    """Return a positive finite number of ``item``, or None."""
    try:
        raw = None if item is None else item.get(keyword)
        value = None if raw is None else float(raw)
    except (TypeError, ValueError):
        return None
    return value if value is not None and np.isfinite(value) and value > 0 else None


def _seg_frames(p: Path, ds: Dataset, labelmap: bool) -> _Frames:
    """Read the functional groups of every frame."""
    groups = _frame_groups(p, ds)
    for k, (plane, orient, measures, ident) in enumerate(groups):
        if plane is None or orient is None or measures is None:
            raise UnsupportedFormatError(
                f"read_dicom_seg: {p}: frame {k} has no Plane Position, Plane Orientation or "
                "Pixel Measures functional group (a tiled / slide SEG?); ctflow reads SEGs of "
                "volumes (planes with ImagePositionPatient)"
            )
        if not labelmap and (ident is None or "ReferencedSegmentNumber" not in ident):
            raise CorruptFileError(
                f"read_dicom_seg: {p}: frame {k} has no Segment Identification "
                "(ReferencedSegmentNumber)"
            )
    positions = _table(
        [g[0].get("ImagePositionPatient") for g in groups], 3, "ImagePositionPatient", p
    )
    iop = _table(
        [g[1].get("ImageOrientationPatient") for g in groups], 6, "ImageOrientationPatient", p
    )
    spacing = _one(
        _table([g[2].get("PixelSpacing") for g in groups], 2, "PixelSpacing", p),
        "one PixelSpacing",
        p,
        1e-4,
    )
    r, c, n = _cosines(_Header(p, orientation=_one(iop, "one ImageOrientationPatient", p, 1e-4)))
    if np.any(spacing <= 0):
        raise InvalidScanError(f"read_dicom_seg: {p}: PixelSpacing must be positive; got {spacing}")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"read_dicom_seg: {p}: the SEG has no valid Rows / Columns") from exc
    numbers = None
    if not labelmap:
        numbers = np.array([int(g[3].ReferencedSegmentNumber) for g in groups], np.int64)
    return _Frames(
        positions=positions,
        row=r,
        col=c,
        normal=n,
        pixel_spacing=spacing,
        numbers=numbers,
        rows=rows,
        cols=cols,
        spacing_between=_positive(groups[0][2], "SpacingBetweenSlices"),
        thickness=_positive(groups[0][2], "SliceThickness"),
    )


def _referenced(ds: Dataset) -> tuple[str, int]:
    """Return the (first) referenced SeriesInstanceUID and the number of referenced images."""
    uid, count = "", 0
    for item in ds.get("ReferencedSeriesSequence", None) or []:
        uid = uid or str(item.get("SeriesInstanceUID", "") or "")
        count += len(item.get("ReferencedInstanceSequence", None) or [])
    return uid, count
