"""``cache()``: run what comes before it once per item; later epochs start from its output.

In a pipeline, the actions before ``cache()`` run for an item only when the item is not in the
cache (:mod:`ctflow.cache`: this process's RAM up to ``ram_gb``, then ctflow dumps in ``dir``, a
local folder or an fsspec URL such as ``s3://bucket/cache``); otherwise the batch starts from
the cached item. The key holds a hash of the records of those actions, the item's id and
source and the run's seed, so a changed pipeline never reuses stale data. Put the
deterministic, expensive steps (load, reorient, resample, windowing, masks) before it and the
random ones (crops, augmentation) after it: random actions before ``cache()`` are drawn once
and then frozen, as in MONAI's ``CacheDataset``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ctflow.actions.base import BatchAction, ItemAction
from ctflow.errors import InvalidParameterError
from ctflow.validation import as_float

if TYPE_CHECKING:
    from ctflow.batch import CTBatch
    from ctflow.cache import ItemCache
    from ctflow.io.store import StoredItem
    from ctflow.item import CTItem

__all__ = ["Cache", "through_cache"]

_DEFAULT_SHARE = 0.25  # of the machine's RAM, when ram_gb is not given


class Cache(BatchAction):
    """Keep every item as the actions before it made it; later epochs start here.

    Parameters
    ----------
    ram_gb : float, optional
        RAM (GiB, a finite number >= 0) for cached items in this process. Default None: a
        quarter of the machine's RAM; 0 keeps everything on disk.
    dir : path or URL, optional
        Folder for items beyond the RAM budget (ctflow dumps); without it those items are
        computed again when asked for. An fsspec URL (``s3://bucket/cache``, ``gs://``,
        ``az://``) keeps them on object storage, shared by every process of the run and by
        later runs: each item is uploaded as ``dump`` uploads one (arrays first, ``meta.json``
        last) with this process's fsspec options for the URL's protocol (a dataset's
        ``storage_options``, or :func:`ctflow.io.remote.set_storage_options`; never written
        to ``meta.json``). The bucket must exist (checked when the run first uses the cache).
        A local path is made absolute (``file://`` URLs too); ``http(s)://`` URLs are refused.
        Default None: no folder.

    Examples
    --------
    >>> import ctflow as cf
    >>> p = cf.Pipeline().load().unify_spacing(1.0).cache(ram_gb=2).random_flip()
    >>> p.action_names
    ['load', 'unify_spacing', 'cache', 'random_flip']
    >>> cf.Pipeline().cache(ram_gb=0, dir="s3://bucket/cache/").actions[0].dir
    's3://bucket/cache'
    """

    name = "cache"
    family = "io"
    ram_gb: float | None = None
    dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if self.ram_gb is not None:
            self._set("ram_gb", as_float(self.ram_gb, "ram_gb", self.name, lo=0.0))
        if self.dir is not None:
            from ctflow.cache import cache_dir

            self._set("dir", cache_dir(self.dir, self.name))

    def store(self) -> ItemCache:
        """Return this process's cache for these settings.

        Raises
        ------
        CTFlowError
            ``dir`` is a URL whose bucket does not exist or cannot be reached (the message
            names the URL).
        """
        from ctflow.cache import store
        from ctflow.system import total_memory_bytes

        if self.ram_gb is None:
            budget = int(total_memory_bytes() * _DEFAULT_SHARE)
        else:
            budget = int(self.ram_gb * 2**30)
        return store(budget, self.dir)

    def run(self, batch: CTBatch) -> CTBatch:
        """On its own (outside a pipeline run) the batch passes through unchanged."""
        return batch


class _Restore(ItemAction):
    """Put cached items into a batch (internal: the pipeline's cache step)."""

    items: Any = None

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return one item's cached components, geometry, table and record."""
        stored: StoredItem = self.items[item.id]
        out: dict[str, Any] = dict(stored.components)
        out["geometry"] = stored.geometry
        out["nodules"] = stored.nodules
        out["_recorded_warnings"] = stored.warnings
        out["_recorded_history"] = stored.history
        return out


def _snapshot(batch: CTBatch, index: int, cache: Cache) -> StoredItem:
    """Return a copy of one item of ``batch`` for the cache (its record ends with ``cache``)."""
    import numpy as np

    from ctflow.io.store import StoredItem

    item = batch.get(index)
    components = {
        name: np.array(arr)
        for name in ("images", "masks", "lungs")
        if (arr := getattr(item, name)) is not None
    }
    history = [dict(e) for e in batch.history[index]]
    history.append({**cache.record(), "params": {}})
    nodules = item.nodules.drop(columns=["id"], errors="ignore").reset_index(drop=True)
    return StoredItem(
        item.id,
        components,
        item.geometry,
        nodules,
        source=batch.sources[index],
        warnings=list(batch.warnings[index]),
        history=history,
    )


def through_cache(
    batch: CTBatch,
    prefix: Sequence[Any],
    cache: Cache,
    seed: int | None,
    run_prefix: Any,
) -> tuple[CTBatch, list[int]]:
    """Bring ``batch`` to the output of ``prefix`` (the actions before ``cache``).

    Items in the cache are taken from it; the others go through ``run_prefix(sub_batch)``
    (which returns the processed batch, or None when it failed as a whole) and are stored.
    Returns the batch (every item restored from the cache, in order) and the positions of the
    items that could not be made (failed in the prefix; reported by ``run_prefix``).
    """
    from ctflow.cache import cache_key, prefix_hash

    store = cache.store()
    prefix_id = prefix_hash([a.record() for a in prefix])
    keys = [cache_key(prefix_id, batch.ids[i], batch.sources[i], seed) for i in range(len(batch))]
    found: dict[str, StoredItem] = {}
    missing: list[int] = []
    for i, key in enumerate(keys):
        stored = store.get(key)
        if stored is None:
            missing.append(i)
        else:
            found[batch.ids[i]] = stored
    if missing:
        sub = batch.select(missing, copy=False)
        done = run_prefix(sub)
        if done is not None:
            wanted = {batch.ids[i]: keys[i] for i in missing}
            for j, item_id in enumerate(done.ids):
                if item_id not in wanted:
                    raise InvalidParameterError(
                        f"cache: the actions before it turned item {item_id!r} into other items "
                        f"({done.ids[:4]}...); put cache() before actions that make new items "
                        f"(sample_nodules, sample_crops, get_patches)"
                    )
                snap = _snapshot(done, j, cache)
                store.put(wanted[item_id], snap)
                found[item_id] = snap
    lost = [i for i in range(len(batch)) if batch.ids[i] not in found]
    if lost:
        batch.keep([i for i in range(len(batch)) if batch.ids[i] in found])
    if len(batch):
        batch.run_items(_Restore(found), record=False)
    return batch, lost
