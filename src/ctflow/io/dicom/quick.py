"""The fast path of the header pass: the values the reader needs, straight from the bytes.

pydicom turns every element of a file into a ``DataElement`` of a ``Dataset`` (most of the
time a series takes to read; docs/design.md has the figures); the series reader needs two
dozen values. :func:`_quick_header` reads the first bytes of a file, walks its element
stream (explicit or implicit VR little endian: the two native syntaxes, and the dataset
encoding of every encapsulated one), converts the values of the tags in ``_WANTED`` and notes
where the pixel data starts. Sequences are skipped by their lengths, or item by item when
their length is undefined.

It handles plain files only. Anything else makes it return None, and the caller reads the
file through pydicom (:func:`~ctflow.io.dicom.headers._read_header`), so every check and
every message of that path holds unchanged: no ``DICM`` prefix, a deflated, big-endian or
unknown transfer syntax, a DICOMDIR, an implicit VR dataset that looks explicit (or the
reverse), a wanted value that is not converted exactly as the pydicom path converts it (a
malformed or non-finite number, text with a NUL byte or a non-ASCII byte, a VR other than the
dictionary's, a repeated element), a value or item running past the end of the file,
sequences nested deeper than ``_MAX_DEPTH``, no Rows/Columns, float pixel data, or no pixel
data within the first ``_MAX_HEAD`` bytes. The tests read every file of the test corpus both
ways and compare the headers.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import UID, AllTransferSyntaxes

from ctflow.io.dicom.headers import (
    _MEDIA_DIRECTORY,
    _Header,
    _locate_native_pixels,
)
from ctflow.io.dicom.parse import _open_file

_FIRST_READ = 16 * 2**10  # a CT header is 2 to 10 KiB; more is read only when needed
_MAX_HEAD = 4 * 2**20  # no pixel data within this many bytes: pydicom reads the file
_MAX_DEPTH = 8
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXELS = (0x7FE00008, 0x7FE00009)
_META_SYNTAX, _META_CLASS = 0x00020010, 0x00020002
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_KNOWN_SYNTAXES = frozenset(str(u) for u in AllTransferSyntaxes)
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
_HEAD = struct.Struct("<HHI")  # group, element, 4-byte length (implicit VR, items)
_SHORT = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length (explicit VR)
_U32 = struct.Struct("<I")

# the top-level elements the reader uses: tag -> (keyword, VRs allowed)
_WANTED: dict[int, tuple[str, tuple[bytes, ...]]] = {
    0x00080008: ("ImageType", (b"CS",)),
    0x00080016: ("SOPClassUID", (b"UI",)),
    0x00080060: ("Modality", (b"CS",)),
    0x0008103E: ("SeriesDescription", (b"LO",)),
    0x00180050: ("SliceThickness", (b"DS",)),
    0x00180088: ("SpacingBetweenSlices", (b"DS",)),
    0x0020000E: ("SeriesInstanceUID", (b"UI",)),
    0x00200032: ("ImagePositionPatient", (b"DS",)),
    0x00200037: ("ImageOrientationPatient", (b"DS",)),
    0x00280002: ("SamplesPerPixel", (b"US",)),
    0x00280004: ("PhotometricInterpretation", (b"CS",)),
    0x00280008: ("NumberOfFrames", (b"IS",)),
    0x00280010: ("Rows", (b"US",)),
    0x00280011: ("Columns", (b"US",)),
    0x00280030: ("PixelSpacing", (b"DS",)),
    0x00280100: ("BitsAllocated", (b"US",)),
    0x00280101: ("BitsStored", (b"US",)),
    0x00280103: ("PixelRepresentation", (b"US",)),
    0x00280120: ("PixelPaddingValue", (b"US", b"SS")),
    0x00280121: ("PixelPaddingRangeLimit", (b"US", b"SS")),
    0x00281052: ("RescaleIntercept", (b"DS",)),
    0x00281053: ("RescaleSlope", (b"DS",)),
}


class _Fallback(Exception):
    """Internal: not a plain file; pydicom reads it."""


class _More(Exception):
    """Internal: the walk needs bytes past those read so far."""


class _Walk:
    """The element stream of the first ``len(buf)`` bytes of a file of ``size`` bytes."""

    __slots__ = ("buf", "size")

    def __init__(self, buf: bytes, size: int) -> None:
        self.buf = buf
        self.size = size

    def need(self, end: int) -> None:
        """Make sure bytes up to ``end`` were read (or refuse: they are not in the file)."""
        if end > len(self.buf):
            raise _Fallback if end > self.size else _More

    def element(self, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
        """Return (tag, VR or b"", value length, value position) of the element at ``pos``."""
        self.need(pos + 8)
        if not explicit:
            group, elem, length = _HEAD.unpack_from(self.buf, pos)
            return group << 16 | elem, b"", length, pos + 8
        group, elem, vr, length = _SHORT.unpack_from(self.buf, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:  # item and delimiters: no VR, a 4-byte length
            return tag, b"", _U32.unpack_from(self.buf, pos + 4)[0], pos + 8
        if vr in _LONG_VRS:
            self.need(pos + 12)
            return tag, vr, _U32.unpack_from(self.buf, pos + 8)[0], pos + 12
        if not (vr.isalpha() and vr.isupper()):
            raise _Fallback  # not an explicit VR stream
        return tag, vr, length, pos + 8

    def skip(self, vr: bytes, length: int, at: int, explicit: bool, depth: int) -> int:
        """Return the position after a value of ``length`` bytes starting at ``at``."""
        if length != _UNDEFINED:
            if at + length > self.size:
                raise _Fallback  # runs past the end of the file
            return at + length
        if explicit and vr not in (b"SQ", b"UN"):
            raise _Fallback
        # a sequence; an undefined-length UN holds implicit VR little endian items
        return self.sequence(at, explicit and vr == b"SQ", depth + 1)

    def sequence(self, pos: int, explicit: bool, depth: int) -> int:
        """Return the position after the undefined-length sequence whose items start at pos."""
        if depth > _MAX_DEPTH:
            raise _Fallback
        while True:
            self.need(pos + 8)
            group, elem, length = _HEAD.unpack_from(self.buf, pos)
            tag = group << 16 | elem
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM:
                raise _Fallback
            if length != _UNDEFINED:
                pos = self.skip(b"", length, pos + 8, explicit, depth)
                continue
            pos += 8
            while True:  # the item's elements, up to its delimiter
                tag, vr, length, at = self.element(pos, explicit)
                if tag == _ITEM_END:
                    pos = at
                    break
                pos = self.skip(vr, length, at, explicit, depth)


def _text(raw: bytes, vr: bytes) -> str:
    """Decode a text value as pydicom would, then strip it; refuse anything unusual."""
    if vr == b"UI" and raw.endswith(b"\x00"):
        raw = raw[:-1]  # the padding of UIDs
    if b"\x00" in raw:
        raise _Fallback
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _Fallback from None


def _numbers(raw: bytes, n: int | None) -> list[float] | None:
    """Convert a DS value to floats: ``n`` of them, or the first when ``n`` is None."""
    text = _text(raw, b"DS")
    if not text:
        return None
    parts = text.split("\\")
    if n is not None and len(parts) != n:
        raise _Fallback
    try:
        values = [float(p) for p in (parts if n is not None else parts[:1])]
    except ValueError:
        raise _Fallback from None
    if not all(math.isfinite(v) for v in values):
        raise _Fallback
    return values


def _unsigned(raw: bytes, signed: bool = False) -> int | None:
    """Return the first value of a US (or SS) element."""
    if not raw:
        return None
    if len(raw) % 2:
        raise _Fallback
    return int.from_bytes(raw[:2], "little", signed=signed)


def _converted(raw: dict[int, tuple[bytes, bytes]], explicit: bool) -> dict[str, Any]:
    """Convert the wanted raw values to the ``_Header`` fields (None when empty or absent)."""
    out: dict[str, Any] = {}
    representation = _unsigned(raw[0x00280103][1]) if 0x00280103 in raw else None
    for tag, (vr, value) in raw.items():
        keyword, allowed = _WANTED[tag]
        if explicit and vr not in allowed:
            raise _Fallback
        if allowed == (b"US",):
            out[keyword] = _unsigned(value)
        elif len(allowed) == 2:  # US or SS: the VR, else PixelRepresentation, tells
            if not explicit and representation is None and value:
                raise _Fallback
            signed = vr == b"SS" if explicit else representation == 1
            out[keyword] = _unsigned(value, signed)
        elif allowed == (b"DS",):
            n = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}
            out[keyword] = _numbers(value, n.get(keyword))
        elif keyword == "NumberOfFrames":
            text = _text(value, b"IS").split("\\")[0].strip()
            try:
                out[keyword] = int(text) if text else None
            except ValueError:
                raise _Fallback from None
        elif keyword == "ImageType":
            text = _text(value, b"CS")
            out[keyword] = tuple(v.strip().upper() for v in text.split("\\")) if text else None
        else:
            text = _text(value, allowed[0])
            if "\\" in text:
                raise _Fallback  # several values where one is expected
            out[keyword] = text or None
    return out


def _meta(walk: _Walk) -> tuple[str, str, int]:
    """Read the file meta group: (transfer syntax, media SOP class, dataset position)."""
    if walk.buf[128:132] != b"DICM":
        raise _Fallback
    pos, syntax, media = 132, "", ""
    while True:
        walk.need(pos + 8)
        if walk.buf[pos : pos + 2] != b"\x02\x00":
            return syntax, media, pos
        tag, _, length, at = walk.element(pos, True)
        if length == _UNDEFINED:
            raise _Fallback
        walk.need(at + length)
        if tag in (_META_SYNTAX, _META_CLASS):
            text = _text(walk.buf[at : at + length], b"UI")
            syntax, media = (text, media) if tag == _META_SYNTAX else (syntax, text)
        pos = at + length


def _explicit(syntax: str) -> bool:
    """Tell whether a dataset of this transfer syntax is explicit VR (refuse the others)."""
    if syntax == _EXPLICIT_LE:
        return True
    if syntax == _IMPLICIT_LE:
        return False
    if syntax not in _KNOWN_SYNTAXES:  # (UID() of a garbled value warns)
        raise _Fallback
    uid = UID(syntax)
    if (
        uid.is_transfer_syntax
        and uid.is_encapsulated
        and uid.is_little_endian
        and not uid.is_implicit_VR
        and not uid.is_deflated
    ):
        return True
    raise _Fallback


def _parse(buf: bytes, size: int) -> tuple[str, str, bool, dict[str, Any], int]:
    """Walk a file's first bytes: (syntax, media class, explicit, values, pixel element pos)."""
    walk = _Walk(buf, size)
    syntax, media, pos = _meta(walk)
    if not syntax or media == _MEDIA_DIRECTORY:
        raise _Fallback
    explicit = _explicit(syntax)
    walk.need(pos + 8)
    looks_explicit = buf[pos + 4 : pos + 6].isalpha() and buf[pos + 4 : pos + 6].isupper()
    if looks_explicit != explicit:
        raise _Fallback  # pydicom guesses the other VR encoding: let it
    raw: dict[int, tuple[bytes, bytes]] = {}
    while True:
        tag, vr, length, at = walk.element(pos, explicit)
        if tag >= _FLOAT_PIXELS[0]:
            if tag != _PIXEL_DATA:
                raise _Fallback
            return syntax, media, explicit, _converted(raw, explicit), pos
        if tag in _WANTED:
            if tag in raw or length == _UNDEFINED:
                raise _Fallback
            walk.need(at + length)
            raw[tag] = (vr, buf[at : at + length])
        pos = walk.skip(vr, length, at, explicit, 0)


def _read_head(path: Path, n: int) -> bytes:
    """Read the first ``n`` bytes of a regular file (a FIFO or device is refused unopened)."""
    with _open_file(path) as fh:
        return fh.read(n)


def _quick_header(path: Path, size: int, available: int | None = None) -> _Header | None:
    """Return the header facts of a plain DICOM file, or None: pydicom must read it.

    Parameters
    ----------
    path : Path
        A regular file (as listed by the folder scan).
    size : int
        Its size in bytes.
    available : int, optional
        Only the first ``available`` bytes are there (the rest of a file fetched by its head
        is a hole): a header that runs past them is left to pydicom, after the caller fetched
        the whole file.
    """
    if size < 140 or path.name.upper() == "DICOMDIR":
        return None
    limit = min(size, _MAX_HEAD if available is None else available)
    want = min(limit, _FIRST_READ)
    while True:
        try:
            buf = _read_head(path, want)
            syntax, media, explicit, v, at = _parse(buf, len(buf) if len(buf) < want else size)
            break
        except _More:
            if want >= limit:
                return None
            want = min(limit, want * 4)
        except (_Fallback, OSError, struct.error):
            return None
    if v.get("Rows") is None or v.get("Columns") is None:
        return None  # pydicom says what is wrong (damaged, or not an image)
    h = _Header(path=path, size=size)
    h.series_uid = v.get("SeriesInstanceUID") or ""
    h.modality = v.get("Modality") or ""
    h.sop_class = v.get("SOPClassUID") or media or ""
    h.transfer_syntax = syntax
    h.image_type = v.get("ImageType") or ()
    h.description = v.get("SeriesDescription") or ""
    h.n_frames = v.get("NumberOfFrames") or 1
    h.rows, h.cols = v["Rows"], v["Columns"]
    for name, keyword in (
        ("position", "ImagePositionPatient"),
        ("orientation", "ImageOrientationPatient"),
        ("pixel_spacing", "PixelSpacing"),
    ):
        values = v.get(keyword)
        setattr(h, name, None if values is None else np.array(values, dtype=np.float64))
    for name, keyword in (
        ("slice_thickness", "SliceThickness"),
        ("spacing_between", "SpacingBetweenSlices"),
        ("slope", "RescaleSlope"),
        ("intercept", "RescaleIntercept"),
    ):
        values = v.get(keyword)
        setattr(h, name, None if values is None else values[0])
    h.samples = v.get("SamplesPerPixel")
    h.photometric = (v.get("PhotometricInterpretation") or "").upper()
    h.bits_allocated = v.get("BitsAllocated")
    h.bits_stored = v.get("BitsStored")
    h.pixel_representation = v.get("PixelRepresentation")
    h.padding_value = v.get("PixelPaddingValue")
    h.padding_limit = v.get("PixelPaddingRangeLimit")
    _locate_native_pixels(h, at, buf[at : at + 12])
    if not explicit and h.pixel_offset is None and syntax == _IMPLICIT_LE:
        return None  # odd pixel data under an implicit VR header: pydicom judges it
    return h
