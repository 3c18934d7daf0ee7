"""QIDO-RS: list the series of a DICOMweb server (and make dataset sources of them)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from ctflow.errors import (
    CorruptFileError,
    InvalidParameterError,
    UnsupportedFormatError,
)
from ctflow.io.dicomweb.server import (
    _DICOM_JSON,
    _MAX_JSON_BYTES,
    _MODALITY,
    _UID,
    _as_headers,
    _as_timeout,
    _check_uid,
    _get,
    _keywords,
    _Options,
    _options,
    _root,
    series_source,
    set_server_options,
)

# ---------------------------------------------------------------------------- QIDO-RS


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
