"""Native DICOM CT series reader (pydicom): one folder of slices -> one int16 HU volume.

:func:`read_dicom_series` reads a folder of classic single-frame CT slices into a
:class:`~ctflow.io.scan.Scan`; :func:`scan_dicom_folder` only lists what a folder holds.
The geometry equals SimpleITK's ``ImageSeriesReader`` (GDCM) geometry for the same files.

Rules
-----
Files
    Every regular file directly in the folder is tried (any name, with or without ``.dcm``;
    sub-folders are not entered) with ``pydicom.dcmread(stop_before_pixels=True, force=False)``.
    Files that are not DICOM Part-10 files (no ``DICM`` preamble), whose header cannot be
    parsed, ``DICOMDIR`` files and DICOM objects without an image (no Rows/Columns: reports,
    structured reports ...) are skipped and listed in ``info["skipped"]`` with the reason.
    No readable DICOM file at all -> :class:`~ctflow.errors.CorruptFileError` ("no DICOM files").
Series choice
    Files are grouped by SeriesInstanceUID (an empty or missing UID is the series ``""``).
    A series is CT when its Modality is ``CT`` (or Modality is empty and the SOP class is a
    CT image storage class). Localizer files (ImageType contains ``LOCALIZER``) are always
    skipped. Among the remaining CT series the one with the most slices is read; ties go to
    the smallest SliceThickness, then to the smallest UID (string order). ``series_uid=``
    overrides the choice. When another CT series could have been read, ``info["warnings"]``
    says so (naming it). ``info["series"]`` lists every series found (with ``chosen``
    True/False), and ``info["skipped"]`` lists EVERY file of the folder that was not read, with
    its reason: not DICOM / unreadable / DICOMDIR / no image, localizer, scout (a single-slice
    series whose orientation differs from the chosen one), multi-frame, or "another series".
    A folder with no CT series -> :class:`~ctflow.errors.InvalidScanError` ("not a CT series
    (Modality MR)").
Multi-frame
    Enhanced / legacy-converted multi-frame CT (SOP class 1.2.840.10008.5.1.4.1.1.2.1 or .2.2,
    or NumberOfFrames > 1) is refused with :class:`~ctflow.errors.UnsupportedFormatError`:
    its geometry lives in per-frame functional groups, which this reader does not parse, and
    such files are often derived maps that are not HU (the real perfusion map in the test data
    is uint16 blood flow without a rescale). Beside classic slices it is skipped and reported.
Slice order and spacing
    Slices are sorted by ImagePositionPatient projected on the slice normal
    ``n = row_cosine x column_cosine`` (never by file name or InstanceNumber). The z spacing
    is the median step between sorted positions, NOT SliceThickness. Errors
    (:class:`~ctflow.errors.InvalidScanError`, naming the files): two slices at the same
    position (steps < 0.01 mm); missing slices (a step > 1.5 x the median step); uneven
    spacing (``|step - median| > max(0.01 mm, 1 % of the median)``); slice origins drifting
    off the normal line by more than a tenth of a pixel (gantry tilt / sheared stack, which
    an orthogonal :class:`~ctflow.geometry.Geometry` cannot represent). With
    ``allow_uneven=True`` (explained in ``info["warnings"]``): missing slices and uneven
    spacing are RESAMPLED onto a regular grid with the median step, starting at the first
    slice and stopping at the last (linear interpolation between the two nearest slices
    along the normal, rounded to int16 HU; ``info["resampled"]`` gives the slice counts), so
    every voxel keeps its true world position; drifting origins are read as an orthogonal
    grid (approximate: the drift is ignored). A single slice takes its z spacing from
    SpacingBetweenSlices (as GDCM), else SliceThickness (GDCM would say 1 mm), else 1 mm.
    Mixed Rows/Columns, mixed ImageOrientationPatient, mixed PixelSpacing, missing geometry
    tags, non-positive PixelSpacing and degenerate orientation cosines are InvalidScanError.
Geometry, in ctflow's (z, y, x) convention (``world = origin + direction @ (spacing * v)``)
    voxel axis x (columns) runs along the row cosine ``IOP[0:3]``, voxel axis y (rows) along
    the column cosine ``IOP[3:6]``, voxel axis z along ``n``; origin is the
    ImagePositionPatient of the first sorted slice; spacing is (median step, PixelSpacing[0]
    (between rows), PixelSpacing[1] (between columns)). All vectors are reversed to (z, y, x).
Pixels
    Uncompressed explicit / implicit VR little-endian slices are read straight from the file:
    the header pass (pydicom, ``stop_before_pixels``) records where the PixelData value
    starts, and the bytes go into a numpy array with ``readinto`` (GIL released; no second
    pydicom parse: 20 real 512x512 slices in 28 ms instead of 70 ms). Unused high bits are
    masked / sign-extended exactly as pydicom does. Every other transfer syntax (deflated, big
    endian, JPEG 2000, JPEG lossless, JPEG-LS, RLE) goes through ``Dataset.pixel_array``
    (pylibjpeg / openjpeg / libjpeg / RLE plugins). Those decoders hold the GIL (measured: 20
    real JPEG 2000 slices take 0.46 s on 1 and on 2 threads, with pylibjpeg and with Pillow),
    so compressed series gain nothing from threads; use processes (e.g. the Dask engine) for
    DICOM-heavy datasets. MONOCHROME1 slices are taken as stored (the rescale gives HU either
    way); colour images are refused.
Padding and rescale
    Stored voxels equal to PixelPaddingValue (or within [PixelPaddingValue,
    PixelPaddingRangeLimit]) become -1000 HU (air); their count is ``info["padding_voxels"]``.
    Each slice gets its OWN RescaleSlope / RescaleIntercept (defaults 1 / 0). The volume is
    int16 HU when every slope and intercept is an integer and all HU fit in int16; otherwise
    float32 (computed in float64 per slice, then rounded once). A header claiming more than
    4 GiB of int16 voxels is refused before anything is allocated.

Every error is a ctflow error (:mod:`ctflow.errors`) that names the folder or file.

Examples
--------
>>> import shutil, tempfile
>>> from pydicom.data import get_testdata_file
>>> folder = tempfile.mkdtemp()
>>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), folder)
>>> scan = read_dicom_series(folder)
>>> scan.shape, scan.images.dtype.name, scan.geometry.spacing.round(4).tolist()
((1, 128, 128), 'int16', [5.0, 0.6615, 0.6615])
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry
from ctflow.io.scan import Scan

__all__ = ["SeriesInfo", "SeriesList", "read_dicom_series", "scan_dicom_folder"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
_MULTIFRAME_CT = (ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)
_CT_CLASSES = (CT_IMAGE_STORAGE, *_MULTIFRAME_CT)
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

_MAX_BYTES = 4 * 2**30  # refuse int16 volumes larger than this
_POS_TOL_MM = 0.01  # duplicate positions / absolute spacing tolerance
_REL_TOL = 0.01  # relative spacing tolerance (1 % of the median step)
_GAP_FACTOR = 1.5  # a step this many times the median means missing slice(s)
_DRIFT_PIXELS = 0.1  # allowed in-plane drift of slice origins, in pixels
_COSINE_TOL = 0.01  # allowed deviation of IOP cosines from unit length / orthogonality
_AIR_HU = -1000


# ------------------------------------------------------------------------------------------
# header facts
# ------------------------------------------------------------------------------------------
@dataclass
class _Header:
    """What the reader needs from one file's header, as plain Python values."""

    path: Path
    series_uid: str = ""
    modality: str = ""
    sop_class: str = ""
    transfer_syntax: str = ""
    image_type: tuple[str, ...] = ()
    description: str = ""
    n_frames: int = 1
    rows: int | None = None
    cols: int | None = None
    position: NDArray[np.float64] | None = None  # ImagePositionPatient (x, y, z)
    orientation: NDArray[np.float64] | None = None  # ImageOrientationPatient (6,)
    pixel_spacing: NDArray[np.float64] | None = None  # (between rows, between columns)
    slice_thickness: float | None = None
    spacing_between: float | None = None
    slope: float | None = None
    intercept: float | None = None
    samples: int | None = None
    photometric: str = ""
    problems: dict[str, str] = field(default_factory=dict)
    dataset: Any = None  # the header-only pydicom dataset (everything before PixelData)
    pixel_offset: int | None = None  # file offset of uncompressed little-endian PixelData
    pixel_length: int = 0  # its length as the element header says

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_multiframe(self) -> bool:
        return self.n_frames > 1 or self.sop_class in _MULTIFRAME_CT

    @property
    def is_ct(self) -> bool:
        if self.modality:
            return self.modality.upper() == "CT"
        return self.sop_class in _CT_CLASSES


def _is_empty(raw: Any) -> bool:
    if raw is None:
        return True
    if isinstance(raw, str | bytes):
        return raw.strip() == "" if isinstance(raw, str) else len(raw) == 0
    try:
        return len(raw) == 0
    except TypeError:
        return False


def _field(ds: Any, keyword: str, convert: Callable[[Any], Any], problems: dict[str, str]) -> Any:
    """``convert(ds.<keyword>)``, None when absent or empty, the problem recorded when bad."""
    try:
        if keyword not in ds:
            return None
        raw = ds[keyword].value
        if _is_empty(raw):
            return None
        return convert(raw)
    except Exception as exc:  # pydicom raises many types for malformed values
        problems[keyword] = f"{type(exc).__name__}: {exc}"[:200]
        return None


def _as_list(raw: Any) -> list[Any]:
    if isinstance(raw, str | bytes) or not hasattr(raw, "__len__"):
        return [raw]
    return list(raw)


def _floats(n: int) -> Callable[[Any], NDArray[np.float64]]:
    def convert(raw: Any) -> NDArray[np.float64]:
        values = _as_list(raw)
        if len(values) != n:
            raise ValueError(f"expected {n} numbers, got {len(values)}: {values!r}")
        arr = np.array([float(v) for v in values], dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"values must be finite, got {arr.tolist()}")
        return arr

    return convert


def _float(raw: Any) -> float:
    value = float(_as_list(raw)[0])
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    return value


def _int(raw: Any) -> int:
    return int(_as_list(raw)[0])


def _text(raw: Any) -> str:
    return str(raw).strip()


def _strings(raw: Any) -> tuple[str, ...]:
    return tuple(str(v).strip().upper() for v in _as_list(raw))


def _read_header(path: Path) -> tuple[_Header | None, str]:
    """Header facts of one file, or (None, reason it is skipped)."""
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=False)
            pixel_at = fh.tell()  # pydicom stops at the start of the PixelData element
            pixel_head = fh.read(12)
    except InvalidDicomError:
        return None, "not a DICOM file (no 'DICM' preamble / file meta header)"
    except Exception as exc:  # truncated or garbled header: pydicom raises many types
        return None, f"unreadable DICOM header ({type(exc).__name__}: {str(exc)[:150]})"
    problems: dict[str, str] = {}
    meta = getattr(ds, "file_meta", None)
    media_class = _field(meta, "MediaStorageSOPClassUID", _text, problems) if meta else None
    if media_class == _MEDIA_DIRECTORY or path.name.upper() == "DICOMDIR":
        return None, "DICOMDIR (a media directory file, not an image)"
    h = _Header(path=path, problems=problems)
    h.series_uid = _field(ds, "SeriesInstanceUID", _text, problems) or ""
    h.modality = _field(ds, "Modality", _text, problems) or ""
    h.sop_class = _field(ds, "SOPClassUID", _text, problems) or media_class or ""
    h.transfer_syntax = (_field(meta, "TransferSyntaxUID", _text, problems) if meta else "") or ""
    h.image_type = _field(ds, "ImageType", _strings, problems) or ()
    h.description = _field(ds, "SeriesDescription", _text, problems) or ""
    h.n_frames = _field(ds, "NumberOfFrames", _int, problems) or 1
    h.rows = _field(ds, "Rows", _int, problems)
    h.cols = _field(ds, "Columns", _int, problems)
    if h.rows is None and h.cols is None and "Rows" not in problems:
        return None, f"no image in this DICOM object (SOP class {h.sop_class or 'unknown'})"
    h.position = _field(ds, "ImagePositionPatient", _floats(3), problems)
    h.orientation = _field(ds, "ImageOrientationPatient", _floats(6), problems)
    h.pixel_spacing = _field(ds, "PixelSpacing", _floats(2), problems)
    h.slice_thickness = _field(ds, "SliceThickness", _float, problems)
    h.spacing_between = _field(ds, "SpacingBetweenSlices", _float, problems)
    h.slope = _field(ds, "RescaleSlope", _float, problems)
    h.intercept = _field(ds, "RescaleIntercept", _float, problems)
    h.samples = _field(ds, "SamplesPerPixel", _int, problems)
    h.photometric = (_field(ds, "PhotometricInterpretation", _text, problems) or "").upper()
    h.dataset = ds
    _locate_native_pixels(h, pixel_at, pixel_head)
    return h, ""


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def _locate_native_pixels(h: _Header, at: int, head: bytes) -> None:
    """Record where uncompressed little-endian pixel bytes sit in the file (fast path).

    Only plain explicit / implicit VR little endian files qualify (not deflated, not big
    endian, not encapsulated); anything unexpected leaves ``pixel_offset`` None, and the slice
    is then read through pydicom.
    """
    if len(head) < 12 or head[:4] != _PIXEL_DATA_TAG:
        return
    if h.transfer_syntax == ExplicitVRLittleEndian:
        if head[4:6] not in (b"OW", b"OB"):
            return
        length, offset = int.from_bytes(head[8:12], "little"), at + 12
    elif h.transfer_syntax == ImplicitVRLittleEndian:
        if head[4:6] in (b"OW", b"OB"):  # explicit VR data under an implicit VR header
            return
        length, offset = int.from_bytes(head[4:8], "little"), at + 8
    else:
        return
    if length == 0xFFFFFFFF:  # undefined length: encapsulated data, not native
        return
    h.pixel_offset, h.pixel_length = offset, length


# ------------------------------------------------------------------------------------------
# folder listing
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a DICOM folder (from headers only; no pixels read).

    Attributes
    ----------
    uid : str
        SeriesInstanceUID (``""`` when the files carry none).
    n_files : int
        Number of files in the series.
    modality, description : str
        Modality and SeriesDescription of the first file (by name).
    image_type : tuple of str
        ImageType of the first file, upper case (e.g. ``("ORIGINAL", "PRIMARY", "AXIAL")``).
    rows, cols : int or None
        Rows and Columns of the first file.
    files : tuple of str
        Paths of the series' files, sorted by name.
    sop_class : str
        SOPClassUID of the first file.
    n_frames : int
        Largest NumberOfFrames (1 for classic single-frame slices).
    n_localizers : int
        Files whose ImageType contains ``LOCALIZER``.
    slice_thickness : float or None
        SliceThickness of the first file.
    orientation : tuple of 6 floats or None
        ImageOrientationPatient of the first file.
    """

    uid: str
    n_files: int
    modality: str
    description: str
    image_type: tuple[str, ...]
    rows: int | None
    cols: int | None
    files: tuple[str, ...]
    sop_class: str = ""
    n_frames: int = 1
    n_localizers: int = 0
    slice_thickness: float | None = None
    orientation: tuple[float, ...] | None = None

    @property
    def is_ct(self) -> bool:
        """Modality CT (or no Modality and a CT SOP class)."""
        if self.modality:
            return self.modality.upper() == "CT"
        return self.sop_class in _CT_CLASSES

    @property
    def is_multiframe(self) -> bool:
        """Enhanced / legacy-converted multi-frame CT, or NumberOfFrames > 1."""
        return self.n_frames > 1 or self.sop_class in _MULTIFRAME_CT

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the file list)."""
        return {
            "uid": self.uid,
            "n_files": self.n_files,
            "modality": self.modality,
            "description": self.description,
            "image_type": list(self.image_type),
            "rows": self.rows,
            "cols": self.cols,
            "sop_class": self.sop_class,
            "n_frames": self.n_frames,
            "n_localizers": self.n_localizers,
            "slice_thickness": self.slice_thickness,
        }


class SeriesList(list[SeriesInfo]):
    """The series of a folder (a list of :class:`SeriesInfo`, sorted by UID) plus what was
    skipped: ``skipped`` is a list of ``{"file": path, "reason": text}``, ``folder`` the path.
    """

    def __init__(self, items: Sequence[SeriesInfo], folder: str, skipped: list[dict[str, str]]):
        super().__init__(items)
        self.folder = folder
        self.skipped = skipped


def _series_info(uid: str, headers: list[_Header]) -> SeriesInfo:
    first = headers[0]
    orientation = None if first.orientation is None else tuple(first.orientation.tolist())
    return SeriesInfo(
        uid=uid,
        n_files=len(headers),
        modality=first.modality,
        description=first.description,
        image_type=first.image_type,
        rows=first.rows,
        cols=first.cols,
        files=tuple(str(h.path) for h in headers),
        sop_class=first.sop_class,
        n_frames=max(h.n_frames for h in headers),
        n_localizers=sum(h.is_localizer for h in headers),
        slice_thickness=first.slice_thickness,
        orientation=orientation,
    )


def _check_folder(folder: str | os.PathLike[str], where: str) -> Path:
    p = Path(folder)
    if not p.exists():
        raise CorruptFileError(f"{where}: {p}: no such folder")
    if not p.is_dir():
        raise InvalidParameterError(
            f"{where}: folder must be a directory of DICOM slices; got the file {p}"
        )
    return p


def _scan(folder: Path) -> tuple[dict[str, list[_Header]], list[dict[str, str]]]:
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise CorruptFileError(f"{folder}: cannot list the folder ({exc})") from exc
    groups: dict[str, list[_Header]] = {}
    skipped: list[dict[str, str]] = []
    for name in names:
        path = folder / name
        if not path.is_file():
            continue
        header, reason = _read_header(path)
        if header is None:
            skipped.append({"file": str(path), "reason": reason})
        else:
            groups.setdefault(header.series_uid, []).append(header)
    return groups, skipped


def scan_dicom_folder(folder: str | os.PathLike[str]) -> SeriesList:
    """List the DICOM series of a folder from the file headers (no pixel data is read).

    Parameters
    ----------
    folder : path
        A folder of DICOM files (non-recursive; any file names).

    Returns
    -------
    SeriesList
        A list of :class:`SeriesInfo` (one per SeriesInstanceUID, sorted by UID, localizer and
        non-CT series included) with ``.skipped``: the files that are not DICOM images and why.

    Raises
    ------
    CorruptFileError
        The folder does not exist or cannot be listed.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pydicom.data import get_testdata_file
    >>> folder = tempfile.mkdtemp()
    >>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), folder)
    >>> series = scan_dicom_folder(folder)
    >>> [(s.modality, s.n_files, s.rows, s.cols) for s in series], series.skipped
    ([('CT', 1, 128, 128)], [])
    """
    p = _check_folder(folder, "scan_dicom_folder")
    groups, skipped = _scan(p)
    return SeriesList([_series_info(u, groups[u]) for u in sorted(groups)], str(p), skipped)


# ------------------------------------------------------------------------------------------
# series choice
# ------------------------------------------------------------------------------------------
def _choose(
    folder: Path,
    groups: dict[str, list[_Header]],
    series_uid: str | None,
    skipped: list[dict[str, str]],
) -> str:
    """UID of the series to read (see the module rules); records skipped scouts."""
    if series_uid is not None:
        if series_uid not in groups:
            raise InvalidParameterError(
                f"read_dicom_series: series_uid {series_uid!r} is not in {folder}; "
                f"found {sorted(groups)}"
            )
        return series_uid

    def slices(uid: str) -> list[_Header]:
        return [h for h in groups[uid] if not h.is_localizer]

    ct = [u for u in groups if any(h.is_ct for h in groups[u])]
    candidates = [u for u in ct if slices(u) and not any(h.is_multiframe for h in groups[u])]
    if not candidates:
        multiframe = [u for u in ct if any(h.is_multiframe for h in groups[u])]
        if multiframe:
            return multiframe[0]  # refused with a clear message by the caller
        if ct:
            raise InvalidScanError(
                f"{folder}: holds only localizer images (ImageType LOCALIZER); "
                "an axial CT series is needed"
            )
        found = sorted({h.modality or "none" for hs in groups.values() for h in hs})
        raise InvalidScanError(
            f"{folder}: not a CT series (Modality {', '.join(found)}); ctflow reads CT only"
        )

    def thickness(uid: str) -> float:
        t = slices(uid)[0].slice_thickness
        return t if t is not None and t > 0 else math.inf

    chosen = min(candidates, key=lambda u: (-len(slices(u)), thickness(u), u))
    main_orientation = slices(chosen)[0].orientation
    for uid in candidates:
        if uid == chosen or len(slices(uid)) != 1:
            continue
        o = slices(uid)[0].orientation
        if (
            main_orientation is not None
            and o is not None
            and not np.allclose(o, main_orientation, atol=1e-3)
        ):
            for h in slices(uid):
                reason = f"scout: single-slice series {uid} whose orientation differs from the "
                skipped.append({"file": str(h.path), "reason": reason + "main series"})
    return chosen


# ------------------------------------------------------------------------------------------
# validation and geometry
# ------------------------------------------------------------------------------------------
def _require(h: _Header, keyword: str, value: Any, why: str) -> Any:
    if keyword in h.problems:
        raise InvalidScanError(f"{h.path}: cannot read {keyword} ({h.problems[keyword]})")
    if value is None:
        raise InvalidScanError(f"{h.path}: missing {keyword}; {why}")
    return value


def _validate(folder: Path, slices: list[_Header]) -> None:
    """Per-file and cross-file header checks for the series about to be read."""
    first = slices[0]
    for h in slices:
        if h.is_multiframe:
            raise UnsupportedFormatError(
                f"{h.path}: multi-frame CT (SOP class {h.sop_class or 'unknown'}, "
                f"NumberOfFrames {h.n_frames}) is not supported: ctflow reads classic "
                "single-frame CT slices (Enhanced CT Image Storage keeps its geometry in "
                "per-frame functional groups, which are not parsed; such files are often "
                "derived maps, not HU). Convert it to single-frame slices first"
            )
        rows = _require(h, "Rows", h.rows, "every slice needs its image size")
        cols = _require(h, "Columns", h.cols, "every slice needs its image size")
        if rows <= 0 or cols <= 0:
            raise InvalidScanError(
                f"{h.path}: Rows and Columns must be positive; got {rows} x {cols}"
            )
        _require(h, "ImagePositionPatient", h.position, "a slice cannot be placed without it")
        _require(h, "ImageOrientationPatient", h.orientation, "a slice needs its orientation")
        ps = _require(h, "PixelSpacing", h.pixel_spacing, "in-plane spacing is unknown")
        if np.any(ps <= 0):
            raise InvalidScanError(
                f"{h.path}: PixelSpacing must be 2 positive numbers (between rows, between "
                f"columns) in mm; got {tuple(ps.tolist())}"
            )
        for keyword in ("RescaleSlope", "RescaleIntercept", "SamplesPerPixel"):
            if keyword in h.problems:
                raise InvalidScanError(f"{h.path}: cannot read {keyword} ({h.problems[keyword]})")
        if h.slope == 0:
            raise InvalidScanError(f"{h.path}: RescaleSlope must be non-zero; got 0")
        if h.samples not in (None, 1) or h.photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
            raise UnsupportedFormatError(
                f"{h.path}: CT slices must be grayscale (SamplesPerPixel 1, MONOCHROME1/2); "
                f"got SamplesPerPixel {h.samples}, PhotometricInterpretation {h.photometric!r}"
            )
    odd = [h for h in slices if (h.rows, h.cols) != (first.rows, first.cols)]
    if odd:
        raise InvalidScanError(
            f"{folder}: all slices of a series must have the same Rows x Columns; got "
            f"{first.rows}x{first.cols} ({first.path.name}) and {odd[0].rows}x{odd[0].cols} "
            f"({odd[0].path.name})"
        )
    assert first.orientation is not None and first.pixel_spacing is not None
    for h in slices:
        assert h.orientation is not None and h.pixel_spacing is not None
        if not np.allclose(h.orientation, first.orientation, atol=1e-4):
            raise InvalidScanError(
                f"{folder}: all slices must share ImageOrientationPatient; got "
                f"{first.orientation.tolist()} ({first.path.name}) and "
                f"{h.orientation.tolist()} ({h.path.name})"
            )
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, rtol=1e-5, atol=1e-4):
            raise InvalidScanError(
                f"{folder}: all slices must share PixelSpacing; got "
                f"{first.pixel_spacing.tolist()} ({first.path.name}) and "
                f"{h.pixel_spacing.tolist()} ({h.path.name})"
            )


def _cosines(h: _Header) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Orthonormal (row cosine, column cosine, normal), all (x, y, z)."""
    assert h.orientation is not None
    r, c = h.orientation[:3], h.orientation[3:]
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    dot = float(r @ c) / (nr * nc) if nr > 0 and nc > 0 else 1.0
    if abs(nr - 1) > _COSINE_TOL or abs(nc - 1) > _COSINE_TOL or abs(dot) > _COSINE_TOL:
        raise InvalidScanError(
            f"{h.path}: ImageOrientationPatient must be two orthogonal unit vectors (row "
            f"cosine, column cosine); got {h.orientation.tolist()} (norms {nr:.4g}, {nc:.4g}, "
            f"cosine between them {dot:.4g})"
        )
    r = r / nr
    c = c - (c @ r) * r
    c = c / np.linalg.norm(c)
    return r, c, np.cross(r, c)


def _where(h: _Header) -> str:
    assert h.position is not None
    return f"{h.path.name} (ImagePositionPatient {[round(v, 4) for v in h.position.tolist()]})"


_Sorted = tuple[
    list[_Header],
    float,
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64] | None,
]


def _sort_and_space(
    folder: Path, slices: list[_Header], allow_uneven: bool, info: dict[str, Any]
) -> _Sorted:
    """Sort along the normal; return (sorted slices, z spacing, r, c, n, positions).

    ``positions`` (each slice's distance along n) is not None when the slices must be
    resampled onto a regular grid (uneven spacing or missing slices, ``allow_uneven=True``).
    """
    r, c, n = _cosines(slices[0])
    pos = np.array([h.position for h in slices], dtype=np.float64)
    dist = pos @ n
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    pos, dist = pos[order], dist[order]
    warnings: list[str] = info["warnings"]
    if len(slices) == 1:
        h = slices[0]
        for value, source in (
            (h.spacing_between, "SpacingBetweenSlices"),
            (h.slice_thickness, "SliceThickness"),
        ):
            if value is not None and value > 0:
                info["z_spacing_source"] = source
                return slices, float(value), r, c, n, None
        info["z_spacing_source"] = "default"
        warnings.append("single slice without SpacingBetweenSlices/SliceThickness: z spacing 1 mm")
        return slices, 1.0, r, c, n, None
    info["z_spacing_source"] = "positions"
    steps = np.diff(dist)
    k = int(np.argmin(steps))
    if steps[k] < _POS_TOL_MM:
        raise InvalidScanError(
            f"{folder}: two slices at the same position ({dist[k]:.3f} mm along the slice "
            f"normal): {_where(slices[k])} and {_where(slices[k + 1])}; a series needs one "
            "slice per position (duplicate files, or several acquisitions in one series?)"
        )
    step = float(np.median(steps))
    tol = max(_POS_TOL_MM, _REL_TOL * step)
    dev = np.abs(steps - step)
    k = int(np.argmax(dev))
    problem = ""
    if steps[k] > _GAP_FACTOR * step:
        problem = (
            f"missing slice(s): a gap of {steps[k]:.4g} mm ({steps[k] / step:.2f} x the median "
            f"step {step:.4g} mm) between {_where(slices[k])} and {_where(slices[k + 1])}"
        )
    elif dev[k] > tol:
        problem = (
            f"uneven slice spacing: step {steps[k]:.4g} mm between {_where(slices[k])} and "
            f"{_where(slices[k + 1])} differs from the median step {step:.4g} mm by more than "
            f"{tol:.3g} mm"
        )
    positions = None
    if problem:
        if not allow_uneven:
            raise InvalidScanError(
                f"{folder}: {problem}; pass allow_uneven=True to resample it onto a regular grid"
            )
        positions = dist - dist[0]
        n_out = int(np.floor(positions[-1] / step + 1e-3)) + 1
        warnings.append(
            f"{problem}; resampled onto a regular grid of {n_out} slices {step:.4g} mm apart "
            f"(linear interpolation along the slice normal, from {len(slices)} slices)"
        )
    # in-plane drift of slice origins off the line through the first origin along n
    offset = pos - pos[0]
    drift = np.hypot(offset @ r, offset @ c)
    k = int(np.argmax(drift))
    assert slices[0].pixel_spacing is not None
    limit = _DRIFT_PIXELS * float(slices[0].pixel_spacing.min())
    if drift[k] > max(_POS_TOL_MM, limit):
        problem = (
            f"slice origins drift {drift[k]:.4g} mm in-plane off the slice normal (gantry tilt "
            f"or sheared stack) at {_where(slices[k])}; ctflow's orthogonal Geometry cannot "
            "represent it"
        )
        if not allow_uneven:
            raise InvalidScanError(
                f"{folder}: {problem}; pass allow_uneven=True to read it as an orthogonal grid"
            )
        warnings.append(f"{problem}; read as an orthogonal grid")
    return slices, step, r, c, n, positions


# ------------------------------------------------------------------------------------------
# pixels
# ------------------------------------------------------------------------------------------
class _Int16Overflow(Exception):
    """Internal: a slice's HU do not fit int16 (the volume is redone as float32)."""


def _padding_range(ds: Any, path: Path) -> tuple[int, int] | None:
    problems: dict[str, str] = {}
    value = _field(ds, "PixelPaddingValue", _int, problems)
    limit = _field(ds, "PixelPaddingRangeLimit", _int, problems)
    if problems:
        key = next(iter(problems))
        raise InvalidScanError(f"{path}: cannot read {key} ({problems[key]})")
    if value is None:
        return None
    if limit is None:
        return value, value
    return min(value, limit), max(value, limit)


def _pixel_format(ds: Any, h: _Header) -> tuple[np.dtype[Any], int, int]:
    """(little-endian dtype, BitsAllocated, BitsStored) of uncompressed pixels."""
    problems: dict[str, str] = {}
    bits = _field(ds, "BitsAllocated", _int, problems)
    stored = _field(ds, "BitsStored", _int, problems)
    representation = _field(ds, "PixelRepresentation", _int, problems)
    stored = bits if stored is None else stored
    if (
        problems
        or bits not in (8, 16, 32)
        or not 1 <= stored <= bits
        or representation not in (None, 0, 1)
    ):
        raise CorruptFileError(
            f"{h.path}: uncompressed pixels need BitsAllocated 8, 16 or 32, 1 <= BitsStored <= "
            f"BitsAllocated and PixelRepresentation 0 or 1; got BitsAllocated {bits}, "
            f"BitsStored {stored}, PixelRepresentation {representation}"
            + (f" ({'; '.join(f'{k}: {v}' for k, v in problems.items())})" if problems else "")
        )
    assert bits is not None
    dtype = np.dtype(f"<{'i' if representation == 1 else 'u'}{bits // 8}")
    return dtype, bits, stored


def _check_length(h: _Header, n_bytes: int, rows: int, cols: int, bits: int) -> None:
    need = rows * cols * bits // 8
    if n_bytes not in (need, need + 1):
        raise CorruptFileError(
            f"{h.path}: PixelData holds {n_bytes} bytes but Rows x Columns x BitsAllocated/8 "
            f"= {rows} x {cols} x {bits // 8} = {need} (truncated or inconsistent file)"
        )


def _drop_unused_bits(arr: NDArray[Any], bits: int, stored: int) -> NDArray[Any]:
    if stored < bits:  # ignore unused high bits (mask / sign-extend), as pydicom does
        shift = bits - stored
        arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr


def _native_pixels(ds: Any, h: _Header, rows: int, cols: int) -> NDArray[Any]:
    """Uncompressed little-endian pixels of a dataset pydicom read whole."""
    dtype, bits, stored = _pixel_format(ds, h)
    data = ds.PixelData
    _check_length(h, len(data), rows, cols, bits)
    arr = np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    return _drop_unused_bits(arr, bits, stored)


def _read_native_pixels(h: _Header, rows: int, cols: int) -> NDArray[Any]:
    """Uncompressed pixels read straight from the file into numpy (``readinto``, no GIL)."""
    assert h.pixel_offset is not None
    dtype, bits, stored = _pixel_format(h.dataset, h)
    arr = np.empty((rows, cols), dtype)
    try:
        with open(h.path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            _check_length(h, max(0, min(h.pixel_length, size - h.pixel_offset)), rows, cols, bits)
            fh.seek(h.pixel_offset)
            mv = arr.data.cast("B")
            pos = 0
            while pos < len(mv):
                n = fh.readinto(mv[pos:])
                if not n:
                    break
                pos += n
    except OSError as exc:
        raise CorruptFileError(f"{h.path}: cannot read the pixel data ({exc})") from exc
    if pos != len(mv):
        _check_length(h, pos, rows, cols, bits)  # the file shrank while being read
    return _drop_unused_bits(arr, bits, stored)


def _stored_pixels(h: _Header, rows: int, cols: int) -> tuple[NDArray[Any], tuple[int, int] | None]:
    """Stored (pre-rescale) values of one slice, and its padding range."""
    if h.pixel_offset is not None and h.dataset is not None:
        return _read_native_pixels(h, rows, cols), _padding_range(h.dataset, h.path)
    try:
        ds = pydicom.dcmread(h.path, force=False)
    except Exception as exc:
        raise CorruptFileError(
            f"{h.path}: cannot read the file ({type(exc).__name__}: {str(exc)[:150]})"
        ) from exc
    if "PixelData" not in ds:
        raise CorruptFileError(f"{h.path}: no PixelData element (truncated file?)")
    padding = _padding_range(ds, h.path)
    ts = UID(h.transfer_syntax or ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        if ts.is_transfer_syntax and ts.is_little_endian and not ts.is_encapsulated:
            arr = _native_pixels(ds, h, rows, cols)
        else:
            arr = ds.pixel_array
    except CTFlowError:
        raise
    except Exception as exc:  # decoder plugins raise many types on bad data
        raise CorruptFileError(
            f"{h.path}: cannot decode the pixel data ({ts.name or 'unknown transfer syntax'}: "
            f"{type(exc).__name__}: {str(exc)[:150]})"
        ) from exc
    if arr.shape != (rows, cols) or arr.dtype.kind not in "iu":
        raise CorruptFileError(
            f"{h.path}: decoded pixel data must be {rows} x {cols} integers; got shape "
            f"{arr.shape}, dtype {arr.dtype}"
        )
    return arr, padding


def _padding_mask(arr: NDArray[Any], padding: tuple[int, int] | None) -> NDArray[np.bool_] | None:
    if padding is None:
        return None
    info = np.iinfo(arr.dtype)
    lo, hi = max(padding[0], int(info.min)), min(padding[1], int(info.max))
    if lo > hi:
        return None
    return (arr >= lo) & (arr <= hi)


def _slice_hu(h: _Header, rows: int, cols: int, dtype: type) -> tuple[NDArray[Any], int]:
    """HU of one slice (int32/int64 values when ``dtype`` is int16, else float64); padding."""
    stored, padding = _stored_pixels(h, rows, cols)
    slope = 1.0 if h.slope is None else h.slope
    intercept = 0.0 if h.intercept is None else h.intercept
    mask = _padding_mask(stored, padding)
    hu: NDArray[Any]
    if dtype is np.int16:
        if abs(slope) > 2**20 or abs(intercept) > 2**30:
            raise _Int16Overflow  # cannot be int16 HU (and could overflow int64)
        wide = np.int64 if stored.dtype.itemsize > 2 or abs(slope) > 2**14 else np.int32
        hu = stored.astype(wide)
        if slope != 1:
            np.multiply(hu, int(slope), out=hu)
        if intercept != 0:
            np.add(hu, int(intercept), out=hu)
    else:
        hu = stored.astype(np.float64) * slope + intercept
    n_padding = 0
    if mask is not None:
        hu[mask] = _AIR_HU
        n_padding = int(np.count_nonzero(mask))
    if dtype is np.int16 and (int(hu.min()) < -32768 or int(hu.max()) > 32767):
        raise _Int16Overflow
    return hu, n_padding


def _decode(slices: list[_Header], rows: int, cols: int, dtype: type) -> tuple[NDArray[Any], int]:
    """Decode all slices into a new (n, rows, cols) HU volume of ``dtype``; padding count."""
    out: NDArray[Any] = np.empty((len(slices), rows, cols), dtype=dtype)
    n_padding = 0
    for k, h in enumerate(slices):
        hu, n = _slice_hu(h, rows, cols, dtype)
        out[k] = hu
        n_padding += n
    return out, n_padding


def _resample_slices(
    images: NDArray[Any], positions: NDArray[np.float64], step: float
) -> NDArray[Any]:
    """Slices at ``positions`` (mm along the normal, first 0) onto ``0, step, 2 step, ...``.

    Linear interpolation between the two nearest slices (no extrapolation: the grid stops at
    the last slice); int16 volumes are rounded back to int16 HU.
    """
    n_out = int(np.floor(positions[-1] / step + 1e-3)) + 1
    out = np.empty((n_out, *images.shape[1:]), images.dtype)
    last = len(positions) - 2
    for k in range(n_out):
        t = k * step
        j = min(max(int(np.searchsorted(positions, t, side="right")) - 1, 0), last)
        w = float(np.clip((t - positions[j]) / (positions[j + 1] - positions[j]), 0.0, 1.0))
        if w < 1e-6:
            out[k] = images[j]
        elif w > 1 - 1e-6:
            out[k] = images[j + 1]
        else:
            # one slice at a time in float64 (the volume itself never is)
            low, high = images[j].astype(np.float64), images[j + 1].astype(np.float64)
            mixed = low + (high - low) * w
            out[k] = np.rint(mixed) if out.dtype == np.int16 else mixed
    return out


# ------------------------------------------------------------------------------------------
# the reader
# ------------------------------------------------------------------------------------------
def read_dicom_series(
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    allow_uneven: bool = False,
) -> Scan:
    """Read a folder of CT DICOM slices into one (z, y, x) HU volume with its geometry.

    The rules (which files, which series, slice order, spacing, geometry, rescale, padding)
    are in the module docstring of :mod:`ctflow.io.dicom`.

    Parameters
    ----------
    folder : path
        A folder of DICOM files (non-recursive; any file names).
    series_uid : str, optional
        SeriesInstanceUID to read when the folder holds several series (default: the CT
        series with the most slices; ties -> thinnest SliceThickness, then smallest UID).
    allow_uneven : bool
        Instead of refusing them, resample series with uneven spacing or missing slices onto a
        regular grid (median step, linear interpolation along the slice normal), and read
        series with drifting slice origins as an orthogonal grid; a warning goes to
        ``info["warnings"]``.

    Returns
    -------
    Scan
        ``images`` (Z, Y, X) int16 HU (float32 when a rescale is non-integral or HU leave the
        int16 range), geometry in (z, y, x) LPS mm, ``source`` the folder, and ``info`` with
        ``series_uid``, ``modality``, ``description``, ``n_slices``, ``files`` (in slice
        order), ``skipped`` (``[{"file", "reason"}]``), ``series`` (every series found),
        ``warnings``, ``z_spacing_source``, ``slice_thickness``, ``transfer_syntaxes``,
        ``padding_voxels`` (and ``resampled`` when ``allow_uneven`` resampled the slices).

    Raises
    ------
    CorruptFileError
        Missing folder, no DICOM files, unreadable or truncated pixel data.
    InvalidScanError
        No CT series, inconsistent or invalid geometry, duplicate positions, gaps, uneven
        spacing, a volume over 4 GiB.
    UnsupportedFormatError
        Multi-frame (enhanced) CT, colour images, a transfer syntax without a decoder.
    InvalidParameterError
        ``series_uid`` is not in the folder, or ``folder`` is a file.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pydicom.data import get_testdata_file
    >>> folder = tempfile.mkdtemp()
    >>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), folder)
    >>> scan = read_dicom_series(folder)
    >>> scan.shape, int(scan.images.min()), scan.info["modality"]
    ((1, 128, 128), -896, 'CT')
    """
    p = _check_folder(folder, "read_dicom_series")
    groups, skipped = _scan(p)
    if not groups:
        detail = f"; {len(skipped)} file(s) skipped, e.g. {skipped[0]}" if skipped else ""
        raise CorruptFileError(
            f"{p}: no DICOM files (no readable DICOM image in the folder{detail})"
        )
    uid = _choose(p, groups, series_uid, skipped)
    headers = groups[uid]
    if not any(h.is_ct for h in headers):
        found = sorted({h.modality or "none" for h in headers})
        raise InvalidScanError(
            f"{p}: not a CT series (Modality {', '.join(found)}) for series {uid!r}; "
            "ctflow reads CT only"
        )
    already = {d["file"] for d in skipped}
    others: list[str] = []  # other CT series that could have been read
    for u in sorted(groups):
        kept = [h for h in groups[u] if not h.is_localizer and str(h.path) not in already]
        if u != uid and any(h.is_ct and not h.is_multiframe for h in kept) and len(kept) > 1:
            others.append(f"{u or '(no UID)'} ({len(kept)} slices)")
        for h in groups[u]:
            if str(h.path) in already:
                continue
            if h.is_localizer:
                kind = "\\".join(h.image_type)
                reason = f"localizer (ImageType {kind})"
            elif u == uid:
                continue
            elif h.is_multiframe:
                reason = f"multi-frame CT (SOP class {h.sop_class}) is not supported"
            else:
                reason = (
                    f"another series ({u or 'no SeriesInstanceUID'}, Modality "
                    f"{h.modality or 'none'}, {len(groups[u])} file(s)); read with series_uid="
                )
            skipped.append({"file": str(h.path), "reason": reason})
    slices = [h for h in headers if not h.is_localizer]
    if not slices:
        raise InvalidScanError(
            f"{p}: series {uid!r} holds only localizer images (ImageType LOCALIZER); an axial "
            "CT series is needed"
        )
    _validate(p, slices)
    rows, cols = int(slices[0].rows or 0), int(slices[0].cols or 0)
    n_bytes = rows * cols * len(slices) * 2
    if n_bytes > _MAX_BYTES:
        raise InvalidScanError(
            f"{p}: the series claims {len(slices)} slices of {rows} x {cols} = "
            f"{n_bytes / 2**30:.1f} GiB as int16; ctflow refuses volumes over 4 GiB "
            "(corrupt header?)"
        )
    for ts in sorted({h.transfer_syntax for h in slices}):
        _check_decoder(p, ts)

    info: dict[str, Any] = {"format": "dicom", "reader": "ctflow.io.dicom", "warnings": []}
    if others and series_uid is None:
        info["warnings"].append(
            f"the folder holds {len(others) + 1} CT series; read {uid or '(no UID)'} "
            f"({len(slices)} slices) by the rule most slices > thinnest > smallest UID; "
            f"also found {', '.join(others)} (pass series_uid= to read another)"
        )
    slices, dz, r, c, n, positions = _sort_and_space(p, slices, allow_uneven, info)
    first = slices[0]
    assert first.position is not None and first.pixel_spacing is not None
    direction = np.column_stack([n[::-1], c[::-1], r[::-1]])
    spacing = (dz, float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))
    geometry = Geometry(spacing, first.position[::-1], direction)

    integral = all(
        float(1.0 if h.slope is None else h.slope).is_integer()
        and float(0.0 if h.intercept is None else h.intercept).is_integer()
        for h in slices
    )
    try:
        images, n_padding = _decode(slices, rows, cols, np.int16 if integral else np.float32)
    except _Int16Overflow:
        images, n_padding = _decode(slices, rows, cols, np.float32)
        info["warnings"].append("HU values leave the int16 range: the volume is float32")
    if positions is not None:
        images = _resample_slices(images, positions, dz)
        info["resampled"] = {"from_slices": len(slices), "to_slices": int(images.shape[0])}
    info.update(
        {
            "series_uid": uid,
            "modality": first.modality,
            "description": first.description,
            "image_type": list(first.image_type),
            "n_slices": len(slices),
            "files": [str(h.path) for h in slices],
            "slice_thickness": first.slice_thickness,
            "transfer_syntaxes": sorted({h.transfer_syntax for h in slices}),
            "padding_voxels": n_padding,
            "skipped": skipped,
            "series": [
                {**_series_info(u, groups[u]).as_dict(), "chosen": u == uid} for u in sorted(groups)
            ],
        }
    )
    return Scan(images, geometry, str(p), info)


def _check_decoder(folder: Path, ts: str) -> None:
    """Refuse a transfer syntax pydicom has no working decoder for, before decoding."""
    uid = UID(ts)
    if not ts or (uid.is_transfer_syntax and not uid.is_encapsulated):
        return  # native (or unknown: decided per file)
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise UnsupportedFormatError(
            f"{folder}: no pixel decoder is installed for transfer syntax {uid.name} ({ts}); "
            "install a pydicom decoder plugin for it (pylibjpeg-openjpeg, pylibjpeg-libjpeg, "
            "pylibjpeg-rle, pyjpegls or python-gdcm)"
        )
