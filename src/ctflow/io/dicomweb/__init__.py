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

Modules
-------
:mod:`~ctflow.io.dicomweb.server` (source URLs, per-server options, HTTP, DICOM JSON),
:mod:`~ctflow.io.dicomweb.qido` (listing), :mod:`~ctflow.io.dicomweb.wado` (retrieval, the
multipart parser) and :mod:`~ctflow.io.dicomweb.stow` (storing); the public names are here.

Examples
--------
>>> source = series_source("http://127.0.0.1:8042/dicom-web", "1.2.3", "1.2.3.4")
>>> source
'dicomweb+http://127.0.0.1:8042/dicom-web/studies/1.2.3/series/1.2.3.4'
>>> is_dicomweb_url(source), is_dicomweb_url("/data/series_1")
(True, False)
"""

from ctflow.io.dicomweb.qido import dicomweb_sources, list_series
from ctflow.io.dicomweb.server import (
    SCHEMES,
    is_dicomweb_url,
    series_source,
    set_server_options,
)
from ctflow.io.dicomweb.stow import StoredInstance, StoreError, store_dicomweb
from ctflow.io.dicomweb.wado import read_dicomweb_series, retrieve_series

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
