"""The item cache behind the ``cache()`` action: RAM up to a budget, ctflow dumps beyond it.

A cached item is what the actions before ``cache()`` made of it (components, geometry, nodule
table, warnings, history), stored under a key made of the item's id and source, the run's seed
and a hash of the records of those actions. A pipeline whose earlier actions change (another
spacing, another window) gets another key and never reads stale data.

There is one store per process (:func:`store`): threads of a run, batches in flight with
prefetch and later epochs share it; each ``DataLoader`` worker process and each Dask worker
has its own (give ``dir=`` on a shared file system or object storage to share the spilled
items between them). Items go to RAM while the RAM budget allows (least recently used items
move out first) and to ``dir`` beyond it, as ctflow dumps (:mod:`ctflow.io.store`: atomic,
checksummed); without a ``dir`` an item that does not fit is not cached and is computed again
when asked for.

``dir`` may be an fsspec URL (``s3://bucket/cache``, ``gs://...``, ``az://...``): an item is
written locally, then uploaded as a dump to a URL is (:func:`ctflow.io.remote.upload_item`:
its arrays first, ``meta.json`` last), so an item whose upload stopped half way has no
``meta.json`` and is not an item (it is computed again). A spilled item is read back by
fetching its folder (:func:`ctflow.io.remote.fetch`). The fsspec options are the ones this
process has for the URL's protocol: a :class:`ctflow.Dataset`'s ``storage_options`` (set for
its sources' protocols), or :func:`ctflow.io.remote.set_storage_options`; they are never in
``meta.json``. The bucket (container) must exist: a missing one is an
:class:`~ctflow.errors.InvalidParameterError` naming the URL when the store is made.

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> from ctflow.io.annotations import empty_nodules
>>> from ctflow.io.store import StoredItem
>>> s = ItemCache(ram_bytes=1 << 20)
>>> s.put("k", StoredItem("a", {"images": np.zeros((2, 2, 2), np.int16)}, Geometry((1, 1, 1)),
...       empty_nodules()))
>>> s.get("k").components["images"].shape, s.get("missing")
((2, 2, 2), None)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctflow.errors import CorruptFileError, CTFlowError, InvalidParameterError
from ctflow.io.remote import is_url, split_url
from ctflow.io.store import StoredItem, read_item, write_item
from ctflow.validation import as_path

__all__ = ["ItemCache", "cache_dir", "cache_key", "prefix_hash", "store"]

#: URL schemes a cache cannot write to
_READ_ONLY = ("http", "https")


def prefix_hash(records: Sequence[Mapping[str, Any]]) -> str:
    """Return a hash of the action records before ``cache()`` (what the cached data depends on)."""
    text = json.dumps(list(records), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_key(prefix: str, item_id: str, source: str | None, seed: int | None) -> str:
    """Return the key of one item: the prefix hash, its id and source, the run's seed."""
    text = json.dumps([prefix, item_id, source, seed])
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def cache_dir(value: Any, where: str = "cache") -> str:
    """Return a cache folder as given to ``cache(dir=...)``: an absolute path or a URL.

    A local folder is made absolute (``file://`` URLs too); an fsspec URL is kept (without a
    trailing ``/``). Nothing is reached: the bucket is checked when the store is made.

    Raises
    ------
    InvalidParameterError
        Not a path or URL, a URL that names no bucket or folder, a read-only scheme
        (``http(s)://``) or one fsspec does not serve (``dicomweb+http://``).

    Examples
    --------
    >>> cache_dir("s3://bucket/cache/")
    's3://bucket/cache'
    >>> cache_dir("/data/cache")
    '/data/cache'
    >>> try:
    ...     cache_dir("https://example.org/cache")
    ... except InvalidParameterError as exc:
    ...     print(str(exc)[:60])
    cache: dir https://example.org/cache: http(s):// URLs are re
    """
    text = as_path(value, "dir", where)
    if "://" not in text:
        return text
    if text.lower().startswith("file://"):
        return as_path(text[len("file://") :], "dir", where)
    if not is_url(text):
        raise InvalidParameterError(
            f"{where}: dir {text}: not a folder or an fsspec URL (s3://, gs://, az:// ...)"
        )
    protocol, path = split_url(text)
    if protocol in _READ_ONLY:
        raise InvalidParameterError(
            f"{where}: dir {text}: http(s):// URLs are read-only; give a local folder or a URL "
            f"that can be written (s3://, gs://, az:// ...)"
        )
    if not path.strip("/"):
        raise InvalidParameterError(f"{where}: dir {text}: the URL names no bucket or folder")
    return text.rstrip("/")


def _check_reachable(url: str) -> None:
    """Raise a typed error naming ``url`` when its file system or bucket cannot be used.

    Object stores (a file system whose root is a list of buckets / containers) must have the
    URL's bucket; other file systems create folders as they are written.
    """
    from ctflow.io.remote import filesystem

    try:
        fs = filesystem(url)
    except CTFlowError as exc:
        message = str(exc) if str(exc).startswith(url) else f"{url}: {exc}"
        raise type(exc)(f"cache: dir {message}") from exc
    if getattr(fs, "root_marker", "/") != "":
        return
    bucket = split_url(url)[1].strip("/").split("/")[0]
    invalidate = getattr(fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate()
    try:
        found = bool(fs.exists(bucket))
    except Exception as exc:  # OSError, or the storage library's own (no credentials ...)
        raise CorruptFileError(
            f"cache: dir {url}: bucket {bucket!r} cannot be reached ({type(exc).__name__}: {exc})"
        ) from exc
    if not found:
        raise InvalidParameterError(
            f"cache: dir {url}: bucket {bucket!r} does not exist (or these credentials cannot "
            f"see it); create it, or give another dir"
        )


def _nbytes(item: StoredItem) -> int:
    return sum(int(a.nbytes) for a in item.components.values())


def _write(dst: str | os.PathLike[str], key: str, item: StoredItem) -> Path | None:
    """Write one item as ``<dst>/<key>`` (left alone when it is there); its folder or None."""
    return write_item(
        dst,
        key,
        item.components,
        item.geometry,
        nodules=item.nodules,
        source=item.source,
        skip_existing=True,
        warnings=item.warnings,
        history=item.history,
    )


def _read_url(url: str) -> StoredItem | None:
    """Return the item spilled at ``url`` (its folder), or None when it has no ``meta.json``.

    Errors name the URL, not the local copy read.
    """
    from ctflow.io.remote import exists, fetch

    if not exists(f"{url}/meta.json"):  # none, or an upload that stopped before its manifest
        return None
    with fetch(url) as local:
        try:
            return read_item(local)
        except CTFlowError as exc:
            raise type(exc)(str(exc).replace(str(local), url)) from exc


def _write_url(url: str, key: str, item: StoredItem) -> bool:
    """Upload one item to ``<url>/<key>`` (arrays, then ``meta.json``); False when it is there."""
    from ctflow.io.remote import exists, upload_item

    target = f"{url}/{key}"
    if exists(f"{target}/meta.json"):  # spilled by another process, or by an earlier run
        return False
    with tempfile.TemporaryDirectory(prefix="ctflow-cache-") as tmp:
        folder = _write(tmp, key, item)
        if folder is None:  # pragma: no cover - a fresh folder holds no item
            return False
        upload_item(folder, target)
    return True


class ItemCache:
    """Cached items of one process: RAM up to ``ram_bytes``, then ``dir`` (or nothing).

    Parameters
    ----------
    ram_bytes : int
        Budget of the arrays kept in RAM.
    dir : path or URL, optional
        Folder for the items beyond the budget (ctflow dumps, one folder per key): a local
        path, or an fsspec URL (``s3://bucket/cache``) whose bucket exists.

    Attributes
    ----------
    hits, misses, spilled, dropped : int
        Items found (in RAM or ``dir``), not found, written to ``dir``, not kept at all.
    read_back : int
        Items found in ``dir`` (among ``hits``).

    Raises
    ------
    InvalidParameterError
        ``dir`` is a URL whose bucket does not exist, or that no file system serves.
    CorruptFileError
        Its bucket cannot be reached.

    Examples
    --------
    >>> import tempfile
    >>> ItemCache(0, tempfile.mkdtemp()).url is None
    True
    """

    def __init__(self, ram_bytes: int, dir: str | os.PathLike[str] | None = None) -> None:
        self.ram_bytes = int(ram_bytes)
        #: the local folder of spilled items (None for a URL, or none)
        self.dir: Path | None = None
        #: the URL of spilled items (None for a local folder, or none)
        self.url: str | None = None
        if dir is not None:
            where = cache_dir(dir)
            if is_url(where):
                _check_reachable(where)
                self.url = where
            else:
                self.dir = Path(where)
        self._ram: OrderedDict[str, StoredItem] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.spilled = 0
        self.dropped = 0
        self.read_back = 0

    @property
    def ram_used(self) -> int:
        """Bytes of arrays held in RAM."""
        return self._used

    def get(self, key: str) -> StoredItem | None:
        """Return the cached item of ``key`` (from RAM, ``dir`` or its URL), or None."""
        with self._lock:
            item = self._ram.get(key)
            if item is not None:
                self._ram.move_to_end(key)
                self.hits += 1
                return item
        stored = self._read_spilled(key)
        with self._lock:
            if stored is None:
                self.misses += 1
            else:
                self.hits += 1
                self.read_back += 1
        return stored

    def _read_spilled(self, key: str) -> StoredItem | None:
        if self.url is not None:
            return _read_url(f"{self.url}/{key}")
        if self.dir is not None and (self.dir / key / "meta.json").is_file():
            return read_item(self.dir / key)
        return None

    def put(self, key: str, item: StoredItem) -> None:
        """Keep ``item`` under ``key``: in RAM while the budget allows, else in ``dir``."""
        size = _nbytes(item)
        spill: list[tuple[str, StoredItem]] = []
        with self._lock:
            if key in self._ram:
                return
            if size <= self.ram_bytes:
                self._ram[key] = item
                self._used += size
                while self._used > self.ram_bytes and self._ram:
                    old_key, old = self._ram.popitem(last=False)
                    self._used -= _nbytes(old)
                    spill.append((old_key, old))
            else:
                spill.append((key, item))
        for k, it in spill:
            self._spill(k, it)

    def _spill(self, key: str, item: StoredItem) -> None:
        if self.url is not None:
            _write_url(self.url, key, item)
        elif self.dir is not None:
            _write(self.dir, key, item)
        else:
            with self._lock:
                self.dropped += 1
            return
        with self._lock:
            self.spilled += 1

    def clear(self) -> None:
        """Forget every item held in RAM (spilled items stay in ``dir``)."""
        with self._lock:
            self._ram.clear()
            self._used = 0


_STORES: dict[tuple[int, str | None], ItemCache] = {}
_STORES_LOCK = threading.Lock()


def store(ram_bytes: int, dir: str | os.PathLike[str] | None = None) -> ItemCache:
    """Return this process's cache for a budget and folder or URL (created on first use).

    Raises
    ------
    CTFlowError
        As :class:`ItemCache` does, for a URL whose bucket cannot be used.
    """
    key = (int(ram_bytes), None if dir is None else os.fspath(dir))
    with _STORES_LOCK:
        cache = _STORES.get(key)
        if cache is None:
            cache = _STORES[key] = ItemCache(ram_bytes, dir)
        return cache
