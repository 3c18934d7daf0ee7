"""STOW-RS: store DICOM instances (e.g. a DICOM SEG) on a DICOMweb server.

:func:`store_dicomweb` sends the files checked by :mod:`ctflow.io.dicomweb.stow_files` in one
request and reads the server's Store Instances Response into :class:`StoredInstance` records
or a :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
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
from ctflow.io.dicomweb.stow_files import _Body, _Outgoing, _outgoing

if TYPE_CHECKING:
    from urllib.request import Request


# ---------------------------------------------------------------------------- STOW-RS

_REFERENCED = "00081199"  # ReferencedSOPSequence: the instances stored
_FAILED = "00081198"  # FailedSOPSequence: the instances refused
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
