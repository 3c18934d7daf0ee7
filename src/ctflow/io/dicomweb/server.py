"""DICOMweb servers: source URLs, per-server request options, HTTP requests and errors."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
)
from ctflow.validation import as_float

if TYPE_CHECKING:
    from urllib.request import Request


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


# ---------------------------------------------------------------------------- DICOM JSON


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
