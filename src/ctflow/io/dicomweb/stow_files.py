"""STOW-RS's outgoing files: each checked before anything is sent, then streamed as one body.

:func:`~ctflow.io.dicomweb.stow.store_dicomweb` checks every file with ``_outgoing`` (a DICOM
Part-10 file with its SOP instance, SOP class, study and series UIDs; no instance twice), so a
bad file is refused before anything is sent, then sends them as one ``_Body``: a
``multipart/related; type="application/dicom"`` body read from disk as it is sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)

_PART_TYPE = b"Content-Type: application/dicom\r\n\r\n"


@dataclass(frozen=True)
class _Outgoing:
    """One DICOM file to store: where its bytes are, its size and UIDs."""

    name: str  # for messages: the path, or files[n] (... bytes)
    content: Path | bytes
    size: int
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str


def _dicom_header(stream: Any, name: str, where: str) -> Any:
    """Return the header of a DICOM Part-10 file (no pixel data); refuse anything else."""
    import pydicom

    head = stream.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise UnsupportedFormatError(
            f"{where}: {name} is not a DICOM file (no 'DICM' marker at byte 128); STOW-RS "
            "stores DICOM Part-10 files"
        )
    stream.seek(0)
    try:
        return pydicom.dcmread(stream, stop_before_pixels=True, defer_size=1024)
    except Exception as exc:  # pydicom raises many kinds on a damaged header
        raise CorruptFileError(
            f"{where}: {name}: the DICOM header cannot be parsed "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _uids(ds: Any, name: str, where: str) -> tuple[str, str, str, str]:
    """Return (SOPInstanceUID, SOPClassUID, StudyInstanceUID, SeriesInstanceUID) of a header."""
    meta = getattr(ds, "file_meta", None)
    found = {}
    for keyword, fallback in (
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("StudyInstanceUID", ""),
        ("SeriesInstanceUID", ""),
    ):
        value = str(ds.get(keyword, "") or "").strip()
        if not value and fallback and meta is not None:
            value = str(meta.get(fallback, "") or "").strip()
        if not value:
            raise InvalidScanError(
                f"{where}: {name} has no {keyword} (a truncated or stripped file?); a DICOMweb "
                "server files instances by their study, series and SOP instance UIDs"
            )
        found[keyword] = value
    return (
        found["SOPInstanceUID"],
        found["SOPClassUID"],
        found["StudyInstanceUID"],
        found["SeriesInstanceUID"],
    )


def _outgoing_bytes(data: bytes, n: int, where: str) -> _Outgoing:
    """Check one file given as bytes."""
    import io

    name = f"files[{n}] ({len(data)} bytes)"
    ds = _dicom_header(io.BytesIO(data), name, where)
    return _Outgoing(name, data, len(data), *_uids(ds, name, where))


def _outgoing_path(item: str | os.PathLike[str], where: str) -> _Outgoing:
    """Check one file given as a path."""
    from ctflow.io.voxels import as_source_path

    path = as_source_path(item, where)
    name = os.fspath(path)
    if path.is_dir():
        raise InvalidParameterError(
            f"{where}: {name} is a folder; pass its DICOM files, e.g. sorted(folder.glob('*.dcm'))"
        )
    try:
        with path.open("rb") as stream:
            ds = _dicom_header(stream, name, where)
            size = os.fstat(stream.fileno()).st_size
    except FileNotFoundError:
        raise CorruptFileError(f"{where}: {name}: no such file") from None
    except CTFlowError:
        raise
    except OSError as exc:
        raise CorruptFileError(f"{where}: {name} cannot be read ({exc.strerror or exc})") from None
    return _Outgoing(name, path, size, *_uids(ds, name, where))


def _outgoing(files: object, where: str) -> list[_Outgoing]:
    """Return the files to store, checked: DICOM Part-10, with their UIDs, no SOP UID twice."""
    single = (str, os.PathLike, bytes, bytearray, memoryview)
    if isinstance(files, single):
        items: list[Any] = [files]
    elif isinstance(files, Iterable) and not isinstance(files, Mapping):
        items = list(files)
    else:
        raise InvalidParameterError(
            f"{where}: files must be a path, the bytes of a DICOM file, or a sequence of them; "
            f"got {type(files).__name__}"
        )
    if not items:
        raise InvalidParameterError(f"{where}: files is empty: there is nothing to store")
    out: list[_Outgoing] = []
    seen: dict[str, str] = {}
    for n, item in enumerate(items):
        if isinstance(item, bytes | bytearray | memoryview):
            one = _outgoing_bytes(bytes(item), n, where)
        elif isinstance(item, str | os.PathLike):
            one = _outgoing_path(item, where)
        else:
            raise InvalidParameterError(
                f"{where}: files[{n}] must be a path or the bytes of a DICOM file; got "
                f"{type(item).__name__}"
            )
        if one.sop_instance_uid in seen:
            raise InvalidParameterError(
                f"{where}: {one.name} and {seen[one.sop_instance_uid]} are the same instance "
                f"(SOPInstanceUID {one.sop_instance_uid}); send each instance once"
            )
        seen[one.sop_instance_uid] = one.name
        out.append(one)
    return out


class _Body:
    """A ``multipart/related`` body of DICOM files, read as it is sent (files stay on disk)."""

    def __init__(self, files: list[_Outgoing], boundary: str) -> None:
        self.boundary = boundary
        delimiter = f"--{boundary}\r\n".encode("ascii") + _PART_TYPE
        self._pieces: list[bytes | _Outgoing] = []
        for one in files:
            self._pieces += [delimiter, one, b"\r\n"]
        self._pieces.append(f"--{boundary}--\r\n".encode("ascii"))
        self.size = sum(p.size if isinstance(p, _Outgoing) else len(p) for p in self._pieces)
        self._index = 0  # the piece being read
        self._offset = 0  # bytes of it already read
        self._stream: Any = None  # the open file of a piece on disk

    def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes of the body (all that is left when ``n`` < 0)."""
        want = self.size if n is None or n < 0 else n
        out = bytearray()
        while len(out) < want and self._index < len(self._pieces):
            chunk = self._chunk(self._pieces[self._index], want - len(out))
            if chunk:
                out += chunk
                self._offset += len(chunk)
            else:
                self._next()
        return bytes(out)

    def _chunk(self, piece: bytes | _Outgoing, n: int) -> bytes:
        """Return the next bytes (at most ``n``) of one piece; b"" at its end."""
        if isinstance(piece, bytes):
            return piece[self._offset : self._offset + n]
        if isinstance(piece.content, bytes):
            return piece.content[self._offset : self._offset + n]
        try:
            if self._stream is None:
                self._stream = piece.content.open("rb")
            chunk = self._stream.read(min(n, piece.size - self._offset))
            grew = not chunk and bool(self._stream.read(1))
        except OSError as exc:
            raise CorruptFileError(
                f"store_dicomweb: {piece.name} cannot be read ({exc.strerror or exc}); the "
                "request was broken off before its end"
            ) from None
        if (not chunk and self._offset != piece.size) or grew:
            raise CorruptFileError(
                f"store_dicomweb: {piece.name} changed while it was sent (it had "
                f"{piece.size} bytes when checked); the request was broken off before its end"
            )
        return bytes(chunk)

    def _next(self) -> None:
        """Go on to the next piece."""
        self.close()
        self._index += 1
        self._offset = 0

    def close(self) -> None:
        """Close the file being read, if any."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
