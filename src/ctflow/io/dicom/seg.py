"""DICOM Segmentation (SEG) objects: read them into label maps, write label maps as SEG.

:func:`read_dicom_seg` reads a SEG with pydicom alone; :func:`write_dicom_seg` writes one with
highdicom (``pip install 'ctflow[seg]'``). :func:`dicom_label_kind` tells a SEG or an RT
Structure Set (:mod:`ctflow.io.dicom.rtstruct`) from other files, for ``load``'s label files.

Rules
-----
What is read
    A DICOM file whose SOP class is Segmentation Storage (``1.2.840.10008.5.1.4.1.1.66.4``)
    or Label Map Segmentation Storage (``...66.7``), or whose Modality is ``SEG``. Any other
    DICOM object -> :class:`~ctflow.errors.UnsupportedFormatError` naming the file and what
    it is; a file that is not DICOM -> the same; a file pydicom cannot parse or whose frames
    contradict the header -> :class:`~ctflow.errors.CorruptFileError`.
Segments
    Every item of the SegmentSequence is a :class:`Segment`: its number, label, description,
    segmented property category / type (code meanings) and algorithm type. In the label map a
    segment's voxels hold its *value*: the segment number, except in a SEG written by
    :func:`write_dicom_seg`, whose segment descriptions (``"ctflow label value 5"``) give
    back the label values it was written from. A label map is uint8, uint16 above 255.
Frames
    Each frame is one plane of one segment (BINARY, FRACTIONAL) or of all segments
    (LABELMAP: pixel values are segment numbers, 0 is background). Its place comes from the
    per-frame (else shared) functional groups: Plane Position (ImagePositionPatient), Plane
    Orientation (ImageOrientationPatient), Pixel Measures (PixelSpacing,
    SpacingBetweenSlices, SliceThickness) and, for BINARY / FRACTIONAL, Segment
    Identification (ReferencedSegmentNumber); Derivation Image references are not needed.
    Frames may come in any order and may be sparse (only the planes with content, as
    highdicom writes by default): they are placed by ImagePositionPatient, never by their
    index. A FRACTIONAL frame marks a voxel where ``value >= 0.5 * MaximumFractionalValue``.
    All frames must share one orientation and pixel spacing
    (:class:`~ctflow.errors.InvalidScanError` otherwise).
The grid
    With ``reference`` (a DICOM series folder, a :class:`~ctflow.io.scan.Scan` or a
    ``(Geometry, shape)`` pair) the labels come on the reference grid: when the frames' rows
    and columns run along the grid's x and y axes with its pixel spacing, every frame is put
    on the voxels it covers (its position must be a voxel centre of the grid within 0.1
    voxel, and its content must lie inside the grid); when the frames are another plane of
    the grid (an axis permutation or flip, or another pixel spacing) they are read on their
    own grid and put on the reference with nearest neighbour
    (:func:`~ctflow.labels.labels_on_grid`). Frames oblique to the grid ->
    :class:`~ctflow.errors.InvalidScanError` ("orientation"): a SEG is drawn on the planes of
    the images it segments. Without ``reference`` the grid spans the frames' extent: the
    slice step is SpacingBetweenSlices when the frames lie on multiples of it, else the
    largest step of which every gap between frame positions is a multiple (then, when frames
    were skipped, ``info["warnings"]`` says that the step was inferred). A sparse SEG alone
    cannot tell the grid of its whole series (it holds no position of the images without
    content): pass ``reference`` for it (``load`` passes the scan). The geometry follows
    ctflow's DICOM series reader (and SimpleITK): x along the row cosine, y along the column
    cosine, z along their cross product, origin at the first plane.
Overlapping segments
    A label map holds one label per voxel. ``overlap="error"`` (the default) refuses
    segments that share a voxel (:class:`~ctflow.errors.InvalidScanError` naming the file,
    both segments and a voxel); ``"first"`` keeps the segment that comes first (lowest
    segment number), ``"last"`` the one that comes last, whatever the frame order;
    ``"channels"`` returns one binary uint8 channel per segment, (S, Z, Y, X).

Writing
    :func:`write_dicom_seg` writes a label map on the grid of a DICOM series (as ctflow reads
    it) as a SEG referencing the series' SOP instances: one segment per label value present
    (in increasing order), a BINARY SEG by default (segment numbers 1..K, the label value in
    each segment's description) or a LABELMAP SEG (segment number = label value), algorithm
    "ctflow" (family Artificial Intelligence), manufacturer "ctflow", the software version
    ctflow's.

Examples
--------
>>> import tempfile, numpy as np
>>> from ctflow.geometry import Geometry
>>> from ctflow.io.dicom_writer import write_dicom_series
>>> folder = tempfile.mkdtemp()
>>> _ = write_dicom_series(folder, np.zeros((3, 4, 5), np.int16), Geometry((2.0, 0.5, 0.5)))
>>> labels = np.zeros((3, 4, 5), np.uint8)
>>> labels[1, 1:3, 2:4] = 7
>>> seg = write_dicom_seg(f"{tempfile.mkdtemp()}/seg.dcm", labels, folder, ["tumour"])
>>> back = read_dicom_seg(seg, reference=folder)
>>> bool((back.labels == labels).all()), back.names, back.segments[0].value
(True, ('tumour',), 7)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import (
    CorruptFileError,
    InvalidParameterError,
    InvalidScanError,
    MissingDependencyError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry
from ctflow.io.dicom.folder import _check_folder, _scan
from ctflow.io.dicom.headers import _Header
from ctflow.io.dicom.series import _choose, _cosines, _sort_and_space, _validate
from ctflow.io.voxels import as_source_path, open_regular
from ctflow.labels import label_dtype, labels_on_grid, to_labels
from ctflow.validation import as_choice, as_shape

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ctflow.io.scan import Scan

__all__ = [
    "LABEL_MAP_SEG_STORAGE",
    "OVERLAP",
    "RT_STRUCTURE_SET_STORAGE",
    "SEGMENTATION_STORAGE",
    "DicomLabels",
    "Segment",
    "dicom_label_kind",
    "read_dicom_seg",
    "write_dicom_seg",
]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: How overlapping segments (or ROIs) become labels: refuse, first wins, last wins, channels.
OVERLAP = ("error", "first", "last", "channels")

_MARK = "ctflow label value "
_MARK_RE = re.compile(r"^ctflow label value (\d+)$")
_AXIS_TOL = 1e-3  # |cosine| of parallel axes may fall this short of 1
_VOXEL_TOL = 0.1  # a frame position may be this far (in voxels) off a voxel centre
_POS_TOL_MM = 0.01  # frame positions closer than this are one plane
_MAX_BYTES = 4 * 2**30  # refuse label grids larger than this
_MAX_STEP_DIVISOR = 16  # the inferred slice step divides the smallest gap by at most this
#: Patient / study attributes a SEG copies from its images (Type 2: present, maybe empty)
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class Segment:
    """One segment of a DICOM SEG (or one ROI of an RT Structure Set) and its label value.

    Attributes
    ----------
    number : int
        SegmentNumber (SEG) or ROINumber (RTSTRUCT).
    value : int
        The value its voxels hold in the label map (its channel is its position in
        ``segments`` with ``overlap="channels"``).
    label : str
        SegmentLabel (SEG) or ROIName (RTSTRUCT): the segment's name.
    description : str
        SegmentDescription or ROIDescription.
    property_type : str
        Code meaning of the segmented property type (SEG, e.g. ``"Liver"``) or the
        RTROIInterpretedType (RTSTRUCT, e.g. ``"ORGAN"``).
    category : str
        Code meaning of the segmented property category (SEG), else ``""``.
    algorithm_type : str
        SegmentAlgorithmType (``"AUTOMATIC"``, ``"SEMIAUTOMATIC"``, ``"MANUAL"``) or the
        ROIGenerationAlgorithm.

    Examples
    --------
    >>> Segment(1, 5, "liver").label
    'liver'
    """

    number: int
    value: int
    label: str
    description: str = ""
    property_type: str = ""
    category: str = ""
    algorithm_type: str = ""


@dataclass
class DicomLabels:
    """A label map read from a DICOM SEG or RT Structure Set, with its grid and segments.

    Attributes
    ----------
    labels : ndarray
        (Z, Y, X) uint8 labels (uint16 above 255), 0 = background; (S, Z, Y, X) uint8
        0/1 channels, one per segment, with ``overlap="channels"``.
    geometry : Geometry
        The grid's spacing, origin and direction, (z, y, x) world LPS mm.
    segments : tuple of Segment
        The segments (ROIs) in label order.
    source : str
        The file read.
    info : dict
        JSON-friendly facts: ``format``, ``reader``, ``warnings`` (list of str) and what the
        reader found (segmentation type, frames, referenced series ...).

    Examples
    --------
    >>> d = DicomLabels(np.zeros((1, 2, 2), np.uint8), Geometry((1, 1, 1)), (Segment(1, 1, "a"),))
    >>> d.names, d.warnings
    (('a',), [])
    """

    labels: NDArray[Any]
    geometry: Geometry
    segments: tuple[Segment, ...]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The segments' labels (names), in label order."""
        return tuple(s.label for s in self.segments)

    @property
    def warnings(self) -> list[str]:
        """What the reader decided on its own (``info["warnings"]``)."""
        return list(self.info.get("warnings", []))


# -- reading DICOM files ---------------------------------------------------------------------


def _sop_class(ds: Dataset) -> str:
    """Return the SOPClassUID, from the file meta when the dataset's own is empty."""
    sop = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop and hasattr(ds, "file_meta"):
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    return sop


def _kind_of(ds: Dataset) -> str | None:
    """Return ``"seg"``, ``"rtstruct"`` or None (another DICOM object)."""
    sop = _sop_class(ds)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if sop in (SEGMENTATION_STORAGE, LABEL_MAP_SEG_STORAGE) or modality == "SEG":
        return "seg"
    if sop == RT_STRUCTURE_SET_STORAGE or modality == "RTSTRUCT":
        return "rtstruct"
    return None


def _what(ds: Dataset) -> str:
    """Describe a DICOM object for messages: its SOP class name and Modality."""
    from pydicom.uid import UID

    sop = _sop_class(ds)
    name = UID(sop).name if sop else "unknown SOP class"
    modality = str(ds.get("Modality", "") or "").strip() or "none"
    return f"a DICOM {name} file (Modality {modality})"


def _read_dataset(path: Any, where: str, *, header_only: bool = False) -> tuple[Path, Dataset]:
    """Parse a DICOM file with pydicom; refuse what is not one (typed errors naming it)."""
    import pydicom

    p = as_source_path(path, where)
    fh, _ = open_regular(p, "DICOM file")
    with fh:
        head = fh.read(132)
        if head[128:132] != b"DICM":
            raise UnsupportedFormatError(
                f"{where}: {p}: not a DICOM file (no 'DICM' preamble); a DICOM SEG or RT "
                "Structure Set file is expected"
            )
        fh.seek(0)
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=header_only)
        except Exception as exc:  # pydicom raises many types for broken files
            raise CorruptFileError(
                f"{where}: {p}: cannot parse the DICOM file ({type(exc).__name__}: {exc})"[:600]
            ) from exc
    return p, ds


def _expect(p: Path, ds: Dataset, kind: str, where: str) -> None:
    """Refuse a DICOM object that is not of ``kind`` ("seg" or "rtstruct")."""
    if _kind_of(ds) != kind:
        wanted = "a DICOM SEG (Segmentation Storage)" if kind == "seg" else "an RT Structure Set"
        raise UnsupportedFormatError(f"{where}: {p}: {_what(ds)}, not {wanted}")


def dicom_label_kind(path: str | os.PathLike[str]) -> str | None:
    """Tell whether a label file is a DICOM SEG, an RT Structure Set, or no DICOM file at all.

    Parameters
    ----------
    path : path
        The label file (a folder is never a DICOM label file).

    Returns
    -------
    {"seg", "rtstruct"} or None
        None when ``path`` is a folder or a file without the DICOM ``DICM`` preamble.

    Raises
    ------
    UnsupportedFormatError
        A DICOM file that is neither a SEG nor an RTSTRUCT (a CT slice ...): DICOM labels must
        be one of those (the message names the file and what it is).
    CorruptFileError
        A DICOM file whose header cannot be parsed.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> dicom_label_kind(get_testdata_file("CT_small.dcm"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.UnsupportedFormatError: ...CT_small.dcm: a DICOM CT Image Storage file ...
    """
    p = as_source_path(path, "dicom_label_kind")
    if p.is_dir():
        return None
    fh, _ = open_regular(p, "label file")
    with fh:
        if fh.read(132)[128:132] != b"DICM":
            return None
    p, ds = _read_dataset(p, "dicom_label_kind", header_only=True)
    kind = _kind_of(ds)
    if kind is None:
        raise UnsupportedFormatError(
            f"{p}: {_what(ds)}, not a DICOM SEG or RT Structure Set; DICOM label files must be "
            "one of those (a DICOM image series is read per folder, as images)"
        )
    return kind


# -- the label map being drawn ----------------------------------------------------------------


class _Canvas:
    """A label map (or one channel per segment) drawn one 2-D plane at a time.

    Planes hold label values (0 = nothing). The overlap rule does not depend on the order in
    which planes come: "first" / "last" compare the segments' ranks.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        segments: Sequence[Segment],
        overlap: str,
        where: str,
        kind: str = "segments",
    ) -> None:
        self.segments = {s.value: s for s in segments}
        self.overlap = overlap
        self.where = where
        self.kind = kind
        top = max([s.value for s in segments], default=0)
        self.rank = np.zeros(top + 1, np.int64)
        for i, s in enumerate(segments):
            self.rank[s.value] = i + 1
        if overlap == "channels":
            self.out = np.zeros((len(segments), *shape), np.uint8)
            self.channel = {s.value: i for i, s in enumerate(segments)}
        else:
            self.out = np.zeros(shape, label_dtype(np.array([top])))

    def add(self, z: int, y0: int, x0: int, values: NDArray[Any]) -> bool:
        """Draw ``values`` with its pixel (0, 0) at voxel (z, y0, x0).

        Returns False when some of its non-zero pixels fell outside the grid (dropped).
        """
        n_z, n_y, n_x = self.out.shape[-3:]
        h, w = values.shape
        ya, yb, xa, xb = max(y0, 0), min(y0 + h, n_y), max(x0, 0), min(x0 + w, n_x)
        if not (0 <= z < n_z and ya < yb and xa < xb):
            return not values.any()
        part = values[ya - y0 : yb - y0, xa - x0 : xb - x0]
        kept = part.shape == values.shape or np.count_nonzero(part) == np.count_nonzero(values)
        if part.any():
            self._draw(z, slice(ya, yb), slice(xa, xb), part)
        return kept

    def _draw(self, z: int, ys: slice, xs: slice, part: NDArray[Any]) -> None:
        if self.overlap == "channels":
            for v in np.unique(part[part > 0]).tolist():
                self.out[self.channel[v], z, ys, xs][part == v] = 1
            return
        region = self.out[z, ys, xs]
        new = part != 0
        if self.overlap == "error":
            clash = new & (region != 0) & (region != part)
            if clash.any():
                raise self._clash(z, ys, xs, clash, region, part)
            region[new] = part[new]
            return
        taken = region != 0
        if self.overlap == "first":
            new &= ~taken | (self.rank[region] > self.rank[part])
        else:
            new &= ~taken | (self.rank[region] < self.rank[part])
        region[new] = part[new]

    def _clash(
        self,
        z: int,
        ys: slice,
        xs: slice,
        clash: NDArray[np.bool_],
        region: NDArray[Any],
        part: NDArray[Any],
    ) -> InvalidScanError:
        i, j = (int(v[0]) for v in np.nonzero(clash))
        a, b = self.segments[int(region[i, j])], self.segments[int(part[i, j])]
        voxel = (z, ys.start + i, xs.start + j)
        return InvalidScanError(
            f"{self.where}: {self.kind} {a.number} {a.label!r} and {b.number} {b.label!r} "
            f"overlap ({int(clash.sum())} voxel(s) of slice {z}, e.g. voxel (z, y, x) = {voxel}); "
            "a label map holds one label per voxel: pass overlap='first' or 'last' to choose, or "
            "overlap='channels' for one binary channel per segment"
        )


# -- SEG headers --------------------------------------------------------------------------------


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


# -- grids --------------------------------------------------------------------------------------


@dataclass
class _SeriesGrid:
    """A DICOM series' slices (sorted) and the grid ctflow reads them on."""

    folder: Path
    series_uid: str
    headers: list[_Header]
    geometry: Geometry
    shape: tuple[int, int, int]


def _series_grid(
    folder: Any, where: str, series_uid: str | None = None, prefer: str = ""
) -> _SeriesGrid:
    """Return the grid of a DICOM series folder from the slice headers (no pixel read).

    ``series_uid`` must be in the folder; ``prefer`` is taken when it is, else the default
    series (the one :func:`~ctflow.io.dicom.read_dicom_series` reads).
    """
    p = _check_folder(folder, where)
    groups, _ = _scan(p, datasets=True)
    if not groups:
        raise CorruptFileError(f"{where}: {p}: no DICOM files (no readable DICOM image)")
    if series_uid is None and prefer in groups:
        series_uid = prefer
    uid = _choose(p, groups, series_uid, [])
    slices = [h for h in groups[uid] if not h.is_localizer]
    if any(h.is_multiframe for h in slices):
        raise UnsupportedFormatError(
            f"{where}: {p}: series {uid!r} is multi-frame CT; ctflow reads classic slices"
        )
    _validate(p, slices)
    slices, dz, r, c, n, _ = _sort_and_space(p, slices, False, {"warnings": []})
    first = slices[0]
    assert first.position is not None and first.pixel_spacing is not None
    direction = np.column_stack([n[::-1], c[::-1], r[::-1]])
    spacing = (dz, float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))
    geometry = Geometry(spacing, first.position[::-1], direction)
    return _SeriesGrid(
        p, uid, slices, geometry, (len(slices), int(first.rows or 0), int(first.cols or 0))
    )


def _as_reference(
    reference: Scan | tuple[Geometry, Any] | str | os.PathLike[str], referenced_uid: str, where: str
) -> tuple[Geometry, tuple[int, int, int], str]:
    """Return (geometry, shape, series UID or "") of a reference grid."""
    from ctflow.io.scan import Scan

    if isinstance(reference, Scan):
        return reference.geometry, reference.shape, str(reference.info.get("series_uid", "") or "")
    if isinstance(reference, tuple) and len(reference) == 2 and isinstance(reference[0], Geometry):
        return reference[0], as_shape(reference[1], what="reference shape", where=where), ""
    if isinstance(reference, str | os.PathLike):
        grid = _series_grid(reference, where, prefer=referenced_uid)
        return grid.geometry, grid.shape, grid.series_uid
    raise InvalidParameterError(
        f"{where}: reference must be a DICOM series folder, a Scan or a (Geometry, shape) pair; "
        f"got {type(reference).__name__}"
    )


def _z_step(p: Path, d: NDArray[np.float64], frames: _Frames, info: dict[str, Any]) -> float:
    """Return the slice step of the frames' own grid (rules in the module docstring)."""
    planes = np.sort(d)
    planes = planes[np.concatenate([[True], np.diff(planes) > _POS_TOL_MM])]
    if len(planes) == 1:
        for value, source in (
            (frames.spacing_between, "SpacingBetweenSlices"),
            (frames.thickness, "SliceThickness"),
        ):
            if value is not None:
                info["z_spacing_source"] = source
                return value
        info["z_spacing_source"] = "default"
        return 1.0
    gaps = np.diff(planes)
    candidates = (
        [(frames.spacing_between, "SpacingBetweenSlices")] if frames.spacing_between else []
    )
    candidates += [(float(gaps.min()) / k, "frames") for k in range(1, _MAX_STEP_DIVISOR + 1)]
    for step, source in candidates:
        assert step is not None
        q = gaps / step
        if np.all(np.abs(q - np.rint(q)) <= _VOXEL_TOL):
            info["z_spacing_source"] = source
            if source == "frames" and np.any(np.rint(q) > 1):
                info["warnings"].append(
                    f"the frames skip planes and the SEG gives no SpacingBetweenSlices: the slice "
                    f"step {step:.6g} mm was inferred from the frame positions; pass reference= "
                    "(the series) to put the labels on the series' grid"
                )
            return step
    raise InvalidScanError(
        f"read_dicom_seg: {p}: the frame positions along the slice normal are not on a regular "
        f"grid (gaps {np.round(gaps, 4).tolist()[:10]} mm); pass reference= (the series)"
    )


def _own_grid(
    p: Path, frames: _Frames, info: dict[str, Any]
) -> tuple[Geometry, tuple[int, int, int], NDArray[np.int64]]:
    """Return the grid spanning the frames and each frame's (z, y, x) voxel offset."""
    pos = frames.positions
    a, b, d = pos @ frames.row, pos @ frames.col, pos @ frames.normal
    dy, dx = (float(v) for v in frames.pixel_spacing)
    dz = _z_step(p, d, frames, info)
    grid = np.column_stack([(d - d.min()) / dz, (b - b.min()) / dy, (a - a.min()) / dx])
    offsets = np.rint(grid).astype(np.int64)
    k = int(np.argmax(np.abs(grid - offsets).max(axis=1)))
    if np.abs(grid[k] - offsets[k]).max() > _VOXEL_TOL:
        raise InvalidScanError(
            f"read_dicom_seg: {p}: frame {k} (ImagePositionPatient {pos[k].tolist()}) is not on "
            "the grid of the other frames (shifted by a fraction of a pixel or slice)"
        )
    shape = (
        int(offsets[:, 0].max()) + 1,
        int(offsets[:, 1].max()) + frames.rows,
        int(offsets[:, 2].max()) + frames.cols,
    )
    _check_size(p, shape)
    origin = a.min() * frames.row + b.min() * frames.col + d.min() * frames.normal
    direction = np.column_stack([frames.normal[::-1], frames.col[::-1], frames.row[::-1]])
    return Geometry((dz, dy, dx), origin[::-1], direction), shape, offsets


def _check_size(p: Path, shape: tuple[int, ...]) -> None:
    n_bytes = int(np.prod(shape, dtype=np.float64))
    if n_bytes > _MAX_BYTES:
        raise InvalidScanError(
            f"read_dicom_seg: {p}: the labels would need a grid of {shape} voxels "
            f"({n_bytes / 2**30:.1f} GiB); ctflow refuses grids over 4 GiB (frames far apart?)"
        )


def _on_reference(
    p: Path, frames: _Frames, geometry: Geometry, shape: tuple[int, int, int]
) -> NDArray[np.int64] | None:
    """Return each frame's voxel offset on the reference grid, or None to resample.

    None when the frames are another plane of the grid or have another pixel spacing; an
    InvalidScanError when they are oblique to it or lie between its voxels.
    """
    axes = geometry.direction[::-1, :]  # column j: voxel axis j (z, y, x) as a world xyz vector
    for name, vec in (("row", frames.row), ("column", frames.col)):
        if np.abs(axes.T @ vec).max() < 1 - _AXIS_TOL:
            raise InvalidScanError(
                f"read_dicom_seg: {p}: the SEG's frames (ImageOrientationPatient {frames.iop}) "
                f"disagree with the orientation of the grid they should go on (its axes z, y, x "
                f"= {np.round(axes.T, 4).tolist()} in x, y, z): their {name} direction is "
                "oblique to it; a SEG must lie on the planes of the images it segments"
            )
    same = (
        frames.row @ axes[:, 2] > 1 - _AXIS_TOL
        and frames.col @ axes[:, 1] > 1 - _AXIS_TOL
        and np.allclose(frames.pixel_spacing, geometry.spacing[1:], rtol=1e-3, atol=0)
    )
    if not same:
        return None
    grid = geometry.world_to_voxel(frames.positions[:, ::-1])
    offsets = np.rint(grid).astype(np.int64)
    k = int(np.argmax(np.abs(grid - offsets).max(axis=1)))
    if np.abs(grid[k] - offsets[k]).max() > _VOXEL_TOL:
        raise InvalidScanError(
            f"read_dicom_seg: {p}: frame {k} (ImagePositionPatient {frames.positions[k].tolist()}) "
            f"lies between the voxels of the grid it should go on (voxel {np.round(grid[k], 3)}"
            f" of a grid of {shape}): not a SEG of these images?"
        )
    return offsets


# -- read -------------------------------------------------------------------------------------


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


def _referenced(ds: Dataset) -> tuple[str, int]:
    """Return the (first) referenced SeriesInstanceUID and the number of referenced images."""
    uid, count = "", 0
    for item in ds.get("ReferencedSeriesSequence", None) or []:
        uid = uid or str(item.get("SeriesInstanceUID", "") or "")
        count += len(item.get("ReferencedInstanceSequence", None) or [])
    return uid, count


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
        ``overlap="error"``, a grid over 4 GiB.
    InvalidParameterError
        A bad ``overlap`` or ``reference``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from ctflow.geometry import Geometry
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


# -- write ------------------------------------------------------------------------------------


def _highdicom(where: str) -> Any:
    """Import highdicom, or say how to install it."""
    try:
        import highdicom
    except ImportError as exc:
        raise MissingDependencyError(
            f"{where} needs highdicom, which is not installed: pip install 'ctflow[seg]' (or "
            "pip install highdicom)"
        ) from exc
    return highdicom


def _segment_names(names: Any, present: NDArray[Any], where: str) -> list[str]:
    """Return one name per present label value."""
    values = [int(v) for v in present]
    if names is None:
        out = [f"label {v}" for v in values]
    elif isinstance(names, Mapping):
        out = [str(names.get(v, f"label {v}")) for v in values]
    elif isinstance(names, Sequence) and not isinstance(names, str):
        if len(names) != len(values):
            raise InvalidParameterError(
                f"{where}: names must give one name per label value present ({values}); got "
                f"{len(names)} name(s)"
            )
        out = [str(n) for n in names]
    else:
        raise InvalidParameterError(
            f"{where}: names must be a sequence of str (one per label value present, in "
            f"increasing order) or a mapping value -> name; got {type(names).__name__}"
        )
    for name in out:
        if not name.strip() or len(name) > 64 or "\\" in name:
            raise InvalidParameterError(
                f"{where}: a segment name must be 1 to 64 characters without a backslash (a "
                f"DICOM SegmentLabel); got {name!r}"
            )
    return out


def _source_datasets(grid: _SeriesGrid, where: str) -> list[Any]:
    """Return the series' header datasets, sorted, as highdicom's source images."""
    out = []
    for h in grid.headers:
        ds = h.dataset
        if not str(ds.get("SOPClassUID", "") or "").strip():
            ds.SOPClassUID = ds.file_meta.get("MediaStorageSOPClassUID", "")
        if not str(ds.get("SOPInstanceUID", "") or "").strip():
            ds.SOPInstanceUID = ds.file_meta.get("MediaStorageSOPInstanceUID", "")
        for keyword in _TYPE2:  # a SEG must have them, empty when unknown
            if keyword not in ds:
                setattr(ds, keyword, "")
        for keyword in (
            "SOPClassUID",
            "SOPInstanceUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "FrameOfReferenceUID",
        ):
            if not str(ds.get(keyword, "") or "").strip():
                raise InvalidScanError(
                    f"{where}: {h.path}: the slice has no {keyword} (removed by anonymisation?); "
                    "a DICOM SEG references its images by these UIDs"
                )
        out.append(ds)
    return out


def _check_grid(
    values: NDArray[Any], geometry: Geometry | None, grid: _SeriesGrid, where: str
) -> None:
    if values.shape != grid.shape:
        raise InvalidScanError(
            f"{where}: labels must have the shape of the series {grid.folder} {grid.shape} "
            f"(z, y, x); got {values.shape}"
        )
    if geometry is None:
        return
    g = grid.geometry
    if not (
        np.allclose(geometry.spacing, g.spacing, rtol=1e-4, atol=1e-4)
        and np.allclose(geometry.origin, g.origin, atol=1e-3)
        and np.allclose(geometry.direction, g.direction, atol=1e-4)
    ):
        raise InvalidScanError(
            f"{where}: the labels' geometry must be the series' grid {g!r}; got {geometry!r} "
            "(put them on the series' grid first, e.g. with ctflow.labels.labels_on_grid)"
        )


def write_dicom_seg(
    path: str | os.PathLike[str],
    labels: Any,
    series_folder: str | os.PathLike[str],
    names: Sequence[str] | Mapping[int, str] | None = None,
    *,
    geometry: Geometry | None = None,
    series_uid: str | None = None,
    segmentation_type: str = "BINARY",
    description: str = "ctflow segmentation",
    series_number: int = 99,
    omit_empty_frames: bool = True,
) -> Path:
    """Write a label map on a DICOM series' grid as a DICOM SEG referencing that series.

    Parameters
    ----------
    path : path
        The SEG file to write (its folder is created; the file is written under a temporary
        name and renamed, so a crash never leaves half a file).
    labels : ndarray (Z, Y, X) of integers
        Labels on the series' grid as ctflow reads it (slice k = the k-th slice along the
        normal); 0 = background. One segment per value present.
    series_folder : path
        The folder of the segmented DICOM series (read from its headers only).
    names : sequence of str or mapping int -> str, optional
        Segment names (SegmentLabel), one per label value present in increasing order, or by
        value; default ``"label <value>"``.
    geometry : Geometry, optional
        The labels' geometry: when given it must be the series' grid (a safety check).
    series_uid : str, optional
        The series to reference when the folder holds several (default: the one
        :func:`~ctflow.io.dicom.read_dicom_series` would read).
    segmentation_type : {"BINARY", "LABELMAP"}
        BINARY (segment numbers 1..K, the label values in the segment descriptions; read by
        every SEG reader) or LABELMAP (segment number = label value; DICOM 2024+ readers).
    description : str
        ContentDescription of the SEG.
    series_number : int
        SeriesNumber of the new SEG series.
    omit_empty_frames : bool, default True
        Leave out the planes where a segment has no voxel (a sparse SEG).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    MissingDependencyError
        highdicom is not installed (``pip install 'ctflow[seg]'``).
    InvalidScanError
        Labels not on the series' grid, a series whose slices lack the UIDs a SEG references,
        highdicom refusing the series.
    InvalidParameterError
        Bad labels (not integers, negative, no label at all), names or segmentation type.

    Examples
    --------
    >>> import tempfile, numpy as np, highdicom
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.dicom_writer import write_dicom_series
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_dicom_series(folder, np.zeros((2, 4, 4), np.int16), Geometry((1.0, 1.0, 1.0)))
    >>> labels = np.zeros((2, 4, 4), np.uint8)
    >>> labels[0, :2], labels[1, 2:] = 3, 9
    >>> seg = highdicom.seg.segread(write_dicom_seg(f"{tempfile.mkdtemp()}/s.dcm", labels, folder))
    >>> [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    ['label 3', 'label 9']
    >>> seg.get_segment_description(1).algorithm_identification[0].AlgorithmName
    'ctflow'
    """
    where = "write_dicom_seg"
    hd = _highdicom(where)
    as_choice(segmentation_type, ("BINARY", "LABELMAP"), "segmentation_type", where)
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InvalidParameterError(f"{where}: labels must be (Z, Y, X); got shape {arr.shape}")
    values = to_labels(arr, where)
    grid = _series_grid(series_folder, where, series_uid)
    _check_grid(values, geometry, grid, where)
    present = np.unique(values)
    present = present[present > 0]
    if present.size == 0:
        raise InvalidParameterError(f"{where}: the labels hold no label (all 0): nothing to write")
    segment_names = _segment_names(names, present, where)
    sources = _source_datasets(grid, where)
    if segmentation_type == "BINARY":
        lut = np.zeros(int(present.max()) + 1, np.uint16)
        lut[present] = np.arange(1, present.size + 1)
        pixels, numbers = lut[values], list(range(1, present.size + 1))
        if present.size <= 255:
            pixels = pixels.astype(np.uint8)
    else:
        pixels, numbers = values, [int(v) for v in present]
    descriptions = _descriptions(hd, numbers, present, segment_names)
    out = as_source_path(path, where)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=segmentation_type,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=int(series_number),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="ctflow",
            manufacturer_model_name="ctflow",
            software_versions=_version(),
            device_serial_number="0",
            content_description=description[:64],
            content_label="CTFLOW",
            omit_empty_frames=omit_empty_frames,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidScanError(
            f"{where}: highdicom refused the SEG for series {grid.folder} "
            f"({type(exc).__name__}: {exc})"[:800]
        ) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        seg.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _version() -> str:
    from ctflow import __version__

    return str(__version__)


def _descriptions(
    hd: Any, numbers: list[int], present: NDArray[Any], names: list[str]
) -> list[Any]:
    """Return highdicom segment descriptions: algorithm ctflow, label value in the description."""
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="ctflow", family=codes.cid7162.ArtificialIntelligence, version=_version()
    )
    out = []
    for number, value, name in zip(numbers, present.tolist(), names, strict=True):
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        description.SegmentDescription = f"{_MARK}{value}"
        out.append(description)
    return out
