"""Read and check the header of one DICOM file: the facts the series reader needs.

``_read_header`` parses a file with pydicom (up to its PixelData) into a ``_Header`` of plain
Python values, records a malformed value as a problem instead of failing (only the chosen
series' problems become errors), and notes where uncompressed little-endian pixel bytes start
so that :mod:`ctflow.io.dicom.pixels` can read them straight from the file. A file that is not
read as an image comes back as an ``_Unread``: why, whether it is a *damaged* DICOM file (a
``DICM`` file whose header is broken or cut, or an image header without its image) and, when
the damaged header still tells it, its SeriesInstanceUID.

Every parse is bounded (``_parse``): only regular files are opened (a FIFO, socket or device
never is), values over 64 KiB are skipped (seeked over), not read, and a parse that makes more
than 50 000 reads, reads more than 32 MiB, meets more than 20 000 top-level elements, meets an
element running past the end of the file, or inflates a deflated dataset beyond 64 MiB stops
and marks the file damaged. Whatever a file holds, its header pass costs at most that.
"""

from __future__ import annotations

import io
import math
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.filereader import read_partial
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = ["CT_IMAGE_STORAGE", "ENHANCED_CT_IMAGE_STORAGE", "LEGACY_ENHANCED_CT_IMAGE_STORAGE"]


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
_MULTIFRAME_CT = (ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)
_CT_CLASSES = (CT_IMAGE_STORAGE, *_MULTIFRAME_CT)
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

_DEFER_BYTES = 64 * 2**10  # header values longer than this are seeked over, never read
_MAX_READS = 50_000  # read calls one parse may make (real CT headers need 300 to a few 1000)
_MAX_READS_UID = 5_000  # ... when only reading up to SeriesInstanceUID (a damaged file's series)
_MAX_READ_BYTES = 32 * 2**20  # bytes one header parse may read
_MAX_INFLATED = 64 * 2**20  # the most a deflated dataset may inflate to
_MAX_ELEMENTS = 20_000  # top-level elements before the pixel data
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # (Float/Double) Pixel Data
_PIXEL_DATA = 0x7FE00010
_SERIES_UID = 0x0020000E
_NOT_DICOM = "not a DICOM file (no 'DICM' preamble / file meta header)"
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


class _Damaged(Exception):
    """Internal: a header parse met broken or hostile content, or went over its budget."""


class _NotDicom(Exception):
    """Internal: the file has no 'DICM' prefix; ``head`` holds its first bytes."""

    def __init__(self, head: bytes) -> None:
        super().__init__(_NOT_DICOM)
        self.head = head


class _NotRegular(OSError):
    """Internal: the path is not a regular file (it was not read)."""


def _file_kind(mode: int) -> str:
    """Name what a non-regular file is: FIFO, socket, device ..."""
    kinds: tuple[tuple[Callable[[int], bool], str], ...] = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def _opener(path: str, flags: int) -> int:
    """Open ``path`` read-only without blocking, and only when it is a regular file.

    ``O_NONBLOCK`` makes even a FIFO swapped in after the caller's ``stat`` open at once; the
    ``fstat`` of the open descriptor then refuses it.
    """
    extra = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | extra)
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _NotRegular(f"{_file_kind(mode)}, not a regular file")
    return fd


def _open_file(path: Path) -> io.FileIO:
    """Open a regular file for unbuffered reading; a FIFO, socket or device is refused at once."""
    return io.FileIO(os.fspath(path), "rb", opener=_opener)  # a str name: pydicom reopens it


class _BoundedReader(io.BufferedReader):
    """A buffered file whose reads raise ``_Damaged`` past a budget of calls and bytes.

    pydicom reads the whole rest of a file (``read()`` without a size) only for a deflated
    dataset, which it then inflates in memory: that read is refused over ``max_bytes``, and
    when the bytes are a deflate stream they are first inflated here, chunk by chunk, and
    refused when they inflate to more than ``_MAX_INFLATED``.
    """

    def __init__(self, raw: io.FileIO, size: int, max_bytes: int, max_reads: int) -> None:
        super().__init__(raw, buffer_size=2**16)
        self.size = size
        self.max_bytes = max_bytes
        self.max_reads = max_reads
        self.reads = 0
        self.read_bytes = 0
        self.inflated = False  # the parse goes on in a buffer pydicom inflated
        self.failure = ""

    def _fail(self, why: str) -> _Damaged:
        self.failure = why
        return _Damaged(why)

    def read(self, size: int | None = -1, /) -> bytes:
        """Read like ``BufferedReader.read``, within the budget."""
        self.reads += 1
        if self.reads > self.max_reads:
            raise self._fail(f"more than {self.max_reads} reads before the pixel data")
        if size is None or size < 0:
            return self._read_rest()
        if self.read_bytes + size > self.max_bytes:
            raise self._fail(f"more than {self.max_bytes >> 20} MiB of values before the pixels")
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def _read_rest(self) -> bytes:
        """Read the rest of the file (a deflated dataset), within both budgets."""
        data = super().read(self.max_bytes - self.read_bytes + 1)
        self.read_bytes += len(data)
        if self.read_bytes > self.max_bytes:
            raise self._fail(f"the dataset is over {self.max_bytes >> 20} MiB")
        inflater, total, rest = zlib.decompressobj(-zlib.MAX_WBITS), 0, data
        try:
            while rest and total <= _MAX_INFLATED:
                total += len(inflater.decompress(rest, 2**20))
                rest = inflater.unconsumed_tail
        except zlib.error:
            return data  # not a deflate stream after all: pydicom says what is wrong
        if total > _MAX_INFLATED:
            raise self._fail(f"the deflated dataset inflates to over {_MAX_INFLATED >> 20} MiB")
        self.inflated = True
        return data


def _tag_text(tag: int) -> str:
    """Format a tag as ``(gggg,eeee)``."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Stop:
    """The ``stop_when`` of a bounded parse, called before each top-level element's value.

    Stops (returns True) at the first tag for which ``stop(tag)`` holds, or on damage: more
    than ``_MAX_ELEMENTS`` elements, or a value running past the end of the file (``problem``
    says which).
    """

    def __init__(self, fh: _BoundedReader, stop: Callable[[int], bool]) -> None:
        self.fh = fh
        self.stop = stop
        self.elements = 0
        self.stopped = False
        self.problem = ""

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        """Tell pydicom whether to stop before this element's value."""
        self.elements += 1
        if self.stop(tag):
            self.stopped = True
            return True
        if self.elements > _MAX_ELEMENTS:
            self.problem = f"more than {_MAX_ELEMENTS} elements before the pixel data"
            return True
        if length != _UNDEFINED_LENGTH and not self.fh.inflated:
            left = self.fh.size - self.fh.tell()
            if length > left:
                self.problem = (
                    f"element {_tag_text(tag)} claims {length} bytes but the file ends "
                    f"{max(left, 0)} bytes later (truncated file)"
                )
                return True
        return False


@dataclass
class _Parsed:
    """A bounded parse: the dataset read, how it ended, where the pixel data starts."""

    dataset: Any
    state: _Stop
    pixel_at: int
    pixel_head: bytes


def _at_pixels(tag: int) -> bool:
    """Stop before the pixel data (the header pass)."""
    return tag in _PIXEL_TAGS


def _after_pixels(tag: int) -> bool:
    """Stop after the pixel data (the pixel pass: trailing elements are not parsed)."""
    return tag > _PIXEL_DATA


def _past_uid(tag: int) -> bool:
    """Stop after SeriesInstanceUID (reading the series of a damaged file)."""
    return tag > _SERIES_UID


def _parse(
    path: Path,
    size: int,
    stop: Callable[[int], bool],
    defer: bool = True,
    max_bytes: int = _MAX_READ_BYTES,
    max_reads: int = _MAX_READS,
) -> _Parsed:
    """Parse ``path`` with pydicom until ``stop(tag)``, within the budgets of this module.

    Raises
    ------
    _NotRegular, OSError
        The file is not a regular file, or cannot be opened.
    _NotDicom
        No ``DICM`` prefix at byte 128.
    _Damaged
        pydicom failed, or the parse went over a budget.
    """
    with _BoundedReader(_open_file(path), size, max_bytes, max_reads) as fh:
        head = fh.read(132)
        if head[128:132] != b"DICM":
            raise _NotDicom(head)
        fh.seek(0)
        state = _Stop(fh, stop)
        try:
            ds = read_partial(fh, state, defer_size=_DEFER_BYTES if defer else None, force=False)
            at = fh.tell()  # pydicom rewinds to the start of the element it stopped at
            pixel_head = fh.read(12)
        except (_Damaged, MemoryError):
            raise
        except Exception as exc:  # truncated or garbled: pydicom raises many types
            why = fh.failure or f"{type(exc).__name__}: {str(exc)[:150]}"
            raise _Damaged(f"unreadable header ({why})") from exc
    return _Parsed(ds, state, at, pixel_head)


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
