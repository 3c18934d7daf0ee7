"""Read and check the header of one DICOM file: the facts the series reader needs.

``_read_header`` parses a file with pydicom (up to its PixelData) into a ``_Header`` of plain
Python values, records a malformed value as a problem instead of failing (only the chosen
series' problems become errors), and notes where uncompressed little-endian pixel bytes start
so that :mod:`ctflow.io.dicom.pixels` can read them straight from the file. A file that is not
read as an image comes back as an ``_Unread``: why, whether it is a *damaged* DICOM file (a
``DICM`` file whose header is broken or cut, or an image header without its image) and, when
the damaged header still tells it, its SeriesInstanceUID.

Every parse is bounded (:mod:`ctflow.io.dicom.parse`): only regular files are opened, and
reads, bytes, elements and inflation have budgets; a parse over one marks the file damaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ctflow.io.dicom.parse import (
    _MAX_READS_UID,
    _NOT_DICOM,
    _at_pixels,
    _Damaged,
    _NotDicom,
    _NotRegular,
    _parse,
    _past_uid,
)

__all__ = ["CT_IMAGE_STORAGE", "ENHANCED_CT_IMAGE_STORAGE", "LEGACY_ENHANCED_CT_IMAGE_STORAGE"]


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
_MULTIFRAME_CT = (ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)
_CT_CLASSES = (CT_IMAGE_STORAGE, *_MULTIFRAME_CT)
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


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
    bits_allocated: int | None = None
    bits_stored: int | None = None
    pixel_representation: int | None = None
    padding_value: int | None = None  # PixelPaddingValue (stored value)
    padding_limit: int | None = None  # PixelPaddingRangeLimit
    problems: dict[str, str] = field(default_factory=dict)
    dataset: Any = None  # the header-only pydicom dataset, when pydicom read the header
    pixel_offset: int | None = None  # file offset of uncompressed little-endian PixelData
    pixel_length: int = 0  # its length as the element header says
    size: int = 0  # file size in bytes

    @property
    def is_localizer(self) -> bool:
        """Tell whether ImageType contains ``LOCALIZER`` (a scout image)."""
        return "LOCALIZER" in self.image_type

    @property
    def is_multiframe(self) -> bool:
        """Tell whether the file is enhanced / legacy multi-frame CT or has several frames."""
        return self.n_frames > 1 or self.sop_class in _MULTIFRAME_CT

    @property
    def is_ct(self) -> bool:
        """Tell whether Modality is CT (or, without a Modality, the SOP class is CT)."""
        if self.modality:
            return self.modality.upper() == "CT"
        return self.sop_class in _CT_CLASSES


def _is_empty(raw: Any) -> bool:
    """Tell whether a DICOM value is missing or empty (None, blank text, no items)."""
    if raw is None:
        return True
    if isinstance(raw, str | bytes):
        return raw.strip() == "" if isinstance(raw, str) else len(raw) == 0
    try:
        return len(raw) == 0
    except TypeError:
        return False


def _field(ds: Any, keyword: str, convert: Callable[[Any], Any], problems: dict[str, str]) -> Any:
    """Return ``convert(ds.<keyword>)``: None when absent or empty, the problem noted when bad."""
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
    """Return a DICOM value as a list (a single value becomes a one-item list)."""
    if isinstance(raw, str | bytes) or not hasattr(raw, "__len__"):
        return [raw]
    return list(raw)


def _floats(n: int) -> Callable[[Any], NDArray[np.float64]]:
    """Return a converter of a DICOM value to ``n`` finite floats."""

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
    """Convert the (first) DICOM value to a finite float."""
    value = float(_as_list(raw)[0])
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    return value


def _int(raw: Any) -> int:
    """Convert the (first) DICOM value to an int."""
    return int(_as_list(raw)[0])


def _text(raw: Any) -> str:
    """Convert a DICOM value to stripped text."""
    return str(raw).strip()


def _strings(raw: Any) -> tuple[str, ...]:
    """Convert a multi-valued DICOM string to a tuple of upper-case words."""
    return tuple(str(v).strip().upper() for v in _as_list(raw))


@dataclass
class _Unread:
    """A file of the folder that is not read as an image, and why (rules in the package doc)."""

    path: Path
    reason: str
    size: int | None = None  # bytes; None when the file cannot even be stat-ed
    dicom: bool = False  # it has the 'DICM' prefix
    damaged: bool = False  # a DICOM file whose header is broken or cut, or an image without image
    series_uid: str | None = None  # damaged: its SeriesInstanceUID when the header tells it
    special: bool = False  # not a regular file (FIFO, socket, device): never opened
    foreign: str = ""  # the other format its first bytes show ("JPEG", "text" ...)

    def as_dict(self) -> dict[str, str]:
        """Return the ``{"file", "reason"}`` entry of ``info["skipped"]``."""
        return {"file": str(self.path), "reason": self.reason}


def _known_uid(ds: Any) -> str | None:
    """Return the SeriesInstanceUID a (partly) read header holds whole; None when it holds none.

    Elements are only kept when their value lies whole in the file (``_Stop``), so a UID read
    here is not cut. A header without the element gives None (unknown), never "no UID": in a
    damaged file, the absence may be the damage.
    """
    if ds is None or "SeriesInstanceUID" not in ds:
        return None
    uid = _field(ds, "SeriesInstanceUID", _text, {})
    return str(uid) if uid else ""


def _recover_uid(path: Path, size: int) -> str | None:
    """Read a damaged file's header only up to SeriesInstanceUID; None when that fails too."""
    try:
        parsed = _parse(path, size, _past_uid, max_reads=_MAX_READS_UID)
    except Exception:
        return None
    return _known_uid(parsed.dataset)


def _foreign(head: bytes) -> str:
    """Name the non-DICOM format the first bytes of a file show ("" when none is recognised)."""
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head and all(b >= 32 or b in (9, 10, 12, 13) for b in head):
        return "text"
    return ""


def _damaged(path: Path, size: int, why: str, uid: str | None) -> _Unread:
    """Describe a damaged DICOM file (with its series when the header tells it)."""
    if uid is None:
        series = ""
    else:
        series = f" of series {uid or '(no SeriesInstanceUID)'}"
    return _Unread(
        path, f"damaged DICOM file{series}: {why}", size, dicom=True, damaged=True, series_uid=uid
    )


def _is_image_class(sop_class: str) -> bool:
    """Tell whether a SOP class UID is an image storage class (CT Image Storage ...)."""
    return "Image Storage" in UID(sop_class).name


def _read_header(path: Path, size: int) -> _Header | _Unread:
    """Read the header facts of one regular file, or say why it is not read as an image."""
    if path.name.upper() == "DICOMDIR":
        return _Unread(path, "DICOMDIR (a media directory file, not an image)", size)
    try:
        parsed = _parse(path, size, _at_pixels)
    except _NotRegular as exc:  # replaced by a FIFO / device since it was listed
        return _Unread(path, f"{exc}; skipped without reading it", special=True)
    except _NotDicom as exc:
        return _Unread(path, _NOT_DICOM, size, foreign=_foreign(exc.head))
    except _Damaged as exc:
        return _damaged(path, size, str(exc), _recover_uid(path, size))
    except OSError as exc:  # cannot be opened or read (permissions, I/O error)
        return _Unread(path, f"unreadable file ({type(exc).__name__}: {exc.strerror or exc})", size)
    ds, state = parsed.dataset, parsed.state
    if state.problem:
        return _damaged(path, size, state.problem, _known_uid(ds))
    problems: dict[str, str] = {}
    meta = getattr(ds, "file_meta", None)
    media_class = _field(meta, "MediaStorageSOPClassUID", _text, problems) if meta else None
    if media_class == _MEDIA_DIRECTORY:
        return _Unread(path, "DICOMDIR (a media directory file, not an image)", size, dicom=True)
    h = _Header(path=path, problems=problems, size=size)
    h.series_uid = _field(ds, "SeriesInstanceUID", _text, problems) or ""
    h.modality = _field(ds, "Modality", _text, problems) or ""
    sop_class = _field(ds, "SOPClassUID", _text, problems) or ""
    h.sop_class = sop_class or media_class or ""
    h.transfer_syntax = (_field(meta, "TransferSyntaxUID", _text, problems) if meta else "") or ""
    h.image_type = _field(ds, "ImageType", _strings, problems) or ()
    h.description = _field(ds, "SeriesDescription", _text, problems) or ""
    h.n_frames = _field(ds, "NumberOfFrames", _int, problems) or 1
    h.rows = _field(ds, "Rows", _int, problems)
    h.cols = _field(ds, "Columns", _int, problems)
    if h.rows is None and h.cols is None and "Rows" not in problems:
        classes = [c for c in (sop_class, media_class) if c]
        if not classes or any(_is_image_class(c) for c in classes):
            name = UID(h.sop_class).name if h.sop_class else "DICOM"
            cut = "" if state.stopped else "; the file ends before any pixel data: truncated?"
            why = f"a {name} header without Rows/Columns{cut}"
            return _damaged(path, size, why, _known_uid(ds))
        return _Unread(
            path, f"no image in this DICOM object (SOP class {h.sop_class})", size, dicom=True
        )
    h.position = _field(ds, "ImagePositionPatient", _floats(3), problems)
    h.orientation = _field(ds, "ImageOrientationPatient", _floats(6), problems)
    h.pixel_spacing = _field(ds, "PixelSpacing", _floats(2), problems)
    h.slice_thickness = _field(ds, "SliceThickness", _float, problems)
    h.spacing_between = _field(ds, "SpacingBetweenSlices", _float, problems)
    h.slope = _field(ds, "RescaleSlope", _float, problems)
    h.intercept = _field(ds, "RescaleIntercept", _float, problems)
    h.samples = _field(ds, "SamplesPerPixel", _int, problems)
    h.photometric = (_field(ds, "PhotometricInterpretation", _text, problems) or "").upper()
    h.bits_allocated = _field(ds, "BitsAllocated", _int, problems)
    h.bits_stored = _field(ds, "BitsStored", _int, problems)
    h.pixel_representation = _field(ds, "PixelRepresentation", _int, problems)
    h.padding_value = _field(ds, "PixelPaddingValue", _int, problems)
    h.padding_limit = _field(ds, "PixelPaddingRangeLimit", _int, problems)
    h.dataset = ds
    _locate_native_pixels(h, parsed.pixel_at, parsed.pixel_head)
    return h


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
