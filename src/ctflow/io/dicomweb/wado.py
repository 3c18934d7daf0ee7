"""WADO-RS: retrieve a series (multipart/related answers) and read it as a DICOM folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    UnsupportedFormatError,
)
from ctflow.io.dicomweb.server import (
    _MAX_PART_HEADER,
    _MAX_SERIES_BYTES,
    _WADO_ACCEPT,
    _get,
    _options,
    _split_source,
)

if TYPE_CHECKING:
    from ctflow.io.scan import Scan


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
