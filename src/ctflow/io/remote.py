"""Sources and dumps behind fsspec URLs: ``s3://``, ``gs://``, ``az://``, ``http(s)://`` ...

A source that is a URL (``scheme://...``, other than ``file://`` and DICOMweb) is read by
fetching what the format needs into a private temporary folder — the file; a MetaImage or
detached NRRD header and the data file it names; every object of a DICOM series or of a
ctflow dump "folder", fetched concurrently — then read by the local reader (same geometry
rules, same errors), and the folder is removed. A dump to a URL is written locally (atomic,
checksummed, as always), then uploaded: the arrays first, ``meta.json`` last, so a reader that
trusts only items whose ``meta.json`` exists never sees half an item; arrays an earlier
version of the item left behind are removed after the new ``meta.json`` is in place (array
file names carry a hash of their content, so a reader of the old ``meta.json`` meanwhile still
finds its arrays).

Credentials and other fsspec options (``storage_options``: ``key``, ``secret``,
``client_kwargs={"endpoint_url": ...}``, ``anon`` ...) are kept per process, per protocol, in
memory (:func:`set_storage_options`); :class:`ctflow.Dataset` carries the ones it was given and
sets them in each process that makes its batches (a Dask worker included). They are never in
sources, records, reports or ``meta.json``.

Sources are fetched whole, except dumps loaded with ``load(lazy=True)``: their crops read only
the chunks under them, by byte ranges (:mod:`ctflow.io.store.ranged`, :mod:`ctflow.lazy`).

Examples
--------
>>> is_url("s3://bucket/scans/a.nii.gz"), is_url("/data/a.nii.gz"), is_url("file:///d/a.mhd")
(True, False, False)
>>> split_url("s3://bucket/scans/a.nii.gz")
('s3', 'bucket/scans/a.nii.gz')
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctflow.errors import CorruptFileError, InvalidParameterError

__all__ = [
    "HEAD_BYTES",
    "completer",
    "exists",
    "fetch",
    "filesystem",
    "glob",
    "is_url",
    "local_stem",
    "set_storage_options",
    "split_url",
    "upload_item",
]

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
_options: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()
#: bytes of each object fetched by ``fetch(url, heads=True)`` (a DICOM header and more)
HEAD_BYTES = 64 * 1024
_partial: dict[str, Callable[[Sequence[Path]], None]] = {}  # local folder -> its completer
#: header files that name a data file beside them
_HEADER_DATA = {
    ".mhd": r"^\s*ElementDataFile\s*=\s*(.+?)\s*$",
    ".nhdr": r"^\s*data ?file\s*:\s*(.+?)\s*$",
}


def _storage_errors() -> tuple[type[Exception], ...]:
    """Return the errors a storage library raises for a failed call.

    OSError, and botocore's own (``NoCredentialsError`` ... pass through s3fs untranslated).
    """
    errors: list[type[Exception]] = [OSError]
    boto = sys.modules.get("botocore.exceptions")
    if boto is not None:
        errors.append(boto.BotoCoreError)
    return tuple(errors)


def is_url(source: Any) -> bool:
    """Return True for an fsspec URL ctflow fetches (not a local path, ``file://`` or DICOMweb)."""
    if not isinstance(source, str):
        return False
    match = _URL.match(source)
    if match is None:
        return False
    scheme = match.group(1).lower()
    return scheme != "file" and not scheme.startswith("dicomweb")


def split_url(url: str) -> tuple[str, str]:
    """Return ``(protocol, path)`` of a URL (the path as fsspec names it, without the protocol)."""
    match = _URL.match(url)
    if match is None:
        raise InvalidParameterError(f"{url!r} is not a URL (scheme://...)")
    return match.group(1).lower(), match.group(2)


def set_storage_options(protocol: str, options: Mapping[str, Any] | None) -> None:
    """Set the fsspec options of ``protocol`` (``"s3"``, ``"gs"`` ...) in this process.

    Examples
    --------
    >>> set_storage_options("memory", {})
    """
    if not isinstance(protocol, str) or not protocol:
        raise InvalidParameterError(f"storage options: protocol must be a name; got {protocol!r}")
    if options is not None and not isinstance(options, Mapping):
        raise InvalidParameterError(
            f"storage_options must be a dict of fsspec options; got {type(options).__name__}"
        )
    with _lock:
        _options[protocol.lower()] = dict(options or {})


def filesystem(url: str) -> Any:
    """Return the fsspec file system of a URL, with this process's options for its protocol.

    Raises
    ------
    MissingDependencyError
        The protocol's fsspec implementation is not installed (``s3fs`` for ``s3://``: the
        ``ctflow[s3]`` extra).
    """
    import fsspec

    from ctflow.deps import optional_import

    protocol, _ = split_url(url)
    with _lock:
        options = dict(_options.get(protocol, {}))
    known = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs"}
    if protocol in known:
        optional_import(known[protocol], f"{protocol}:// URLs")
    try:
        return fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as exc:
        raise InvalidParameterError(f"{url}: no file system for {protocol}:// ({exc})") from exc


def _url(protocol: str, path: str) -> str:
    return f"{protocol}://{path}"


def glob(pattern: str, dirs: bool) -> list[str]:
    """Return the URLs of the files (or folders) matching an fsspec glob, sorted."""
    fs = filesystem(pattern)
    protocol, path = split_url(pattern)
    _fresh(fs)
    try:
        found = fs.glob(path, detail=True)
    except _storage_errors() as exc:
        raise CorruptFileError(f"{pattern}: cannot be listed ({exc})") from exc
    kind = "directory" if dirs else "file"
    return sorted(_url(protocol, p) for p, info in found.items() if info.get("type") == kind)


def _fresh(fs: Any) -> None:
    """Forget the file system's cached listings (objects change behind a cached instance)."""
    invalidate = getattr(fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate()


def _fetch_one(fs: Any, remote: str, local: Path, url: str) -> None:
    try:
        fs.get_file(remote, str(local))
    except FileNotFoundError:
        raise CorruptFileError(f"{url}: no such object") from None
    except _storage_errors() as exc:
        raise CorruptFileError(f"{url}: cannot be fetched ({exc})") from exc


@contextmanager
def fetch(url: str, heads: bool = False) -> Iterator[Path]:
    """Fetch what a source URL needs into a private folder; yield the local path to read.

    A file is fetched alone, with the data file its MetaImage / detached NRRD header names
    beside it; a "folder" (a DICOM series, a dump item) is fetched whole, its objects
    concurrently. With ``heads=True`` a folder that is not a dump item gets only the first
    :data:`HEAD_BYTES` of each object (one ranged GET each, concurrently), in a sparse file of
    the object's size; :func:`completer` then fetches the rest of the files a reader needs
    (the DICOM reader: the chosen series' slices, and files its fast header pass declines).
    The folder is removed when the block ends.

    Raises
    ------
    CorruptFileError
        No such object or folder, or it cannot be fetched (the message names the URL).
    """
    fs = filesystem(url)
    _, path = split_url(url)
    path = path.rstrip("/")
    tmp = Path(tempfile.mkdtemp(prefix="ctflow-fetch-"))
    _fresh(fs)
    try:
        try:
            is_dir = fs.isdir(path)
        except _storage_errors() as exc:
            raise CorruptFileError(f"{url}: cannot be reached ({exc})") from exc
        name = posixpath.basename(path) or "item"
        if is_dir:
            local = tmp / name
            local.mkdir()
            targets = _folder_targets(fs, path, local, url)
            if heads and not any(t.name == "meta.json" for _, t, _ in targets):
                _fetch_heads(fs, targets, url)
                with _lock:
                    _partial[os.fspath(local)] = _Rest(fs, targets, url)
                try:
                    yield local
                finally:
                    with _lock:
                        _partial.pop(os.fspath(local), None)
                return
            _get_all(fs, [(f, t) for f, t, _ in targets], url)
            yield local
            return
        local = tmp / name
        _fetch_one(fs, path, local, url)
        for suffix, pattern in _HEADER_DATA.items():
            if name.lower().endswith(suffix):
                for data in _data_files(local, pattern):
                    remote = posixpath.join(posixpath.dirname(path), data)
                    _fetch_one(fs, remote, tmp / data, _url(split_url(url)[0], remote))
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _folder_targets(fs: Any, path: str, local: Path, url: str) -> list[tuple[str, Path, int]]:
    """List a folder's own objects: (remote path, local path, size)."""
    try:
        found = fs.find(path, detail=True)
    except _storage_errors() as exc:
        raise CorruptFileError(f"{url}: cannot be listed ({exc})") from exc
    files = {f: info for f, info in found.items() if not f.endswith("/")}
    if not files:
        raise CorruptFileError(f"{url}: no such object or folder, or an empty one")
    root = fs._strip_protocol(path).rstrip("/")  # as find names them ("/c/k" in memory://)
    targets = []
    for f, info in sorted(files.items()):
        rel = posixpath.relpath(f, root)
        if rel.startswith("..") or "/" in rel:  # only the folder's own files
            continue
        targets.append((f, local / rel, int(info.get("size") or 0)))
    return targets


def _get_all(fs: Any, pairs: list[tuple[str, Path]], url: str) -> None:
    """Fetch objects whole, concurrently: ``(remote path, local path)`` pairs."""
    try:
        fs.get([f for f, _ in pairs], [str(p) for _, p in pairs])
    except FileNotFoundError:
        raise CorruptFileError(f"{url}: an object vanished while fetched") from None
    except _storage_errors() as exc:
        raise CorruptFileError(f"{url}: cannot be fetched ({exc})") from exc


def _fetch_heads(fs: Any, targets: list[tuple[str, Path, int]], url: str) -> None:
    """Write the first HEAD_BYTES of each object into a sparse file of the object's size."""
    ends = [min(size, HEAD_BYTES) for _, _, size in targets]
    try:
        heads = fs.cat_ranges([f for f, _, _ in targets], [0] * len(targets), ends)
    except _storage_errors() as exc:
        raise CorruptFileError(f"{url}: cannot be fetched ({exc})") from exc
    for (_, local, size), head in zip(targets, heads, strict=True):
        if isinstance(head, BaseException):
            raise CorruptFileError(f"{url}: {local.name} cannot be fetched ({head})")
        with open(local, "wb") as fh:
            fh.write(head)
            fh.truncate(size)


class _Rest:
    """Fetches the rest of the files of a folder fetched by heads (see :func:`completer`)."""

    def __init__(self, fs: Any, targets: list[tuple[str, Path, int]], url: str) -> None:
        self.fs = fs
        self.url = url
        self.todo = {t: (f, size) for f, t, size in targets if size > HEAD_BYTES}
        self.lock = threading.Lock()

    def __call__(self, paths: Sequence[Path]) -> None:
        with self.lock:
            wanted = [(self.todo.pop(Path(p)), Path(p)) for p in paths if Path(p) in self.todo]
        if not wanted:
            return
        _get_all(self.fs, [(f, p) for (f, _), p in wanted], self.url)


def completer(folder: str | os.PathLike[str]) -> Callable[[Sequence[Path]], None] | None:
    """Return what fetches the rest of files of a folder fetched by heads, or None.

    ``complete(paths)`` fetches those files whole (once; files no longer than
    :data:`HEAD_BYTES` are already whole). None: the folder is not one fetched by
    ``fetch(url, heads=True)`` (a local folder: every file is whole).
    """
    with _lock:
        return _partial.get(os.fspath(folder))


def _data_files(header: Path, pattern: str) -> list[str]:
    """Return the data file a header names beside it (none: LOCAL data, other folders)."""
    text = header.read_text(errors="replace")[:65536]
    for line in text.splitlines():
        match = re.match(pattern, line, re.IGNORECASE)
        if match:
            value = match.group(1).strip()
            if value.upper() in ("LOCAL", "LIST") or value.upper().startswith("LIST"):
                return []
            name = value.split()[0]
            if "/" in name or "\\" in name or name in (".", ".."):
                return []  # outside its folder: the reader refuses it, with its own message
            return [name]
    return []


def upload_item(local: Path, url: str) -> None:
    """Upload a dump item folder to ``url`` (the item's folder URL): arrays, then meta.json.

    Arrays of an earlier version of the item that the new ``meta.json`` does not name are
    removed after it is in place.

    Raises
    ------
    CorruptFileError
        An object cannot be written (the message names the URL).
    """
    fs = filesystem(url)
    protocol, path = split_url(url)
    path = path.rstrip("/")
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    arrays = [n for n in names if n != "meta.json"]
    _fresh(fs)
    try:
        try:
            before = {posixpath.basename(f) for f in fs.find(path)}
        except _storage_errors():
            before = set()
        if arrays:
            fs.put([str(local / n) for n in arrays], [f"{path}/{n}" for n in arrays])
        fs.put_file(str(local / "meta.json"), f"{path}/meta.json")  # last: the item exists
        stale = sorted(before - set(names))
        if stale:
            fs.rm([f"{path}/{n}" for n in stale])
    except _storage_errors() as exc:
        raise CorruptFileError(f"{_url(protocol, path)}: cannot be written ({exc})") from exc


def exists(url: str) -> bool:
    """Return True when the object or folder exists."""
    fs = filesystem(url)
    _fresh(fs)
    try:
        return bool(fs.exists(split_url(url)[1]))
    except _storage_errors():
        return False


def local_stem(url: str) -> str:
    """Return the last name of a URL's path (an id, a file name)."""
    return posixpath.basename(split_url(url)[1].rstrip("/"))
