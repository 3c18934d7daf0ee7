"""How a pipeline runs: pipeline -> engine -> batch -> action -> item.

Execution model
---------------
1. **Pipeline.** A :class:`~ctflow.Pipeline` is a tuple of action objects
   (:mod:`ctflow.actions`), each checked when it was written. ``dataset >> pipeline`` binds it
   to a :class:`~ctflow.Dataset` (ids -> sources); ``run`` / ``gen_batch`` / ``next_batch``
   plan the batches (:func:`~ctflow.runs.plan_batches`: shuffled per epoch from the seed,
   ``n_epochs``, ``drop_last``) and hand them to an engine with the run's
   :class:`~ctflow.runs.RunOptions`.
2. **Engine.** An engine (:mod:`ctflow.engines`: local threads or a Dask cluster) executes whole
   batches — each as ids and source paths, never as arrays — with :func:`run_one`, and yields
   their :class:`~ctflow.runs.BatchOutcome` s strictly in plan order. Failures travel in the outcome
   (``error`` under ``on_error="raise"``, ``failed`` items under ``"skip"``).
3. **Batch.** :func:`execute` runs the actions on one batch in order; a run of consecutive
   item actions on a batch of several items goes item by item (each item through the whole
   run, the items side by side on the batch's threads, one assembly at the end; see
   ``docs/design.md``), with the same results as action by action; a batch action that
   declares ``item_by_item`` (``fetch_nodules``) joins such a run. Each batch is seeded from
   ``(seed, position)``, so output never depends on prefetch depth, thread count or engine.
   Under ``on_error="skip"`` one bad item fails alone: an item action drops just the items that
   raise; a batch action that raises is run again on each item by itself, and only the items
   it fails on are dropped, each with its own reason.
4. **Action.** ``action(batch)`` does the work: an item action runs on every item in parallel
   (:mod:`ctflow.assembly`), a batch action on the whole batch.
5. **Item.** An item action draws the item's parameters from the item's generator and applies
   them; the item's history records the action with its parameters as drawn; its warnings say
   what was decided on its own. :func:`execute` collects failures, warnings and timings into
   the outcome, and :class:`~ctflow.runs.RunReport` adds the outcomes up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ctflow.errors import InvalidParameterError, describe
from ctflow.runs import BatchOutcome, OnError, RunOptions, StopRequested, stop_requested
from ctflow.system import peak_rss_mb

if TYPE_CHECKING:
    from ctflow.actions.base import Action
    from ctflow.batch import CTBatch
    from ctflow.dataset import Dataset
    from ctflow.threads import ThreadShare

__all__ = ["execute", "peak_rss_mb", "run_one"]


def _action_urls(actions: Sequence[Any]) -> list[str]:
    """Return the URLs among the actions' parameters (a dump's or a cache's destination)."""
    import dataclasses

    from ctflow.io.remote import is_url

    out = []
    for action in actions:
        if dataclasses.is_dataclass(action):
            for f in dataclasses.fields(action):
                value = getattr(action, f.name, None)
                if isinstance(value, str) and is_url(value):
                    out.append(value)
    return out


def run_one(
    dataset: Dataset,
    actions: Sequence[Action],
    position: int,
    ids: Sequence[str],
    options: RunOptions,
    share: ThreadShare | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BatchOutcome:
    """Create, execute and summarise one batch (what every engine runs for one batch).

    Under a ``share`` the batch's actions use their fair share of its threads. ``should_stop``
    is asked before every action (default: the run's :class:`StopSignal` in this process).
    """
    if share is not None:
        with share.running():
            outcome = run_one(
                dataset,
                actions,
                position,
                ids,
                replace(options, prefetch=0, n_workers=None),
                should_stop=should_stop,
            )
        if outcome.batch is not None:  # actions called later on it use the caller's choice
            outcome.batch.n_workers = options.n_workers
        return outcome
    try:
        dataset.use_storage_options(_action_urls(actions))
        batch = dataset.create_batch(list(ids), n_workers=options.n_workers)
    except Exception as exc:
        outcome = BatchOutcome(position=position, ids=list(ids))
        if options.on_error != "skip":
            outcome.error = exc
        else:
            outcome.failed = [(i, f"create_batch: {describe(exc)}") for i in ids]
        return outcome
    return execute(
        batch,
        actions,
        position=position,
        seed=options.seed,
        on_error=options.on_error,
        keep_batch=options.keep_batch,
        should_stop=should_stop or (lambda: stop_requested(options.stop)),
    )


def _label(action: Any) -> str:
    return str(getattr(action, "label", None) or getattr(action, "name", "") or action)


def execute(
    batch: CTBatch,
    actions: Sequence[Action],
    *,
    position: int = 0,
    seed: int | None = None,
    on_error: OnError = "raise",
    keep_batch: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> BatchOutcome:
    """Run ``actions`` on one batch; never raises when ``on_error="skip"`` (see the module).

    ``should_stop`` is asked before every action; once it says yes, the batch's remaining items
    are reported as interrupted and no further action runs.
    """
    ids = list(batch.ids)
    outcome = BatchOutcome(position=position, ids=ids)
    batch.set_random_state(seed, position)
    batch.on_error = on_error
    batch.should_stop = should_stop
    current: CTBatch = batch
    seen: set[tuple[str, str]] = set()
    cut = next((k for k, a in enumerate(actions) if getattr(a, "name", "") == "cache"), None)
    if cut is not None:
        # the actions before cache() run only for items not cached yet (see ctflow.actions.cache)
        from ctflow.actions.cache import through_cache

        prefix = list(actions[:cut])
        spent = [0.0]  # seconds of the prefix actions (the rest of the cache step is restoring)

        def run_prefix(sub: CTBatch) -> CTBatch | None:
            inner = execute(
                sub,
                prefix,
                position=position,
                seed=seed,
                on_error=on_error,
                keep_batch=True,
                should_stop=should_stop,
            )
            for name, dt in inner.timings.items():
                outcome.timings[name] = outcome.timings.get(name, 0.0) + dt
                spent[0] += dt
            outcome.warnings.extend(w for w in inner.warnings if w not in outcome.warnings)
            outcome.failed.extend(inner.failed)
            outcome.interrupted.extend(inner.interrupted)
            if inner.error is not None:
                raise inner.error
            return inner.batch

        t0 = time.perf_counter()
        try:
            cache: Any = actions[cut]
            current, _ = through_cache(current, prefix, cache, seed, run_prefix)
        except Exception as exc:
            exc.add_note(f"ctflow: in the cached actions of the batch at position {position}")
            if on_error != "skip":
                outcome.error = exc
                return outcome
            outcome.failed.extend((i, f"cache: {describe(exc)}") for i in ids)
            return outcome
        restore = time.perf_counter() - t0 - spent[0]
        outcome.timings["cache"] = outcome.timings.get("cache", 0.0) + restore
        actions = actions[cut + 1 :]
    final = _run_actions(current, actions, outcome, position, on_error, should_stop, seen)
    if final is None:
        return outcome
    current = final
    _harvest_warnings(current, outcome, seen)
    for failure in current.failed:
        outcome.failed.append(
            (
                _parent(failure.id, ids),
                f"{failure.action}: {describe(failure.error)}",
            )
        )
    failed_set = {i for i, _ in outcome.failed} | set(outcome.interrupted)
    outcome.done = [i for i in ids if i not in failed_set]
    outcome.skipped = [i for i in current.skipped if i in ids]
    if keep_batch:
        outcome.batch = current
    return outcome


def _run_actions(
    current: CTBatch,
    actions: Sequence[Action],
    outcome: BatchOutcome,
    position: int,
    on_error: OnError,
    should_stop: Callable[[], bool] | None,
    seen: set[tuple[str, str]],
) -> CTBatch | None:
    """Run ``actions`` in order; return the batch, or None after a failure under "raise".

    The failure is in ``outcome.error``. Runs of item actions on a batch of several items go
    item by item (:func:`_item_by_item`).
    """
    k = 0
    while k < len(actions):
        if len(current) == 0:
            break
        if should_stop is not None and should_stop():
            outcome.interrupted.extend(dict.fromkeys(_origin_ids(current)))
            break
        run = _item_run(actions, k)
        # item by item only pays for two actions or more: one action alone already runs its
        # items side by side, and needs no assembly at the end of a run
        if len(current) > 1 and run > 1 and current.patches is None:
            result = _item_by_item(
                current, actions[k : k + run], outcome, position, on_error, should_stop, seen
            )
            if result is None:
                return None
            current = result
            k += run
            continue
        action = actions[k]
        k += 1
        name = _label(action)
        t0 = time.perf_counter()
        try:
            try:
                result = _apply(action, current)
            except StopRequested:
                raise
            except Exception as exc:
                exc.add_note(
                    f"ctflow: in action {name!r} of the batch at position {position} "
                    f"({current.ids})"
                )
                if on_error != "skip":
                    outcome.error = exc
                    return None
                result = isolate(current, action, exc)
        except StopRequested:  # Ctrl-C before some of its items started: none is done
            outcome.interrupted.extend(dict.fromkeys(_origin_ids(current)))
            break
        finally:
            dt = time.perf_counter() - t0
            outcome.timings[name] = outcome.timings.get(name, 0.0) + dt
        _harvest_warnings(current, outcome, seen)
        current = result
    return current


def _item_run(actions: Sequence[Action], start: int) -> int:
    """Return how many actions from ``start`` on can run item by item (0: none)."""
    from ctflow.actions.base import BatchAction, ItemAction

    n = 0
    for action in actions[start:]:
        if not (isinstance(action, ItemAction | BatchAction) and action.item_by_item):
            break
        n += 1
    return n


def _item_by_item(
    batch: CTBatch,
    actions: Sequence[Action],
    outcome: BatchOutcome,
    position: int,
    on_error: OnError,
    should_stop: Callable[[], bool] | None,
    seen: set[tuple[str, str]],
) -> CTBatch | None:
    """Run a run of item actions item by item, then assemble the items into one batch.

    The run may hold batch actions that declare ``item_by_item`` (each runs on a one-item
    batch).

    Each item goes through all of ``actions`` as a batch of its own (a zero-copy view of it),
    the items side by side on the batch's threads, largest first, sharing them fairly
    (:class:`~ctflow.threads.ThreadShare`: an item alone gets every thread, idle threads help
    running kernels). So items of different sizes never wait for each other between actions,
    the intermediate arrays are one item's, not the batch's, and the items are copied into one
    buffer per component once, at the end, instead of after every action. Results are the
    same as action by action: an item's generator depends on the run's seed, the batch's
    position, the action's place and the item's position only.
    """
    from ctflow.threads import ThreadShare, map_items

    threads = batch.threads()
    share = ThreadShare(threads)
    subs = []
    for i in range(len(batch)):
        sub = batch.select([i], copy=False)
        sub.n_workers = None  # its actions take their share of the batch's threads
        subs.append(sub)
    sizes = np.prod(batch.shapes, axis=1)  # zeros before load: the batch's order
    order = sorted(range(len(subs)), key=lambda i: -int(sizes[i]))  # largest first

    def one(i: int) -> tuple[CTBatch | None, BatchOutcome]:
        sub_outcome = BatchOutcome(position=position, ids=list(subs[i].ids))
        with share.running():
            out = _run_actions(
                subs[i], actions, sub_outcome, position, on_error, should_stop, set()
            )
        if out is not None:
            _harvest_warnings(out, sub_outcome, set())
        return out, sub_outcome

    futures = map_items(one, order, n_workers=min(threads, len(subs)))
    results: dict[int, tuple[CTBatch | None, BatchOutcome]] = {}
    for i, fut in zip(order, futures, strict=True):
        exc = fut.exception()
        if exc is not None:  # ctflow's own failure, not an action's (those are in outcomes)
            outcome.error = exc
            return None
        results[i] = fut.result()
    parts: list[CTBatch] = []
    failed, dumped, skipped = list(batch.failed), list(batch.dumped), list(batch.skipped)
    for i in range(len(subs)):
        out, sub_outcome = results[i]
        for name, dt in sub_outcome.timings.items():
            outcome.timings[name] = outcome.timings.get(name, 0.0) + dt
        for key in sub_outcome.warnings:
            if key not in seen:
                seen.add(key)
                outcome.warnings.append(key)
        if sub_outcome.error is not None and outcome.error is None:
            outcome.error = sub_outcome.error
        outcome.interrupted.extend(sub_outcome.interrupted)
        if out is None:
            continue
        failed.extend(out.failed)
        dumped.extend(out.dumped)
        skipped.extend(out.skipped)
        if len(out) and not sub_outcome.interrupted:  # an item stopped half-way stays behind
            parts.append(out)
    if outcome.error is not None:
        return None
    if not parts:
        merged = batch.select([], copy=False)
    else:  # the parts are ours: each component's item arrays go back to the pool once copied
        from ctflow.batch_build import concat_batches

        del results, out, futures, fut
        merged = concat_batches(type(batch), parts, release=True)
    merged.failed, merged.dumped, merged.skipped = failed, dumped, skipped
    merged.n_workers, merged.on_error = batch.n_workers, batch.on_error
    return merged


def _apply(action: Action, batch: CTBatch) -> CTBatch:
    from ctflow.batch import CTBatch

    result = action(batch)
    if not isinstance(result, CTBatch):
        raise InvalidParameterError(
            f"action {_label(action)!r} returned {type(result).__name__}; actions must return "
            f"a batch"
        )
    return result


def isolate(batch: CTBatch, action: Action, error: Exception) -> CTBatch:
    """Run ``action`` on each item alone after it failed on the whole batch.

    The items that pass are kept; the others are recorded as failed (``on_error="skip"``).
    """
    from ctflow.item import ItemFailure

    name = _label(action)
    parts: list[CTBatch] = []
    failures: list[ItemFailure] = []
    if len(batch) == 1:
        failures.append(ItemFailure(batch.ids[0], name, error))
    else:
        for i in range(len(batch)):
            single = batch.select([i], copy=False)
            try:
                parts.append(_apply(action, single))
            except StopRequested:
                raise
            except Exception as exc:
                exc.add_note(f"ctflow: in action {name!r} on item {batch.ids[i]!r} (#{i})")
                failures.append(ItemFailure(batch.ids[i], name, exc))
    out = type(batch).concat(parts) if parts else batch.select([], copy=False)
    out.failed = [*batch.failed, *out.failed, *failures]
    out.dumped = [*batch.dumped, *out.dumped]
    out.skipped = [*batch.skipped, *out.skipped]
    return out


def _harvest_warnings(batch: CTBatch, outcome: BatchOutcome, seen: set[tuple[str, str]]) -> None:
    """Copy the batch's new item warnings into the outcome, under the items' original ids."""
    for parent, bucket in zip(_origin_ids(batch), batch.warnings, strict=True):
        for message in bucket:
            key = (parent, message)
            if key not in seen:
                seen.add(key)
                outcome.warnings.append(key)


def _origin_ids(batch: CTBatch) -> list[str]:
    parents = [info.get("parent") for info in batch.info]
    return [p if p is not None else i for p, i in zip(parents, batch.ids, strict=True)]


def _parent(item_id: str, ids: Sequence[str]) -> str:
    return item_id if item_id in ids else next((i for i in ids if item_id.startswith(i)), item_id)
