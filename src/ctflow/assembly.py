"""Running an item action on every item of a batch, and assembling what the items return.

This is the inside of :meth:`ctflow.CTBatch.run_items`:

1. The batch is split into item views (:class:`~ctflow.item.CTItem`: ``images``, ``masks``,
   ``lungs`` are views of the batch's buffers). Each item gets its own generator ``item.rng``,
   derived from the run's seed, the batch's position, the action's place among the batch's
   random calls and the item's position — so results never depend on thread count, prefetch
   or engine.
2. For each item the action draws its parameters (``make_params``; or takes recorded ones when
   replaying) and applies them (``apply``), on the batch's threads
   (:func:`ctflow.parallel.map_items`); a kernel inside uses the item's ``n_threads``.
3. A failing item re-raises its original exception with a note naming the action and the
   item; under ``on_error="skip"`` it is dropped and recorded in ``batch.failed`` instead.
4. What the items return (a new images array, a dict of components and geometry, or None) is
   assembled into new buffers — one per component, items of any shapes — and every item's
   history gets the action's record with its drawn parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.io.annotations import NODULE_COLUMNS, empty_nodules
from ctflow.item import ItemFailure
from ctflow.ragged import Ragged
from ctflow.runs import StopRequested
from ctflow.threads import map_items

if TYPE_CHECKING:
    from ctflow.actions.base import ItemAction
    from ctflow.batch import CTBatch

__all__ = ["assemble", "run_items"]

COMPONENTS = ("images", "masks", "lungs")
_GEOMETRY_KEYS = ("spacing", "origin", "direction", "geometry")
_RESULT_KEYS = frozenset({*COMPONENTS, *_GEOMETRY_KEYS, "nodules", "info", "warnings"})
#: returned by ctflow's own ``load`` of a dump: the stored record goes on
_RECORDED = frozenset({"_recorded_warnings", "_recorded_history", "_record"})


def run_items(
    batch: CTBatch,
    action: ItemAction,
    *,
    params: Sequence[Mapping[str, Any]] | None = None,
    n_workers: int | None = None,
    target: str = "threads",
    record: bool = True,
) -> CTBatch:
    """Run ``action`` on every item of ``batch`` and assemble the results (see the module)."""
    name = action.label
    n = len(batch)
    if n == 0:
        return batch
    if not action.lazy_ok and not batch.has("images"):
        from ctflow.lazy import LAZY_HINT, is_lazy

        if is_lazy(batch):
            raise InvalidParameterError(f"{name}: {LAZY_HINT}")
    if params is not None and len(params) != n:
        raise InvalidParameterError(
            f"{name}: {len(params)} recorded parameter sets for a batch of {n} items"
        )
    workers = batch.threads(n_workers)
    # one seed per action (a fused group of actions draws as its actions would one by one)
    seqs = [batch.next_seed() for _ in range(int(getattr(action, "n_seeds", 1)))]
    n_threads = max(1, workers // n)
    items = [batch.get(i) for i in range(n)]
    for item in items:
        pos = batch.positions[item.index]
        rngs = [
            np.random.default_rng(
                np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, pos))
            )
            for seq in seqs
        ]
        item.rng = rngs[0]
        item.rngs = rngs
        item.n_threads = n_threads
    drawn: list[dict[str, Any]] = [{} for _ in range(n)]
    should_stop = batch.should_stop

    def one(item: Any) -> Any:
        if should_stop is not None and should_stop():
            raise StopRequested(f"{name}: item {item.id!r} not started (the run is stopping)")
        if params is None:
            p = action.make_params(item)
        else:
            p = dict(params[item.index])
        drawn[item.index] = p
        return action.apply(item, p)

    futures = map_items(one, items, n_workers=workers, target=target)  # type: ignore[arg-type]
    for fut in futures:  # the items that ran are dropped with the others: interrupted
        stop = fut.exception()
        if isinstance(stop, StopRequested):
            raise stop
    results: list[Any] = []
    keep: list[int] = []
    for item, fut in zip(items, futures, strict=True):
        for message in item.new_warnings:
            batch.warn(item.index, name, message)
        exc = fut.exception()
        if exc is None:
            results.append(fut.result())
            keep.append(item.index)
            continue
        exc.add_note(f"ctflow: in action {name!r} on item {item.id!r} (#{item.index})")
        if batch.on_error != "skip":
            raise exc
        batch.failed.append(ItemFailure(item.id, name, exc))
    kept_params = [drawn[i] for i in keep]
    for kept, result in zip(kept_params, results, strict=True):
        if isinstance(result, dict) and "_record" in result:
            kept.update(result.pop("_record"))  # what the item's record should also hold
    if len(keep) < n:
        batch.keep(keep)
    restored = assemble(batch, name, results, fresh=action.fresh_results)
    if record:
        for i in range(len(batch)):
            if i not in restored:
                for entry in action.history_entries(kept_params[i]):
                    batch.add_history(i, entry)
    return batch


def _as_dicts(name: str, results: Sequence[Any], ids: Sequence[str]) -> list[dict[str, Any]]:
    dicts: list[dict[str, Any]] = []
    for r, item_id in zip(results, ids, strict=True):
        if r is None:
            dicts.append({})
        elif isinstance(r, np.ndarray):
            dicts.append({"images": r})
        elif isinstance(r, Mapping):
            unknown = set(r) - _RESULT_KEYS - _RECORDED
            if unknown:
                raise InvalidParameterError(
                    f"{name}: item {item_id!r} returned unknown components {sorted(unknown)}; "
                    f"allowed: images, masks, lungs, spacing, origin, direction, geometry, "
                    f"nodules, info, warnings"
                )
            dicts.append(dict(r))
        else:
            raise InvalidParameterError(
                f"{name}: item {item_id!r} returned {type(r).__name__}; an item method must "
                f"return an array, a dict of components or None"
            )
    return dicts


def assemble(batch: CTBatch, name: str, results: Sequence[Any], *, fresh: bool = False) -> set[int]:
    """Build the batch's new components and geometry from per-item results.

    Returns the items whose stored record (history) was restored from a dump.
    """
    restored: set[int] = set()
    if not results or all(r is None for r in results):
        return restored
    dicts = _as_dicts(name, results, batch.ids)
    geoms: list[Geometry] = []
    for i, d in enumerate(dicts):
        if "geometry" in d:
            geoms.append(d["geometry"])
        else:
            geoms.append(
                Geometry(
                    d.get("spacing", batch.spacing[i]),
                    d.get("origin", batch.origin[i]),
                    d.get("direction", batch.direction[i]),
                )
            )
    shapes = batch.shapes
    loaded = batch.has("images")
    changed_shape = any(
        "images" in d and (not loaded or np.shape(d["images"]) != tuple(shapes[i]))
        for i, d in enumerate(dicts)
    )
    new: dict[str, Sequence[NDArray[Any]] | Ragged | None] = {}
    for comp in COMPONENTS:
        given = [d.get(comp) for d in dicts]
        old = batch.ragged(comp) if batch.has(comp) else None
        if all(g is None for g in given):
            if old is None or (changed_shape and comp != "images"):
                new[comp] = None  # absent, or cannot follow a shape change it missed
            else:
                new[comp] = old  # unchanged: reuse the buffer, no copy
            continue
        arrays = []
        for i, g in enumerate(given):
            if g is None:
                if old is None:
                    raise InvalidScanError(
                        f"{name}: item {batch.ids[i]!r} returned no {comp} while other items did"
                    )
                arrays.append(old.item(i))
            else:
                arrays.append(np.asarray(g))
        new[comp] = arrays
    if any("nodules" in d for d in dicts):
        tables = []
        for i, d in enumerate(dicts):
            t = d.get("nodules")
            if t is None:
                t = batch.nodules[batch.nodules["id"] == batch.ids[i]]
            else:
                t = t.copy()
                t["id"] = batch.ids[i]
            extra = [c for c in t.columns if c not in NODULE_COLUMNS]  # e.g. "label"
            tables.append(t.loc[:, [*NODULE_COLUMNS, *extra]])
        batch.nodules = pd.concat(tables, ignore_index=True) if tables else empty_nodules()
    for i, d in enumerate(dicts):
        if "info" in d:
            batch.info[i].update(d["info"])
        for entry in d.get("_recorded_warnings", ()):
            if entry not in batch.warnings[i]:
                batch.warnings[i].append(entry)
        if d.get("_recorded_history"):
            batch.history[i] = [dict(h) for h in d["_recorded_history"]]
            restored.add(i)
        for message in d.get("warnings", ()):
            batch.warn(i, name, message)
    batch.set_items(new, geoms, fresh=fresh)
    return restored
