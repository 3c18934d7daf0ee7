"""STOW-RS: store DICOM instances (e.g. a DICOM SEG) on a DICOMweb server."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.io.dicomweb.server import (
    _DICOM_JSON,
    _MAX_JSON_BYTES,
    _Answer,
    _check_uid,
    _keywords,
    _Options,
    _options,
    _send,
    _server_key,
)

if TYPE_CHECKING:
    from urllib.request import Request


# ---------------------------------------------------------------------------- STOW-RS

_REFERENCED = "00081199"  # ReferencedSOPSequence: the instances stored
_FAILED = "00081198"  # FailedSOPSequence: the instances refused
_PART_TYPE = b"Content-Type: application/dicom\r\n\r\n"
#: FailureReason / WarningReason values (PS3.4 Annex B, PS3.7 Annex C, PS3.18 Store Instances)
_REASONS = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
    0xC122: "transfer syntax not supported",
}
_REASON_RANGES = (
    (0xA700, 0xA7FF, "out of resources"),
    (0xA900, 0xA9FF, "data set does not match SOP class"),
    (0xC000, 0xCFFF, "cannot understand"),
)
_STORE_HINTS = {
    401: "the server wants credentials: pass headers= (e.g. Authorization)",
    403: "the server refuses access with the headers given",
    404: "no STOW-RS service at this URL (is it the server's DICOMweb root?)",
    405: "no STOW-RS service at this URL (is it the server's DICOMweb root?)",
    413: "the request is too large for the server: store fewer files at a time",
    415: "the server does not take multipart/related application/dicom",
}
_MAX_LISTED = 10  # instances named one by one in an error message


@dataclass(frozen=True)
class StoredInstance:
    """One instance a DICOMweb server says it stored (STOW-RS).

    Attributes
    ----------
    sop_instance_uid, sop_class_uid, study_uid, series_uid : str
        The instance's UIDs, as its file gives them.
    url : str
        Its RetrieveURL as the server gives it (a WADO-RS URL), ``""`` when it gives none.
    warning : str
        The server's WarningReason, e.g. ``"0xB000 coercion of data elements"`` (it stored
        the instance but changed some attributes); ``""`` when none.
    file : str
        The file sent: its path, or ``"files[<n>] (<size> bytes)"`` for bytes.

    Examples
    --------
    >>> StoredInstance("1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3", "1.2.3.4").url
    ''
    """

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    url: str = ""
    warning: str = ""
    file: str = ""


class StoreError(CorruptFileError):
    """A DICOMweb server did not store every instance sent to it (STOW-RS).

    The message names the URL, the HTTP status and every refused instance with the server's
    reason (never a request header). Part of the instances may be stored all the same.

    Attributes
    ----------
    url : str
        The STOW-RS URL.
    status : int
        The HTTP status of the answer.
    stored : list of StoredInstance
        The instances the server says it stored.
    failed : dict of str to str
        SOPInstanceUID -> why it was not stored (the server's FailureReason, e.g. ``"0x0110
        processing failure"``, or ``"not in the server's answer"``).

    Examples
    --------
    >>> error = StoreError("http://pacs/dicom-web/studies: HTTP 409 Conflict", status=409)
    >>> isinstance(error, CorruptFileError), error.status, error.stored, error.failed
    (True, 409, [], {})
    """

    def __init__(
        self,
        message: str,
        url: str = "",
        status: int = 0,
        stored: Iterable[StoredInstance] = (),
        failed: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.stored = list(stored)
        self.failed = dict(failed or {})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the attributes (an error crosses process boundaries with Dask)."""
        return (type(self), (str(self), self.url, self.status, self.stored, self.failed))


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


def _store_request(target: str, body: _Body, options: _Options) -> Request:
    """Return the STOW-RS POST of ``body`` to ``target``."""
    import urllib.request

    content_type = f'multipart/related; type="application/dicom"; boundary={body.boundary}'
    return urllib.request.Request(
        target,
        data=body,
        method="POST",
        headers={
            **dict(options.headers),  # the request's own headers below win over these
            "Content-Type": content_type,
            "Content-Length": str(body.size),
            "Accept": _DICOM_JSON,
        },
    )


def _reason(value: object) -> str:
    """Return a FailureReason / WarningReason as ``"0xCODE meaning"`` (US in DICOM JSON)."""
    code = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        text = value.strip().lower()
        with contextlib.suppress(ValueError):
            code = int(text, 16) if text.startswith("0x") else int(text)
    if code is None:
        return str(value)
    meaning = _REASONS.get(code) or next(
        (name for lo, hi, name in _REASON_RANGES if lo <= code <= hi), "no meaning known"
    )
    return f"0x{code:04X} {meaning}"


def _sequence(response: Mapping[str, Any], tag: str) -> list[dict[str, Any]]:
    """Return the items of a sequence of a DICOM JSON dataset as keyword dicts."""
    element = response.get(tag)
    values = element.get("Value") if isinstance(element, Mapping) else None
    if not isinstance(values, list):
        return []
    return [_keywords(item) for item in values if isinstance(item, Mapping)]


def _store_response(answer: _Answer) -> Mapping[str, Any] | None:
    """Return the Store Instances Response (DICOM JSON) of an answer, None when it holds none."""
    try:
        data = json.loads(answer.body) if answer.body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]  # a dataset given as a list of one, as QIDO-RS answers are
    if not isinstance(data, Mapping) or not (_REFERENCED in data or _FAILED in data):
        return None
    return data


def _sort_answer(
    response: Mapping[str, Any], sent: list[_Outgoing]
) -> tuple[list[StoredInstance], dict[str, str]]:
    """Return the instances stored (in the order sent) and the refused ones with the reasons."""
    by_uid = {one.sop_instance_uid: one for one in sent}
    acknowledged: dict[str, dict[str, Any]] = {}
    for item in _sequence(response, _REFERENCED):
        uid = item.get("ReferencedSOPInstanceUID")
        if isinstance(uid, str) and uid in by_uid:
            acknowledged[uid] = item
    failed: dict[str, str] = {}
    for item in _sequence(response, _FAILED):
        uid = item.get("ReferencedSOPInstanceUID")
        if isinstance(uid, str) and uid in by_uid:
            failed[uid] = _reason(item.get("FailureReason"))
            acknowledged.pop(uid, None)
    stored = []
    for one in sent:
        found = acknowledged.get(one.sop_instance_uid)
        if found is None:
            failed.setdefault(one.sop_instance_uid, "not in the server's answer")
            continue
        url = found.get("RetrieveURL") or found.get("RetrieveURI") or ""
        warning = found.get("WarningReason")
        stored.append(
            StoredInstance(
                one.sop_instance_uid,
                one.sop_class_uid,
                one.study_uid,
                one.series_uid,
                url if isinstance(url, str) else "",
                "" if warning is None else _reason(warning),
                one.name,
            )
        )
    return stored, failed


def _refusal(
    url: str,
    answer: _Answer,
    sent: list[_Outgoing],
    stored: list[StoredInstance],
    failed: dict[str, str],
    study_uid: str | None,
) -> StoreError:
    """Return the error of a store that did not store everything."""
    status = f"HTTP {answer.status} {answer.reason}".rstrip()
    by_uid = {one.sop_instance_uid: one for one in sent}
    lines = []
    for uid, why in list(failed.items())[:_MAX_LISTED]:
        one = by_uid[uid]
        text = f"{uid} ({one.name}): {why}"
        if study_uid is not None and one.study_uid != study_uid:
            text += f" (its StudyInstanceUID {one.study_uid} is not the study of the URL)"
        lines.append(text)
    if len(failed) > _MAX_LISTED:
        lines.append(f"... and {len(failed) - _MAX_LISTED} more")
    if failed:
        what = f"the server stored {len(stored)} of {len(sent)} instance(s); not stored: "
        detail = what + "; ".join(lines)
    else:
        detail = f"an error status although the server lists all {len(sent)} instance(s) as stored"
    return StoreError(f"{url}: {status}: {detail}", url, answer.status, stored, failed)


def _no_response(url: str, answer: _Answer) -> CTFlowError:
    """Return the error of an answer without a Store Instances Response."""
    status = f"HTTP {answer.status} {answer.reason}".rstrip()
    if answer.status >= 300:
        hint = _STORE_HINTS.get(answer.status, "")
        return StoreError(f"{url}: {status}" + (f": {hint}" if hint else ""), url, answer.status)
    return UnsupportedFormatError(
        f"{url}: {status} with {answer.content_type or 'no Content-Type'} and no DICOM JSON "
        "Store Instances Response (ReferencedSOPSequence / FailedSOPSequence); does the server "
        "offer STOW-RS at this URL?"
    )


def store_dicomweb(
    url: str,
    files: str
    | os.PathLike[str]
    | bytes
    | Iterable[str | os.PathLike[str] | bytes | bytearray | memoryview],
    *,
    study_uid: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[StoredInstance]:
    """Store DICOM files on a DICOMweb server by STOW-RS (e.g. a DICOM SEG of a prediction).

    One ``POST {root}/studies`` (or ``{root}/studies/{study_uid}``) with every file as a part
    of a ``multipart/related; type="application/dicom"`` body, ``Accept:
    application/dicom+json``. Each file is checked first (a DICOM Part-10 file with its SOP
    instance, SOP class, study and series UIDs; no instance twice) and then read from disk as
    it is sent. The server's Store Instances Response says which instances it stored
    (ReferencedSOPSequence, with their RetrieveURL) and which it refused (FailedSOPSequence,
    with a FailureReason).

    Parameters
    ----------
    url : str
        The server's DICOMweb root, e.g. ``"http://localhost:8042/dicom-web"`` (or a series
        source of it).
    files : path, bytes, or a sequence of them
        The DICOM files to store: paths, or the bytes of whole Part-10 files.
    study_uid : str, optional
        POST to ``{root}/studies/{study_uid}``: the server must refuse an instance of another
        study (PS3.18). Default: ``{root}/studies``, every instance to its own study.
    headers : mapping of str to str, optional
        Extra request headers (default: those of :func:`set_server_options` for the server).
    timeout : float, optional
        Seconds to wait for the server (default: that of :func:`set_server_options`, 60).

    Returns
    -------
    list of StoredInstance
        One per file, in the order given: its UIDs, its RetrieveURL and any warning of the
        server (stored with changes, e.g. ``"0xB000 coercion of data elements"``).

    Raises
    ------
    InvalidParameterError
        A bad URL, study UID, header or time-out; ``files`` empty, not paths or bytes, a
        folder, or one instance twice.
    UnsupportedFormatError
        A file that is not DICOM Part-10; a 2xx answer without a Store Instances Response.
    CorruptFileError
        A missing or unreadable file, a DICOM header that cannot be parsed; the server cannot
        be reached or does not answer in time.
    InvalidScanError
        A file without the UIDs a server files it by.
    StoreError
        (a :class:`~ctflow.errors.CorruptFileError`) The server did not store every
        instance: an HTTP error status or refused instances. The message names the URL, the
        status and each refused instance with its reason; ``stored`` and ``failed`` say which
        were stored (some may be) and which not.

    Examples
    --------
    With a DICOMweb server at ``http://localhost:8042/dicom-web`` (``tests/io/test_dicomweb.py``
    starts one) and a SEG written by :func:`~ctflow.io.dicom.write_dicom_seg`::

        stored = store_dicomweb("http://localhost:8042/dicom-web", "prediction_seg.dcm")
        stored[0].series_uid, stored[0].url
        # ('1.2.826.0.1...', 'http://localhost:8042/dicom-web/studies/.../instances/...')
    """
    import uuid

    where = "store_dicomweb"
    root = _server_key(url, where)
    options = _options(root, headers, timeout, where)
    target = f"{root}/studies"
    if study_uid is not None:
        target += "/" + quote(_check_uid(study_uid, "study_uid", where), safe=".")
    sent = _outgoing(files, where)
    body = _Body(sent, f"ctflow-{uuid.uuid4().hex}")  # 122 random bits: never inside a file
    request = _store_request(target, body, options)
    try:
        answer = _send(request, options, "study", _MAX_JSON_BYTES, keep_errors=True)
    finally:
        body.close()
    response = _store_response(answer)
    if response is None:
        raise _no_response(target, answer)
    stored, failed = _sort_answer(response, sent)
    if failed or answer.status >= 300:
        raise _refusal(target, answer, sent, stored, failed, study_uid)
    return stored
