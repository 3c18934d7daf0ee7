"""DICOMweb: CT series listed by QIDO-RS and read by WADO-RS from a PACS; files stored by STOW-RS.

Plain HTTP through the standard library (:mod:`urllib.request`); no extra dependency.

Source URLs
-----------
A series on a DICOMweb server is the source::

    dicomweb+http://host:8042/dicom-web/studies/<StudyInstanceUID>/series/<SeriesInstanceUID>

(``dicomweb+https://`` over TLS). Without its ``dicomweb+`` prefix it is the WADO-RS URL of the
series; the part before ``/studies/`` is the server's DICOMweb root. The prefix keeps such a
source apart from any file path or other URL, so :func:`~ctflow.io.reader.detect_format` says
``"dicomweb"`` from the text alone, without asking the server.
:meth:`ctflow.Dataset.from_dicomweb` lists these sources (:func:`list_series`,
:func:`dicomweb_sources`); ``load()`` and :func:`~ctflow.io.reader.read_scan` read them
(:func:`read_dicomweb_series`); :func:`retrieve_series` writes a series' files to a folder;
:func:`store_dicomweb` stores DICOM files (e.g. a SEG of a prediction) on the server.

Listing (QIDO-RS)
-----------------
``GET {root}/studies`` (every study, unless study UIDs are given), then, for every study,
``GET {root}/studies/{study}/series?Modality=CT``, both with ``Accept: application/dicom+json``.
A server that caps its answer and says so (a ``Warning`` header, PS3.18) is asked for the
rest with ``offset``. Each series is given as a dict of DICOM keywords to values (PN values
as their ``Alphabetic`` text, IS / DS as numbers, one value as itself, several as a list, none
as None), e.g. ``{"Modality": "CT", "SeriesDescription": ..., "StudyInstanceUID": ...,
"SeriesInstanceUID": ..., "NumberOfSeriesRelatedInstances": 20}``; a series whose Modality
is given and is not CT is dropped even when the server ignored the filter.
(:func:`list_series` takes ``modality="SEG"`` or any other, or None for every series.)

Reading (WADO-RS)
-----------------
``GET`` the series URL with ``Accept: multipart/related; type="application/dicom";
transfer-syntax=*``: every instance as the server stores it (``transfer-syntax=*`` asks for no
transcoding, so the bytes are the files a local folder of the series would hold). The
``multipart/related`` body is split on the boundary of its Content-Type (RFC 2046: preamble,
transport padding and epilogue allowed; every part must be ``application/dicom`` when it says
what it is, must match its own Content-Length when it gives one, and the body must end with
the closing delimiter). The instances are written to a private temporary folder
(``part-00001.dcm`` ... in the order of the answer) and read by
:func:`~ctflow.io.dicom.read_dicom_series`: the SAME rules as a local DICOM folder (which
instances, slice order, spacing, geometry, rescale, padding, ``allow_uneven``), so the volume
and geometry equal those of the same files read from disk, and a bad series raises the same
typed error. The folder is removed whatever happens. In the result and in error messages the
folder is replaced by the source URL: ``<source>/part-00003.dcm`` is the third instance of the
answer. ``info["dicomweb"]`` holds the WADO-RS URL, the number of instances and the bytes read.
The answer is held in memory while it is split (the parts are views of it, not copies; an
answer over 5 GiB is refused) and freed before the series is read.
(The header pass of :mod:`ctflow.io.dicom` reads files by path, ``stat`` and offsets, so
going through files keeps one code path instead of adding a second, in-memory one.)
:func:`retrieve_series` makes the same request and keeps the files in a folder of yours.

Storing (STOW-RS)
-----------------
:func:`store_dicomweb` checks every file first (DICOM Part-10, with SOP instance, SOP class,
study and series UIDs, no instance twice: a bad file is refused before anything is sent),
then sends them all in one ``POST {root}/studies`` (or ``{root}/studies/{study}``) as a
``multipart/related; type="application/dicom"`` body, read from disk as it is sent, with
``Accept: application/dicom+json``. The Store Instances Response (DICOM JSON) says what the
server did: ReferencedSOPSequence (0008,1199) lists the instances stored, with their
RetrieveURL (0008,1190) and any WarningReason (0008,1196); FailedSOPSequence (0008,1198) the
instances refused, with their FailureReason (0008,1197). Every instance sent must be in the
first: an HTTP error status, a refused instance or one the answer does not mention is a
:class:`StoreError` (a :class:`~ctflow.errors.CorruptFileError`) naming the URL, the status and
each such instance with the server's reason, whose ``stored`` and ``failed`` tell which
instances the server kept (a server may keep part of a request). A POST is never sent on to
a redirect.

Errors
------
Every failure is a ctflow error naming the URL: a URL that cannot name a DICOMweb root or
series (not http/https, credentials or a query in it, a malformed UID) is an
:class:`~ctflow.errors.InvalidParameterError`; a server that cannot be reached, does not answer
in time, or answers with an HTTP error status (the message gives it: 404 for an unknown study or
series) is a :class:`~ctflow.errors.CorruptFileError`, as is a truncated or malformed answer; an
answer of another kind (an HTML page instead of DICOM JSON, a multipart body of another type)
is an :class:`~ctflow.errors.UnsupportedFormatError`. Redirects are followed only to the same
scheme, host and port (credentials are never sent elsewhere), and only for GET requests.

Credentials and time-outs
-------------------------
Extra request headers (e.g. ``{"Authorization": "Bearer ..."}``) and the time-out are given to
:meth:`ctflow.Dataset.from_dicomweb` or :func:`set_server_options` and kept for that server
root in this process, where ``load()`` finds them; they are never part of a source, a record or
a dump. A dataset made by ``from_dicomweb`` sets them in every process that makes its batches
(a Dask worker too); code that reads sources without it calls :func:`set_server_options`.

Examples
--------
>>> source = series_source("http://127.0.0.1:8042/dicom-web", "1.2.3", "1.2.3.4")
>>> source
'dicomweb+http://127.0.0.1:8042/dicom-web/studies/1.2.3/series/1.2.3.4'
>>> is_dicomweb_url(source), is_dicomweb_url("/data/series_1")
(True, False)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import numpy as np

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.validation import as_float

if TYPE_CHECKING:
    from urllib.request import Request

    from ctflow.io.scan import Scan

__all__ = [
    "SCHEMES",
    "StoreError",
    "StoredInstance",
    "dicomweb_sources",
    "is_dicomweb_url",
    "list_series",
    "read_dicomweb_series",
    "retrieve_series",
    "series_source",
    "set_server_options",
    "store_dicomweb",
]

#: The prefixes of a DICOMweb series source.
SCHEMES = ("dicomweb+http://", "dicomweb+https://")

_DICOM_JSON = "application/dicom+json"
_WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_DEFAULT_TIMEOUT = 60.0  # seconds without an answer (per socket operation)
_MAX_JSON_BYTES = 256 * 2**20  # a QIDO-RS answer larger than this is refused
_MAX_SERIES_BYTES = 5 * 2**30  # a larger WADO-RS answer is refused (volumes > 4 GiB are anyway)
_MAX_PART_HEADER = 64 * 2**10  # the headers of one multipart part
_CHUNK = 2**20
_UID = re.compile(r"[0-9A-Za-z._-]{1,64}")
_SERIES_PATH = re.compile(r"^(?P<root>.*)/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)/?$")
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")  # a DICOM CS value such as CT, SEG, RTSTRUCT
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name


@dataclass(frozen=True)
class _Options:
    """Extra request headers and the time-out used for one server root."""

    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = _DEFAULT_TIMEOUT


_SERVERS: dict[str, _Options] = {}  # server root -> options (set_server_options)


# ---------------------------------------------------------------------------- URLs


def is_dicomweb_url(source: object) -> bool:
    """Tell whether ``source`` is a DICOMweb series source (``dicomweb+http(s)://...``).

    Examples
    --------
    >>> is_dicomweb_url("dicomweb+https://pacs/dicom-web/studies/1/series/2")
    True
    >>> is_dicomweb_url("http://pacs/dicom-web/studies/1/series/2")
    False
    """
    return isinstance(source, str) and source[:17].lower().startswith(SCHEMES)


def _root(url: object, where: str) -> str:
    """Return the DICOMweb root ``http(s)://host[:port]/path`` of ``url`` (no trailing slash).

    ``url`` may carry the ``dicomweb+`` prefix. Refused: another scheme, no host, a bad port,
    credentials, a query or fragment, whitespace or control characters.
    """
    if not isinstance(url, str) or not url:
        raise InvalidParameterError(
            f"{where}: url must be a non-empty http(s) URL of a DICOMweb root; got {url!r}"
        )
    text = url[len("dicomweb+") :] if url.lower().startswith("dicomweb+") else url
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidParameterError(
            f"{where}: url {url!r} contains whitespace or control characters"
        )
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidParameterError(f"{where}: url {url!r} has a bad port ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidParameterError(
            f"{where}: url must be an http:// or https:// URL with a host, e.g. "
            f"'http://localhost:8042/dicom-web'; got {url!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidParameterError(
            f"{where}: url {parts.hostname!r} carries credentials in the URL; pass them as "
            "headers= (e.g. {'Authorization': 'Basic ...'}): URLs are recorded in item "
            "histories and dumps"
        )
    if parts.query or parts.fragment:
        raise InvalidParameterError(
            f"{where}: url {url!r} must not have a query or fragment (?... / #...)"
        )
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _check_uid(uid: object, what: str, where: str) -> str:
    """Return ``uid`` when it can be a DICOM UID in a URL path (1-64 of ``0-9 A-Z a-z . _ -``)."""
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        raise InvalidParameterError(
            f"{where}: {what} must be a DICOM UID (1 to 64 characters, digits and dots); "
            f"got {uid!r}"
        )
    return uid


def series_source(root: str, study_uid: str, series_uid: str) -> str:
    """Return the source naming one series of a DICOMweb server.

    Parameters
    ----------
    root : str
        The server's DICOMweb root, e.g. ``"http://localhost:8042/dicom-web"``.
    study_uid, series_uid : str
        StudyInstanceUID and SeriesInstanceUID.

    Examples
    --------
    >>> series_source("https://pacs.example/dicomweb/", "1.2", "1.2.3")
    'dicomweb+https://pacs.example/dicomweb/studies/1.2/series/1.2.3'
    """
    base = _root(root, "series_source")
    study = _check_uid(study_uid, "study_uid", "series_source")
    series = _check_uid(series_uid, "series_uid", "series_source")
    return f"dicomweb+{base}/studies/{study}/series/{series}"


def _split_source(source: object, where: str) -> tuple[str, str, str]:
    """Return (root, study UID, series UID) of a series source; refuse anything else."""
    if not is_dicomweb_url(source):
        raise InvalidParameterError(
            f"{where}: a DICOMweb source must start with {' or '.join(SCHEMES)}; got {source!r}"
        )
    assert isinstance(source, str)
    root = _root(source, where)
    parts = urlsplit(root)
    match = _SERIES_PATH.fullmatch(parts.path)
    if match is None:
        raise InvalidParameterError(
            f"{where}: {source} does not name a series: expected "
            "dicomweb+http(s)://host/<root>/studies/<StudyInstanceUID>/series/<SeriesInstanceUID>"
        )
    study = _check_uid(match["study"], "the study UID of " + source, where)
    series = _check_uid(match["series"], "the series UID of " + source, where)
    return f"{parts.scheme}://{parts.netloc}{match['root']}", study, series


# ---------------------------------------------------------------------------- options


def _as_headers(headers: object, where: str) -> tuple[tuple[str, str], ...]:
    """Return request headers as pairs; names must be tokens, values one line (not echoed)."""
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        raise InvalidParameterError(
            f"{where}: headers must be a mapping of header names to values; got "
            f"{type(headers).__name__}"
        )
    out = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidParameterError(f"{where}: header name {name!r} is not a valid HTTP name")
        if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            # the value is not shown: it may be a secret
            raise InvalidParameterError(
                f"{where}: the value of header {name!r} must be one line of text"
            )
        out.append((name, value))
    return tuple(out)


def _as_timeout(timeout: object, where: str) -> float:
    """Return a time-out in seconds (a finite number > 0)."""
    return as_float(timeout, "timeout", where, lo=0.0, lo_open=True, unit="s")


def set_server_options(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float | None = None
) -> None:
    """Set the request headers and time-out used for a DICOMweb server in this process.

    :meth:`ctflow.Dataset.from_dicomweb` calls it; ``load()`` of the server's sources uses
    them, and sets them again in every process that makes the dataset's batches; call it
    yourself in a worker process that reads such sources without the dataset (e.g. with
    Dask's ``client.run``). Headers are kept in memory only, never written to a record or a
    dump.

    Parameters
    ----------
    url : str
        The DICOMweb root (or any series source of it).
    headers : mapping of str to str, optional
        Extra request headers (e.g. ``Authorization``); None keeps those already set.
    timeout : float, optional
        Seconds to wait for the server (per connection / read); None keeps the one set
        (default 60).

    Examples
    --------
    >>> set_server_options("http://127.0.0.1:8042/dicom-web", timeout=30.0)
    """
    key = _server_key(url, "set_server_options")
    old = _SERVERS.get(key, _Options())
    new_headers = old.headers if headers is None else _as_headers(headers, "set_server_options")
    new_timeout = old.timeout if timeout is None else _as_timeout(timeout, "set_server_options")
    _SERVERS[key] = _Options(new_headers, new_timeout)


def _server_key(url: str, where: str) -> str:
    """Return the server root that options are kept under (a series source's root)."""
    if is_dicomweb_url(url):
        try:
            return _split_source(url, where)[0]
        except InvalidParameterError:
            pass
    return _root(url, where)


def _options(root: str, headers: object, timeout: object, where: str) -> _Options:
    """Return the options of a request: those given, else those set for ``root``."""
    kept = _SERVERS.get(root, _Options())
    return _Options(
        kept.headers if headers is None else _as_headers(headers, where),
        kept.timeout if timeout is None else _as_timeout(timeout, where),
    )


# ---------------------------------------------------------------------------- HTTP


def _same_origin(a: str, b: str) -> bool:
    """Tell whether two URLs have the same scheme, host and port."""
    pa, pb = urlsplit(a), urlsplit(b)
    defaults = {"http": 80, "https": 443}
    return (
        pa.scheme.lower() == pb.scheme.lower()
        and (pa.hostname or "") == (pb.hostname or "")
        and (pa.port or defaults.get(pa.scheme.lower())) == (pb.port or defaults.get(pb.scheme))
    )


@functools.cache
def _opener() -> Any:
    """Return a urllib opener that follows redirects only within the same origin."""
    import urllib.request

    class _SameOrigin(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self, req: Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
        ) -> Request | None:
            if req.get_method() != "GET":  # a STOW-RS POST: its body is not sent twice
                raise CorruptFileError(
                    f"{req.full_url}: the server redirects the {req.get_method()} request (HTTP "
                    f"{code}) to {newurl}; ctflow does not send DICOM instances on to a "
                    "redirect: store to that URL directly if you trust it"
                )
            if not _same_origin(req.full_url, newurl):
                raise CorruptFileError(
                    f"{req.full_url}: the server redirects to another origin ({newurl}, HTTP "
                    f"{code}); ctflow does not follow it (headers would go elsewhere): use that "
                    "URL directly if you trust it"
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(_SameOrigin())


def _read_body(response: Any, url: str, limit: int) -> bytearray:
    """Read a whole response body into one buffer, refusing more than ``limit`` bytes."""
    body = bytearray()
    chunk = bytearray(_CHUNK)
    while True:
        n = response.readinto(chunk)
        if not n:
            return body
        body += memoryview(chunk)[:n]
        if len(body) > limit:
            raise CorruptFileError(
                f"{url}: the answer is larger than {limit / 2**30:g} GiB; ctflow refuses it"
            )


def _status_error(url: str, code: int, reason: str, what: str) -> CorruptFileError:
    """Return the error of an HTTP error status, saying what it likely means."""
    hints = {
        401: "the server wants credentials: pass headers= (e.g. Authorization)",
        403: "the server refuses access with the headers given",
        404: f"no such {what} on the server",
    }
    hint = hints.get(code, "")
    return CorruptFileError(f"{url}: HTTP {code} {reason}".rstrip() + (f": {hint}" if hint else ""))


@dataclass
class _Answer:
    """What a request brought back."""

    body: bytearray
    content_type: str
    status: int
    warning: str  # the Warning header ("" when none)
    reason: str = ""  # the reason phrase of the status line


def _get(url: str, accept: str, options: _Options, what: str, limit: int) -> _Answer:
    """GET ``url``; every failure is a typed error naming it."""
    import urllib.request

    request = urllib.request.Request(url, headers={**dict(options.headers), "Accept": accept})
    return _send(request, options, what, limit)


def _error_answer(error: Any, url: str, limit: int) -> _Answer:
    """Return an HTTP error status as an answer, with as much of its body as can be read."""
    import http.client

    try:
        body = _read_body(error, url, limit)
    except (http.client.HTTPException, OSError, ValueError, AttributeError):
        body = bytearray()  # the status alone then tells what happened
    finally:
        error.close()
    headers = error.headers
    return _Answer(
        body,
        headers.get("Content-Type", "") if headers is not None else "",
        int(error.code),
        headers.get("Warning", "") if headers is not None else "",
        str(error.reason or ""),
    )


def _send(
    request: Request, options: _Options, what: str, limit: int, *, keep_errors: bool = False
) -> _Answer:
    """Send ``request`` and read the answer; every failure is a typed error naming the URL.

    With ``keep_errors`` an HTTP error status comes back as an answer (with its body) instead
    of an error: a STOW-RS server says in the body why it refused instances.
    """
    import http.client
    import urllib.error

    url = request.full_url
    try:
        with _opener().open(request, timeout=options.timeout) as response:
            body = _read_body(response, url, limit)
            return _Answer(
                body,
                response.headers.get("Content-Type", ""),
                int(response.status),
                response.headers.get("Warning", ""),
                str(response.reason or ""),
            )
    except CTFlowError:
        raise
    except urllib.error.HTTPError as exc:
        if keep_errors:
            return _error_answer(exc, url, limit)
        raise _status_error(url, exc.code, str(exc.reason or ""), what) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, CTFlowError):  # raised while the request body was sent
            raise reason from None
        if isinstance(reason, TimeoutError):
            text = f"no answer within {options.timeout:g} s"
        else:
            text = str(getattr(reason, "strerror", None) or reason)
        raise CorruptFileError(f"{url}: cannot reach the DICOMweb server ({text})") from None
    except TimeoutError:
        raise CorruptFileError(
            f"{url}: the DICOMweb server stopped answering (no data within {options.timeout:g} s)"
        ) from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise CorruptFileError(
            f"{url}: the connection failed while reading the answer "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


# ---------------------------------------------------------------------------- QIDO-RS


def _json_value(element: Any) -> Any:
    """Return the value of one DICOM JSON element as plain Python (see the module doc)."""
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return element.get("BulkDataURI")
    vr = element.get("vr")
    out: list[Any] = []
    for v in values:
        if vr == "PN" and isinstance(v, Mapping):
            v = v.get("Alphabetic")
        elif vr == "SQ" and isinstance(v, Mapping):
            v = _keywords(v)
        elif vr in ("IS", "DS") and isinstance(v, str):
            with contextlib.suppress(ValueError):
                v = int(v) if vr == "IS" else float(v)
        out.append(v)
    return out[0] if len(out) == 1 else out


def _keywords(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Return DICOM JSON attributes (tag -> element) as keyword -> value."""
    from pydicom.datadict import keyword_for_tag

    out: dict[str, Any] = {}
    for tag, element in attributes.items():
        try:
            keyword = keyword_for_tag(int(str(tag), 16)) or str(tag)
        except ValueError:
            keyword = str(tag)
        out[keyword] = _json_value(element)
    return out


def _url(base: str, query: Mapping[str, Any]) -> str:
    """Return ``base`` with a query string."""
    return f"{base}?{urlencode(query)}" if query else base


def _qido_page(url: str, options: _Options, what: str) -> tuple[list[dict[str, Any]], bool]:
    """Return one QIDO-RS answer as keyword dicts, and whether it says more results exist.

    A server that caps its answer says so in a ``Warning`` header ("... additional results
    ...", DICOM PS3.18).
    """
    answer = _get(url, _DICOM_JSON, options, what, _MAX_JSON_BYTES)
    body, content_type = answer.body, answer.content_type
    more = "additional results" in answer.warning.lower()
    if answer.status == 204 or not body.strip():
        return [], more
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        if "json" not in content_type.lower():
            raise UnsupportedFormatError(
                f"{url}: the server answered {content_type or 'no Content-Type'}, not "
                f"{_DICOM_JSON}; is the URL the DICOMweb root of the server?"
            ) from None
        raise CorruptFileError(f"{url}: the DICOM JSON answer cannot be parsed ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(d, Mapping) for d in data):
        got = type(data).__name__
        if isinstance(data, list):
            odd = next(d for d in data if not isinstance(d, Mapping))
            got = f"a list holding {type(odd).__name__} {str(odd)[:60]!r}"
        raise CorruptFileError(
            f"{url}: a QIDO-RS answer must be a JSON list of objects (DICOM JSON); got {got} "
            "(is the URL the DICOMweb root of the server?)"
        )
    return [_keywords(d) for d in data], more


def _qido(
    base: str, query: Mapping[str, Any], options: _Options, what: str, key: str
) -> list[dict[str, Any]]:
    """Return every result of a QIDO-RS query, unique by the UID ``key``.

    No ``limit`` is sent (some servers apply it before their own filters, so a page can come
    back short while more results exist). A server that caps its answer says so in a Warning
    header; the rest is then asked for with ``offset``, until a page says nothing more or brings
    nothing new.
    """
    results: list[dict[str, Any]] = []
    seen: set[str] = set()
    while True:
        url = _url(base, {**query, "offset": len(results)} if results else query)
        page, more = _qido_page(url, options, what)
        fresh = [r for r in page if str(r.get(key)) not in seen]
        seen.update(str(r.get(key)) for r in fresh)
        results.extend(fresh)
        if not more or not fresh:
            return results


def _listed_uid(attributes: Mapping[str, Any], keyword: str, url: str) -> str:
    """Return the UID a QIDO-RS result must carry; refuse a missing or malformed one."""
    uid = attributes.get(keyword)
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        raise CorruptFileError(f"{url}: a result has no valid {keyword} (got {uid!r})")
    return uid


def _as_study_uids(study_uids: object, where: str) -> list[str] | None:
    """Return the study UIDs asked for (a str or a sequence of str), or None for all."""
    if study_uids is None:
        return None
    items = [study_uids] if isinstance(study_uids, str) else study_uids
    if not isinstance(items, Iterable) or isinstance(items, bytes | Mapping):
        raise InvalidParameterError(
            f"{where}: study_uids must be a UID or a sequence of UIDs; got {study_uids!r}"
        )
    uids = [_check_uid(u, "every study UID", where) for u in items]
    return list(dict.fromkeys(uids))


def _as_modality(modality: object, where: str) -> str | None:
    """Return a Modality to list (upper case), or None for every series."""
    if modality is None:
        return None
    if not isinstance(modality, str) or not _MODALITY.fullmatch(modality.upper()):
        raise InvalidParameterError(
            f"{where}: modality must be a DICOM Modality such as 'CT' or 'SEG' (1 to 16 "
            f"letters, digits or _), or None for every series; got {modality!r}"
        )
    return modality.upper()


def list_series(
    url: str,
    study_uids: str | Iterable[str] | None = None,
    *,
    modality: str | None = "CT",
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """List the CT series (or those of another modality) of a DICOMweb server by QIDO-RS.

    Parameters
    ----------
    url : str
        The server's DICOMweb root, e.g. ``"http://localhost:8042/dicom-web"``.
    study_uids : str or sequence of str, optional
        Only these studies (default: every study of the server).
    modality : str or None, default "CT"
        Only the series of this Modality (``?Modality=`` of the query, and checked again on
        the answer), e.g. ``"SEG"`` for segmentations; None lists every series.
    headers : mapping of str to str, optional
        Extra request headers (default: those of :func:`set_server_options`).
    timeout : float, optional
        Seconds to wait for the server (default: that of :func:`set_server_options`, 60).

    Returns
    -------
    list of dict
        One dict per series, DICOM keyword -> value (module doc), with at least
        ``StudyInstanceUID`` and ``SeriesInstanceUID``; in the order of the server's answers.

    Raises
    ------
    InvalidParameterError
        A URL or UID that cannot be used.
    CorruptFileError
        The server cannot be reached, answers an HTTP error (e.g. 404 for an unknown study),
        or answers malformed DICOM JSON.
    UnsupportedFormatError
        The server answers something else than JSON (the URL is not a DICOMweb root?).

    Examples
    --------
    With a DICOMweb server at ``http://localhost:8042/dicom-web`` (Orthanc's default root;
    ``tests/io/test_dicomweb.py`` starts one)::

        series = list_series("http://localhost:8042/dicom-web")
        [(s["SeriesDescription"], s["NumberOfSeriesRelatedInstances"]) for s in series]
        # [('CT Body 3.0', 20)]
        [s["SeriesNumber"] for s in list_series("http://localhost:8042/dicom-web",
                                                modality="SEG")]
        # [99]
    """
    root = _root(url, "list_series")
    options = _options(root, headers, timeout, "list_series")
    wanted = _as_modality(modality, "list_series")
    query = {} if wanted is None else {"Modality": wanted}
    studies = _as_study_uids(study_uids, "list_series")
    if studies is None:
        listed = _qido(f"{root}/studies", {}, options, "study", "StudyInstanceUID")
        studies = [_listed_uid(s, "StudyInstanceUID", f"{root}/studies") for s in listed]
    out: list[dict[str, Any]] = []
    for study in studies:
        base = f"{root}/studies/{quote(study, safe='.')}/series"
        for attributes in _qido(base, query, options, "study", "SeriesInstanceUID"):
            _listed_uid(attributes, "SeriesInstanceUID", base)
            attributes.setdefault("StudyInstanceUID", study)
            given = attributes.get("Modality")
            if wanted is None or given is None or str(given).upper() == wanted:
                out.append(attributes)
    return out


def dicomweb_sources(
    url: str,
    study_uids: str | Iterable[str] | None = None,
    series_filter: Callable[[dict[str, Any]], bool] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, str]:
    """Return SeriesInstanceUID -> series source for the CT series of a server (QIDO-RS).

    What :meth:`ctflow.Dataset.from_dicomweb` is made of: :func:`list_series`, then
    ``series_filter`` on each series' attributes (it must return True or False); the headers
    and time-out given are kept for the server (:func:`set_server_options`).

    Raises
    ------
    InvalidParameterError
        Bad arguments, a filter that returns something else than a bool, no CT series left,
        or one SeriesInstanceUID in two studies.
    CorruptFileError, UnsupportedFormatError
        As :func:`list_series`.

    Examples
    --------
    With a DICOMweb server at ``http://localhost:8042/dicom-web``::

        dicomweb_sources("http://localhost:8042/dicom-web")
        # {'1.2.3.4': 'dicomweb+http://localhost:8042/dicom-web/studies/1.2.3/series/1.2.3.4'}
    """
    where = "from_dicomweb"
    root = _root(url, where)
    if series_filter is not None and not callable(series_filter):
        raise InvalidParameterError(
            f"{where}: series_filter must be a callable taking a series' attributes (a dict "
            f"keyword -> value) and returning a bool; got {series_filter!r}"
        )
    checked_headers = None if headers is None else dict(_as_headers(headers, where))
    checked_timeout = None if timeout is None else _as_timeout(timeout, where)
    series = list_series(root, study_uids, headers=checked_headers, timeout=checked_timeout)
    sources: dict[str, str] = {}
    for attributes in series:
        if series_filter is not None:
            keep = series_filter(dict(attributes))
            if not isinstance(keep, bool | np.bool_):
                raise InvalidParameterError(
                    f"{where}: series_filter must return True or False; got {keep!r} for "
                    f"series {attributes['SeriesInstanceUID']}"
                )
            if not keep:
                continue
        uid, study = attributes["SeriesInstanceUID"], attributes["StudyInstanceUID"]
        source = series_source(root, study, uid)
        if uid in sources and sources[uid] != source:
            raise InvalidParameterError(
                f"{where}: series {uid} is listed in two studies: {sources[uid]} and {source}"
            )
        sources[uid] = source
    if not sources:
        which = "" if study_uids is None else f" in studies {study_uids!r}"
        kept = f" ({len(series)} CT series found, none kept by series_filter)" if series else ""
        raise InvalidParameterError(f"{where}: no CT series at {root}{which}{kept}")
    set_server_options(root, headers=checked_headers, timeout=checked_timeout)
    return sources


# ---------------------------------------------------------------------------- WADO-RS


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    """Return (media type in lower case, parameters) of a Content-Type header value."""
    from email.message import Message

    msg = Message()
    msg["Content-Type"] = value
    params = {}
    for key, val in (msg.get_params(header="Content-Type", unquote=True) or [])[1:]:
        params[key.lower()] = val if isinstance(val, str) else ""
    media = value.split(";", 1)[0].strip().lower()
    return media, params


def _boundary(content_type: str, where: str) -> bytes:
    """Return the multipart delimiter ``--<boundary>`` of a WADO-RS answer."""
    media, params = _content_type(content_type)
    if media != "multipart/related":
        raise UnsupportedFormatError(
            f"{where}: the server answered Content-Type {content_type or '(none)'!r}, not "
            'multipart/related; type="application/dicom" (is the URL a WADO-RS series?)'
        )
    kind = params.get("type", "application/dicom").lower()
    if kind != "application/dicom":
        raise UnsupportedFormatError(
            f"{where}: the server answered multipart/related parts of type {kind!r}, not "
            "application/dicom"
        )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise CorruptFileError(
            f"{where}: the multipart Content-Type has no valid boundary (1 to 70 ASCII "
            f"characters); got {content_type!r}"
        )
    return b"--" + boundary.encode("ascii")


def _part_headers(head: bytes, where: str, n: int) -> dict[str, str]:
    """Parse the header lines of multipart part ``n``."""
    out: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise CorruptFileError(f"{where}: part {n} has a malformed header line {line[:80]!r}")
        out[name.strip().lower()] = value.strip()
    return out


def _check_part(headers: Mapping[str, str], size: int, where: str, n: int) -> None:
    """Refuse a part that is not DICOM or whose length differs from its Content-Length."""
    if "content-type" in headers:
        media, _ = _content_type(headers["content-type"])
        if media != "application/dicom":
            raise UnsupportedFormatError(
                f"{where}: part {n} is {media!r}, not application/dicom; ctflow reads DICOM "
                "instances"
            )
    encoding = headers.get("content-transfer-encoding", "binary").lower()
    if encoding not in ("binary", "8bit", "7bit"):
        raise UnsupportedFormatError(
            f"{where}: part {n} has Content-Transfer-Encoding {encoding!r}; binary expected"
        )
    if "content-length" in headers:
        text = headers["content-length"]
        if not text.isdigit() or int(text) != size:
            raise CorruptFileError(
                f"{where}: part {n} holds {size} bytes but its Content-Length says {text!r} "
                "(truncated or malformed answer)"
            )


def _part(body: Any, start: int, end: int, where: str, n: int) -> memoryview:
    """Return the content of the part between ``start`` and ``end`` (headers checked)."""
    view = memoryview(body)
    if body[start : start + 2] == b"\r\n":  # no headers
        headers: dict[str, str] = {}
        begin = start + 2
    else:
        stop = body.find(b"\r\n\r\n", start, min(end, start + _MAX_PART_HEADER) + 4)
        if stop < 0 or stop > end:
            raise CorruptFileError(
                f"{where}: part {n} has no end of headers (a blank line) within "
                f"{_MAX_PART_HEADER // 1024} KiB"
            )
        headers = _part_headers(bytes(body[start:stop]), where, n)
        begin = stop + 4
    _check_part(headers, end - begin, where, n)
    return view[begin:end]


def _split_multipart(body: Any, content_type: str, where: str) -> list[memoryview]:
    """Return the contents of the parts of a ``multipart/related`` body (RFC 2046).

    ``body`` is bytes-like (``bytes``, ``bytearray``); the parts are views into it, not copies.

    Raises
    ------
    UnsupportedFormatError
        Not ``multipart/related`` of ``application/dicom``, a part of another type.
    CorruptFileError
        No boundary, no delimiter, a malformed delimiter line or part header, a part shorter
        or longer than its Content-Length, no closing delimiter (a truncated body).
    """
    delimiter = _boundary(content_type, where)
    following = b"\r\n" + delimiter
    if bytes(body[: len(delimiter)]) == delimiter:
        at = 0
    else:
        found = body.find(following)
        if found < 0:
            raise CorruptFileError(
                f"{where}: the multipart body holds no delimiter of its boundary "
                f"({len(body)} bytes; empty or not multipart)"
            )
        at = found + 2
    parts: list[memoryview] = []
    while True:
        after = at + len(delimiter)
        if bytes(body[after : after + 2]) == b"--":
            return parts  # the closing delimiter; an epilogue is ignored
        line_end = after
        while body[line_end : line_end + 1] in (b" ", b"\t"):  # transport padding
            line_end += 1
        if line_end + 2 > len(body):
            raise CorruptFileError(
                f"{where}: the multipart body ends after part {len(parts)} without its closing "
                "delimiter (truncated answer)"
            )
        if bytes(body[line_end : line_end + 2]) != b"\r\n":
            raise CorruptFileError(
                f"{where}: malformed multipart delimiter line after part {len(parts)} "
                f"(at byte {at}); truncated answer?"
            )
        start = line_end + 2
        end = body.find(following, start)
        if end < 0:
            raise CorruptFileError(
                f"{where}: the multipart body ends inside part {len(parts) + 1} without its "
                "closing delimiter (truncated answer)"
            )
        parts.append(_part(body, start, end, where, len(parts) + 1))
        at = end + 2


def _relabel(value: Any, folder: str, source: str) -> Any:
    """Return ``value`` with every text naming the temporary folder naming the source instead."""
    if isinstance(value, str):
        return value.replace(folder, source)
    if isinstance(value, dict):
        return {k: _relabel(v, folder, source) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_relabel(v, folder, source) for v in value)
    return value


def _write_parts(parts: list[memoryview], folder: Path, source: str) -> None:
    """Write every part as ``part-00001.dcm`` ... into ``folder``."""
    try:
        for n, part in enumerate(parts, 1):
            (folder / f"part-{n:05d}.dcm").write_bytes(part)
    except OSError as exc:
        raise CorruptFileError(
            f"{source}: cannot write the retrieved instances to a temporary folder "
            f"({exc.strerror or exc}); set TMPDIR to a folder with space"
        ) from None


def _retrieve(
    source: str, headers: object, timeout: object, where: str
) -> tuple[str, list[memoryview], int]:
    """GET a series by WADO-RS; return its URL, its instances (views) and the bytes read."""
    root, study, series = _split_source(source, where)
    options = _options(root, headers, timeout, where)
    url = f"{root}/studies/{quote(study, safe='.')}/series/{quote(series, safe='.')}"
    answer = _get(url, _WADO_ACCEPT, options, "series", _MAX_SERIES_BYTES)
    return url, _split_multipart(answer.body, answer.content_type, url), len(answer.body)


def _empty_folder(folder: object, where: str) -> Path:
    """Return ``folder`` created if absent; refuse a file or a folder that holds anything."""
    from ctflow.io.voxels import as_source_path

    path = as_source_path(folder, where)
    try:
        path.mkdir(parents=True, exist_ok=True)
        crowded = next(path.iterdir(), None) is not None
    except FileExistsError:
        raise InvalidParameterError(f"{where}: folder {path} is a file, not a folder") from None
    except NotADirectoryError:
        raise InvalidParameterError(f"{where}: folder {path} is a file, not a folder") from None
    except OSError as exc:
        raise CorruptFileError(
            f"{where}: cannot make or list folder {path} ({exc.strerror or exc})"
        ) from None
    if crowded:
        raise InvalidParameterError(
            f"{where}: folder {path} is not empty; give an empty or new folder (the instances "
            "are written as part-00001.dcm ..., and other files there would be taken for them)"
        )
    return path


def retrieve_series(
    source: str,
    folder: str | os.PathLike[str],
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[Path]:
    """Retrieve every instance of a series by WADO-RS into a folder, as the server stores them.

    The same request as :func:`read_dicomweb_series` (``transfer-syntax=*``: the bytes as
    stored, no transcoding), for what needs the files themselves: the headers of a series
    (e.g. :func:`~ctflow.io.dicom.write_dicom_seg` references the series' instances), a SEG
    or RT Structure Set series, a local copy.

    Parameters
    ----------
    source : str
        ``dicomweb+http(s)://host/<root>/studies/<study>/series/<series>``
        (:func:`series_source`); any modality.
    folder : path
        Where the instances are written, ``part-00001.dcm`` ... in the order of the answer;
        created if absent, and it must be empty.
    headers : mapping of str to str, optional
        Extra request headers (default: those of :func:`set_server_options` for the server).
    timeout : float, optional
        Seconds to wait for the server (default: that of :func:`set_server_options`, 60).

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of the answer.

    Raises
    ------
    InvalidParameterError
        ``source`` does not name a DICOMweb series; ``folder`` is a file or not empty.
    CorruptFileError
        The server cannot be reached, answers an HTTP error (404: unknown series), or a
        truncated or malformed body; the files cannot be written (those written are removed).
    UnsupportedFormatError
        The answer is not ``multipart/related`` DICOM.

    Examples
    --------
    With a DICOMweb server at ``http://localhost:8042/dicom-web``::

        files = retrieve_series(
            "dicomweb+http://localhost:8042/dicom-web/studies/1.2.3/series/1.2.3.4", "series/"
        )
        [f.name for f in files[:2]]
        # ['part-00001.dcm', 'part-00002.dcm']
    """
    where = "retrieve_series"
    _split_source(source, where)  # a bad source is refused before the folder is made
    out = _empty_folder(folder, where)
    _, parts, _ = _retrieve(source, headers, timeout, where)
    try:
        _write_parts(parts, out, source)
    except CTFlowError:
        for path in out.glob("part-*.dcm"):
            path.unlink(missing_ok=True)
        raise
    return [out / f"part-{n:05d}.dcm" for n in range(1, len(parts) + 1)]


def read_dicomweb_series(
    source: str,
    *,
    allow_uneven: bool = False,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Scan:
    """Retrieve one CT series by WADO-RS and read it as a local DICOM folder is read.

    Parameters
    ----------
    source : str
        ``dicomweb+http(s)://host/<root>/studies/<study>/series/<series>``
        (:func:`series_source`).
    allow_uneven : bool, default False
        As for :func:`~ctflow.io.dicom.read_dicom_series`.
    headers : mapping of str to str, optional
        Extra request headers (default: those of :func:`set_server_options` for the server).
    timeout : float, optional
        Seconds to wait for the server (default: that of :func:`set_server_options`, 60).

    Returns
    -------
    Scan
        As :func:`~ctflow.io.dicom.read_dicom_series` gives for the same files in a folder,
        with ``source`` the source URL, file names ``<source>/part-NNNNN.dcm`` (the N-th
        instance of the answer) and ``info["dicomweb"]`` (``url``, ``n_instances``,
        ``bytes``).

    Raises
    ------
    InvalidParameterError
        ``source`` does not name a DICOMweb series.
    CorruptFileError
        The server cannot be reached, answers an HTTP error (404: unknown series), or a
        truncated or malformed body; and every error of a bad series, as for a folder.
    UnsupportedFormatError
        The answer is not ``multipart/related`` DICOM; and as for a folder.
    InvalidScanError
        As for a folder (gaps, uneven spacing, not CT ...).

    Examples
    --------
    With a DICOMweb server at ``http://localhost:8042/dicom-web``::

        scan = read_dicomweb_series(
            "dicomweb+http://localhost:8042/dicom-web/studies/1.2.3/series/1.2.3.4"
        )
        scan.shape, scan.geometry.spacing.tolist()
        # ((20, 512, 512), [2.0, 0.9765625, 0.9765625])
    """
    from ctflow.io.dicom import read_dicom_series
    from ctflow.io.scan import Scan

    where = "read_dicomweb_series"
    series = _split_source(source, where)[2]
    url, parts, n_bytes = _retrieve(source, headers, timeout, where)
    with tempfile.TemporaryDirectory(prefix="ctflow-dicomweb-") as tmp:
        folder = Path(tmp)
        _write_parts(parts, folder, source)
        n_parts = len(parts)
        del parts  # the instances are on disk now
        try:
            scan = read_dicom_series(folder, allow_uneven=allow_uneven)
        except CTFlowError as exc:
            raise type(exc)(_relabel(str(exc), os.fspath(folder), source)) from None
    info = _relabel(scan.info, os.fspath(folder), source)
    info["dicomweb"] = {"url": url, "n_instances": n_parts, "bytes": n_bytes}
    if info.get("series_uid") != series:
        info.setdefault("warnings", []).append(
            f"the instances retrieved from {url} hold series {info.get('series_uid')!r}, not "
            f"{series!r} as the URL names"
        )
    return Scan(scan.images, scan.geometry, source, info)


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
