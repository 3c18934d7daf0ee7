"""Helpers shared by the ``ctflow`` commands: sizes, cores, scans, sources and outputs at URLs.

A command's source may be an fsspec URL (``s3://``, ``gs://``, ``az://``, ``http(s)://``): it is
fetched into a private temporary folder (:func:`local_source`, through
:func:`ctflow.io.remote.fetch`), read there, and errors name the URL. A destination URL is
written locally, then uploaded (:func:`local_destination`): a ctflow item as ``dump`` uploads
one (arrays first, ``meta.json`` last), a scan file after the data file its header names.

fsspec options come from ``--storage-options`` (a JSON object, or ``@FILE`` holding one; added
to fsspec's configuration for the protocol of every URL the command names), from fsspec's own
configuration (``FSSPEC_S3='{"endpoint_url": ...}'``, ``FSSPEC_S3_ANON=true``, files in
``~/.config/fsspec``) and from the storage's usual credentials (``AWS_*``, ``~/.aws``, gcloud's
default credentials ...). They are never printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import posixpath
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SCAN_SUFFIXES",
    "LocalSource",
    "add_storage_options",
    "local_destination",
    "local_source",
    "parse_storage_options",
    "use_storage_options",
]

#: help of ``--storage-options`` (every command that takes a path or URL has it)
_STORAGE_HELP = (
    "fsspec options for the URLs (s3://, gs://, az://, http(s)://) the command names: a JSON "
    'object, e.g. \'{"anon": true}\' or \'{"client_kwargs": {"endpoint_url": '
    '"http://host:9000"}}\', or @FILE holding one (keeps credentials out of the shell '
    "history). fsspec's own config (FSSPEC_S3='{...}', ~/.config/fsspec) and the storage's "
    "credentials (AWS_*, ~/.aws ...) apply too. Never printed."
)

SCAN_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd", ".nhdr")


def _cores() -> int:
    from ctflow.system import cpu_count

    return cpu_count()


def _human_size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GiB"  # pragma: no cover


def _tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    if path.is_file():
        return path.stat().st_size, 1
    total = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(root) / name).stat().st_size
                files += 1
            except OSError:  # pragma: no cover - removed while walking
                pass
    return total, files


def _read_scan(path: str | Path, kind: str, args: argparse.Namespace) -> Any:
    """``read_scan`` with the command's DICOM options (``--allow-uneven``)."""
    import ctflow as cf

    if kind == "dicom" and getattr(args, "allow_uneven", False):
        return cf.read_scan(path, kind, allow_uneven=True)
    return cf.read_scan(path, kind)


def _print_warnings(command: str, info: dict[str, Any], shown: Callable[[str], str] = str) -> None:
    """Print what a reader decided on its own (``shown`` names a fetched copy by its URL)."""
    from ctflow.actions.io import reader_warnings

    for message in reader_warnings(info):
        print(f"ctflow {command}: warning: {shown(message)}", file=sys.stderr)


def _item_id(path: Path) -> str:
    from ctflow.dataset import _stem

    return _stem(path, path.is_dir())


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--storage-options JSON|@FILE`` to a command's parser.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_storage_options(p)
    >>> p.parse_args(["--storage-options", '{"anon": true}']).storage_options
    '{"anon": true}'
    """
    parser.add_argument("--storage-options", default=None, metavar="JSON|@FILE", help=_STORAGE_HELP)


def parse_storage_options(text: str | None) -> dict[str, Any] | None:
    """Return the fsspec options of ``--storage-options``: a JSON object, or ``@FILE`` of one.

    Errors never quote the text (it may hold credentials).

    Raises
    ------
    InvalidParameterError
        Not JSON, not an object, or an ``@FILE`` that cannot be read.

    Examples
    --------
    >>> parse_storage_options('{"anon": true}')
    {'anon': True}
    >>> parse_storage_options(None) is None
    True
    >>> try:
    ...     parse_storage_options('{"secret": "abc"')
    ... except Exception as exc:
    ...     print(exc)
    --storage-options is not valid JSON (Expecting ',' delimiter: line 1 column 17 (char 16))
    """
    from ctflow.errors import InvalidParameterError

    if text is None:
        return None
    where = "--storage-options"
    if text.startswith("@"):
        where = f"--storage-options file {text[1:]}"
        try:
            text = Path(text[1:]).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidParameterError(
                f"{where} cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})"
            ) from None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:  # its message gives the position, never the text
        raise InvalidParameterError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(options, dict):
        raise InvalidParameterError(
            f"{where} must be a JSON object of fsspec options (e.g. '{{\"anon\": true}}'); "
            f"got a {type(options).__name__}"
        )
    return options


def use_storage_options(args: argparse.Namespace, urls: Iterable[str | None]) -> None:
    """Add the command's ``--storage-options`` to fsspec's configuration for the URLs' protocols.

    They become this process's fsspec defaults for the protocol of each URL in ``urls`` (as
    ``FSSPEC_S3='{...}'`` would make them), so every file system ctflow opens for it has them,
    whoever opens it (a dataset made from a glob included). Without the option nothing is set:
    fsspec's own configuration and the storage's credentials apply.

    Examples
    --------
    >>> import fsspec.config
    >>> use_storage_options(argparse.Namespace(storage_options='{"skip_instance_cache": true}'),
    ...                     ["memory://x/a.mhd", "/local/b.mhd"])
    >>> fsspec.config.conf["memory"]
    {'skip_instance_cache': True}
    >>> del fsspec.config.conf["memory"]
    """
    import fsspec.config

    from ctflow.io.remote import is_url, split_url

    options = parse_storage_options(getattr(args, "storage_options", None))
    if options is None:
        return
    for url in urls:
        if url is not None and is_url(url):
            fsspec.config.conf.setdefault(split_url(url)[0], {}).update(copy.deepcopy(options))


@dataclass(frozen=True)
class LocalSource:
    """A command's source as read: the local ``path``, and how to name it back in messages.

    Examples
    --------
    >>> src = LocalSource("/tmp/ctflow-fetch-1/a.mhd", "/tmp/ctflow-fetch-1", "s3://b/scans")
    >>> src.shown("/tmp/ctflow-fetch-1/a.raw: truncated")
    's3://b/scans/a.raw: truncated'
    """

    path: str
    local_folder: str | None = None
    url_folder: str | None = None

    def shown(self, text: str) -> str:
        """Return ``text`` with the local copy named by its URL."""
        if self.local_folder is None or self.url_folder is None:
            return text
        return text.replace(self.local_folder, self.url_folder)

    def renamed(self, exc: BaseException) -> BaseException:
        """Return ``exc`` (same type) naming the URL instead of the local copy."""
        try:
            return type(exc)(self.shown(str(exc)))
        except Exception:  # pragma: no cover - an exception type with other arguments
            return exc


@contextmanager
def local_source(source: str) -> Iterator[LocalSource]:
    """Yield the source to read for a command's argument: itself, or a URL's fetched copy.

    The copy (with the data file a header names, or the whole folder of a DICOM series or a
    ctflow item) is removed when the block ends; a ctflow error raised in the block names the
    URL instead of the copy.

    Examples
    --------
    >>> with local_source("/data/a.mhd") as src:
    ...     src.path
    '/data/a.mhd'
    """
    from ctflow.errors import CTFlowError
    from ctflow.io.remote import fetch, is_url, split_url

    if not is_url(source):
        yield LocalSource(source)
        return
    protocol, path = split_url(source)
    parent = f"{protocol}://{posixpath.dirname(path.rstrip('/'))}"
    with ExitStack() as stack:
        with _storage_errors(source, "fetched"):
            local = stack.enter_context(fetch(source))
        fetched = LocalSource(str(local), str(local.parent), parent)
        try:
            yield fetched
        except CTFlowError as exc:
            raise fetched.renamed(exc) from exc


@contextmanager
def _storage_errors(url: str, doing: str) -> Iterator[None]:
    """Turn the storage library's own errors (no credentials, no endpoint ...) into ctflow's.

    ctflow's errors pass; any other is a :class:`~ctflow.errors.CorruptFileError` naming the
    URL and the library's error (whose message holds no credential).
    """
    from ctflow.errors import CorruptFileError, CTFlowError

    try:
        yield
    except CTFlowError:
        raise
    except Exception as exc:
        raise CorruptFileError(f"{url}: cannot be {doing} ({type(exc).__name__}: {exc})") from exc


@contextmanager
def local_destination(destination: str) -> Iterator[Path]:
    """Yield where to write a command's output; a URL gets a local stand-in, uploaded after.

    The stand-in has the URL's last name in a temporary folder. When the block ends without an
    error it is uploaded: a folder as a ctflow item (:func:`ctflow.io.remote.upload_item`:
    arrays first, ``meta.json`` last), a file after the other files written beside it (the
    data file a MetaImage / NRRD header names comes before the header).

    Examples
    --------
    >>> with local_destination("out/scan.nii.gz") as path:
    ...     path
    PosixPath('out/scan.nii.gz')
    """
    from ctflow.io.remote import is_url, local_stem

    if not is_url(destination):
        yield Path(destination)
        return
    with tempfile.TemporaryDirectory(prefix="ctflow-out-") as tmp:
        local = Path(tmp) / local_stem(destination)
        yield local
        _upload(local, destination)


def _upload(local: Path, url: str) -> None:
    """Upload a written item folder or file (with the files beside it) to ``url``."""
    from ctflow.errors import CorruptFileError
    from ctflow.io.remote import filesystem, split_url, upload_item

    with _storage_errors(url, "written"):
        if local.is_dir():
            upload_item(local, url)
            return
        fs = filesystem(url)
        path = split_url(url)[1]
        parent = posixpath.dirname(path)
        beside = sorted(p for p in local.parent.iterdir() if p.is_file() and p != local)
        try:
            for p in beside:  # data files first: the header that names them comes last
                fs.put_file(str(p), f"{parent}/{p.name}")
            fs.put_file(str(local), path)
        except OSError as exc:
            raise CorruptFileError(f"{url}: cannot be written ({exc})") from exc


def remote_tree_size(url: str) -> tuple[int, int, int]:
    """Return ``(bytes, files, items)`` under a URL; items are folders with a ``meta.json``."""
    from ctflow.errors import CorruptFileError
    from ctflow.io.remote import filesystem, split_url

    fs = filesystem(url)
    path = split_url(url)[1].rstrip("/")
    invalidate = getattr(fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate()
    with _storage_errors(url, "listed"):
        try:
            found = fs.find(path, detail=True)
        except FileNotFoundError:
            return 0, 0, 0
        except OSError as exc:
            raise CorruptFileError(f"{url}: cannot be listed ({exc})") from exc
    files = [(name, info) for name, info in found.items() if info.get("type") == "file"]
    size = sum(int(info.get("size") or 0) for _, info in files)
    items = sum(1 for name, _ in files if re.fullmatch(r"[^/]+/meta\.json", name[len(path) + 1 :]))
    return size, len(files), items
