"""The item cache behind the ``cache()`` action: RAM up to a budget, ctflow dumps beyond it.

A cached item is what the actions before ``cache()`` made of it (components, geometry, nodule
table, warnings, history), stored under a key made of the item's id and source, the run's seed
and a hash of the records of those actions. A pipeline whose earlier actions change (another
spacing, another window) gets another key and never reads stale data.

There is one store per process (:func:`store`): threads of a run, batches in flight with
prefetch and later epochs share it; each ``DataLoader`` worker process and each Dask worker
has its own (give ``dir=`` on a shared file system to share the spilled items between them).
Items go to RAM while the RAM budget allows (least recently used items move out first) and to
``dir`` beyond it, as ctflow dumps (:mod:`ctflow.io.store`: atomic, checksummed); without a
``dir`` an item that does not fit is not cached and is computed again when asked for.

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
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctflow.io.store import StoredItem, read_item, write_item

__all__ = ["ItemCache", "cache_key", "prefix_hash", "store"]


def prefix_hash(records: Sequence[Mapping[str, Any]]) -> str:
    """Return a hash of the action records before ``cache()`` (what the cached data depends on)."""
    text = json.dumps(list(records), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_key(prefix: str, item_id: str, source: str | None, seed: int | None) -> str:
    """Return the key of one item: the prefix hash, its id and source, the run's seed."""
    text = json.dumps([prefix, item_id, source, seed])
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _nbytes(item: StoredItem) -> int:
    return sum(int(a.nbytes) for a in item.components.values())


class ItemCache:
    """Cached items of one process: RAM up to ``ram_bytes``, then ``dir`` (or nothing).

    Parameters
    ----------
    ram_bytes : int
        Budget of the arrays kept in RAM.
    dir : path, optional
        Folder for the items beyond the budget (ctflow dumps, one folder per key).
    """

    def __init__(self, ram_bytes: int, dir: str | os.PathLike[str] | None = None) -> None:
        self.ram_bytes = int(ram_bytes)
        self.dir = None if dir is None else Path(dir)
        self._ram: OrderedDict[str, StoredItem] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.spilled = 0
        self.dropped = 0

    @property
    def ram_used(self) -> int:
        """Bytes of arrays held in RAM."""
        return self._used

    def get(self, key: str) -> StoredItem | None:
        """Return the cached item of ``key`` (from RAM or disk), or None."""
        with self._lock:
            item = self._ram.get(key)
            if item is not None:
                self._ram.move_to_end(key)
                self.hits += 1
                return item
        if self.dir is not None and (self.dir / key / "meta.json").is_file():
            stored = read_item(self.dir / key)
            with self._lock:
                self.hits += 1
            return stored
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, item: StoredItem) -> None:
        """Keep ``item`` under ``key``: in RAM while the budget allows, else on disk."""
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
        if self.dir is None:
            with self._lock:
                self.dropped += 1
            return
        write_item(
            self.dir,
            key,
            item.components,
            item.geometry,
            nodules=item.nodules,
            source=item.source,
            skip_existing=True,
            warnings=item.warnings,
            history=item.history,
        )
        with self._lock:
            self.spilled += 1

    def clear(self) -> None:
        """Forget every item held in RAM (spilled items stay on disk)."""
        with self._lock:
            self._ram.clear()
            self._used = 0


_STORES: dict[tuple[int, str | None], ItemCache] = {}
_STORES_LOCK = threading.Lock()


def store(ram_bytes: int, dir: str | os.PathLike[str] | None = None) -> ItemCache:
    """Return this process's cache for a budget and folder (created on first use)."""
    key = (int(ram_bytes), None if dir is None else str(dir))
    with _STORES_LOCK:
        cache = _STORES.get(key)
        if cache is None:
            cache = _STORES[key] = ItemCache(ram_bytes, dir)
        return cache
