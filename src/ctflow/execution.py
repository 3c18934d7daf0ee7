"""How a pipeline runs: pipeline -> engine -> batch -> action -> item.

Execution model
---------------
1. **Pipeline.** A :class:`~ctflow.Pipeline` is a tuple of action objects
   (:mod:`ctflow.actions`), each checked when it was written. ``dataset >> pipeline`` binds it
   to a :class:`~ctflow.Dataset` (ids -> sources); ``run`` / ``gen_batch`` / ``next_batch``
   plan the batches (:func:`plan_batches`: shuffled per epoch from the seed, ``n_epochs``,
   ``drop_last``) and hand them to an engine with the run's :class:`RunOptions`.
2. **Engine.** An engine (:mod:`ctflow.engines`: local threads or a Dask cluster) executes whole
   batches — each as ids and source paths, never as arrays — with :func:`run_one`, and yields
   their :class:`BatchOutcome` s strictly in plan order. Failures travel in the outcome
   (``error`` under ``on_error="raise"``, ``failed`` items under ``"skip"``).
3. **Batch.** :func:`execute` runs the actions on one batch in order; a run of consecutive
   item actions on a batch of several items goes item by item (each item through the whole
   run, the items side by side on the batch's threads, one assembly at the end; see
   ``docs/design.md``), with the same results as action by action. Each batch is seeded from
   ``(seed, position)``, so output never depends on prefetch depth, thread count or engine.
   Under ``on_error="skip"`` one bad item fails alone: an item action drops just the items that
   raise; a batch action that raises is run again on each item by itself, and only the items
   it fails on are dropped, each with its own reason.
4. **Action.** ``action(batch)`` does the work: an item action runs on every item in parallel
   (:mod:`ctflow.assembly`), a batch action on the whole batch.
5. **Item.** An item action draws the item's parameters from the item's generator and applies
   them; the item's history records the action with its parameters as drawn; its warnings say
   what was decided on its own. :func:`execute` collects failures, warnings and timings into
   the outcome, and :class:`RunReport` adds the outcomes up.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ctflow.errors import InvalidParameterError, describe
from ctflow.system import peak_rss_mb

if TYPE_CHECKING:
    from ctflow.actions.base import Action
    from ctflow.batch import CTBatch
    from ctflow.dataset import Dataset
    from ctflow.threads import ThreadShare

__all__ = [
    "BatchOutcome",
    "OnError",
    "RunOptions",
    "RunReport",
    "StopSignal",
    "execute",
    "peak_rss_mb",
    "plan_batches",
    "run_one",
    "stop_requested",
]

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class RunOptions:
    """How the batches of one run execute (the same meaning on every engine).

    Attributes
    ----------
    prefetch : int
        Batches processed ahead of the one being consumed (local: in background threads that
        share ``n_workers``; Dask: extra batches in flight beyond the cluster's threads).
    on_error : {"raise", "skip"}
        Raise the first error (original type, notes naming batch, action and item) or drop the
        failing items and report them.
    seed : int or None
        Seed of every random draw of the run.
    n_workers : int or None
        Threads for the items and kernels of a batch (default: the usable cores).
    keep_batch : bool
        Hand the processed batch back in the outcome (``gen_batch``) or only the report
        (``run``).
    stop : str or None
        Name of the run's stop signal (:class:`StopSignal`): once it is set (the first Ctrl-C),
        no batch starts and no batch starts another action.
    """

    prefetch: int = 0
    on_error: OnError = "raise"
    seed: int | None = None
    n_workers: int | None = None
    keep_batch: bool = True
    stop: str | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if self.on_error not in ("raise", "skip"):
            raise InvalidParameterError(
                f"on_error must be 'raise' or 'skip'; got {self.on_error!r}"
            )
        ok = isinstance(self.prefetch, int | np.integer) and not isinstance(self.prefetch, bool)
        if not ok or self.prefetch < 0:
            raise InvalidParameterError(f"prefetch must be an integer >= 0; got {self.prefetch!r}")
        if self.n_workers is not None and (
            isinstance(self.n_workers, bool)
            or not isinstance(self.n_workers, int | np.integer)
            or self.n_workers < 1
        ):
            raise InvalidParameterError(
                f"n_workers must be a positive integer or None; got {self.n_workers!r}"
            )


class StopSignal:
    """A run's "stop after the current actions" flag, set by its first Ctrl-C.

    :meth:`ctflow.Pipeline.run` and ``gen_batch`` make one per run (when they run in the main
    thread) and install a SIGINT handler for the run: the first Ctrl-C sets the flag — no new
    batch starts, no batch starts its next action (a ``dump`` included), running item threads
    finish the kernel they are in, and the run ends with a report of what was done — and
    restores Python's handler, so a second Ctrl-C interrupts at once. Engines look the flag up
    by name (:func:`stop_requested`); the Dask engine mirrors it in a ``distributed.Event`` its
    workers check between actions.

    Examples
    --------
    >>> with StopSignal() as stop:
    ...     before = stop_requested(stop.name)
    ...     stop.set()
    ...     after = stop_requested(stop.name)
    >>> before, after, stop_requested(stop.name)
    (False, True, False)
    """

    _registry: ClassVar[dict[str, threading.Event]] = {}

    def __init__(self) -> None:
        self.name = f"ctflow-stop-{uuid.uuid4().hex}"
        self.event = threading.Event()
        self._previous: Any = None
        self._installed = False

    def set(self) -> None:
        """Ask the run to stop after the current actions."""
        self.event.set()

    def is_set(self) -> bool:
        """Return whether the run was asked to stop."""
        return self.event.is_set()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: stop after the current actions; the next one interrupts at once."""
        del signum, frame
        self.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stderr.write(
            "\nctflow: stopping after the actions in progress (Ctrl-C again to stop at once)\n"
        )

    def __enter__(self) -> StopSignal:
        """Register the signal and, in the main thread, catch the first Ctrl-C of the run."""
        StopSignal._registry[self.name] = self.event
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._on_sigint)
                self._installed = True
            except (ValueError, OSError):  # no signals here (an embedded interpreter)
                self._installed = False
        return self

    def __exit__(self, *exc: object) -> None:
        """Restore the previous Ctrl-C handler and forget the signal."""
        self.pause()
        StopSignal._registry.pop(self.name, None)

    def pause(self) -> None:
        """Give Ctrl-C back to the previous handler.

        ``gen_batch`` does it while it waits at a ``yield``: the caller's loop body is the
        caller's, and a Ctrl-C there interrupts it as usual.
        """
        main = threading.current_thread() is threading.main_thread()
        if self._installed and main:  # a handler can only be set from the main thread
            if signal.getsignal(signal.SIGINT) == self._on_sigint:
                signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def resume(self) -> None:
        """Catch Ctrl-C again (``gen_batch`` goes on producing batches)."""
        if self._installed or self.event.is_set():
            return
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._on_sigint)
                self._installed = True
            except (ValueError, OSError):
                self._installed = False


def stop_requested(name: str | None) -> bool:
    """Return whether the run whose stop signal is ``name`` was asked to stop (this process)."""
    if name is None:
        return False
    event = StopSignal._registry.get(name)
    return event is not None and event.is_set()


@dataclass
class BatchOutcome:
    """What executing one batch produced (small and picklable unless ``batch`` is kept)."""

    position: int
    ids: list[str]
    done: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    batch: CTBatch | None = None
    error: BaseException | None = None


@dataclass
class RunReport:
    """Summary of :meth:`ctflow.Pipeline.run`.

    Attributes
    ----------
    n_items : int
        Items attempted (counting repeats over epochs).
    done : list of str
        Items that went through every action.
    failed : list of (str, str)
        Item id and reason (``"action: ExceptionType: message"``).
    skipped : list of str
        Items left alone by ``dump(..., skip_existing=True)``.
    interrupted : list of str
        Items not finished because the run was stopped (Ctrl-C): neither done nor failed.
    stopped : bool
        The run was stopped before the end of its plan (Ctrl-C).
    warnings : list of (str, str)
        Item id and what ctflow decided on its own about it (``"action: message"``): a gap
        in a DICOM series interpolated, files of a folder not read, no nodule to centre crops
        on, an empty mask, a lung mask implausibly small ... The items are still done.
    timings : dict
        Seconds spent per action, summed over batches (wall time of the action call).
    n_batches : int
    wall_time : float
        Seconds for the whole run.
    peak_rss_mb : float
        Peak resident memory of the process so far, MiB (on Dask: the client process only).
    """

    n_items: int = 0
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    stopped: bool = False
    warnings: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    n_batches: int = 0
    wall_time: float = 0.0
    peak_rss_mb: float = 0.0

    def add(self, outcome: BatchOutcome) -> None:
        """Merge one batch outcome into the report."""
        self.n_batches += 1
        self.n_items += len(outcome.ids)
        self.done.extend(outcome.done)
        self.failed.extend(outcome.failed)
        self.skipped.extend(outcome.skipped)
        self.interrupted.extend(outcome.interrupted)
        self.warnings.extend(outcome.warnings)
        for name, t in outcome.timings.items():
            self.timings[name] = self.timings.get(name, 0.0) + t

    def summary(self) -> str:
        """Return a human-readable multi-line summary."""
        lines = [
            f"items: {self.n_items} in {self.n_batches} batches — done {len(self.done)}, "
            f"failed {len(self.failed)}, skipped (existing) {len(self.skipped)}, "
            f"warnings {len(self.warnings)}",
            *(
                [
                    f"STOPPED (Ctrl-C): {len(self.interrupted)} item(s) of started batches not "
                    f"finished; batches not started are not counted"
                ]
                if self.stopped
                else []
            ),
            f"wall time: {self.wall_time:.2f} s ({self.n_items / max(self.wall_time, 1e-9):.2f} "
            f"items/s), peak RSS {self.peak_rss_mb:.0f} MiB",
        ]
        if self.timings:
            total = sum(self.timings.values()) or 1.0
            lines.append("time per action (summed over batches):")
            for name, t in self.timings.items():
                lines.append(f"  {name:<16} {t:8.2f} s  {100 * t / total:5.1f} %")
        for item_id, reason in self.failed[:20]:
            lines.append(f"  FAILED {item_id}: {reason}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more failures")
        for item_id, message in self.warnings[:20]:
            lines.append(f"  WARNING {item_id}: {message}")
        if len(self.warnings) > 20:
            lines.append(f"  ... and {len(self.warnings) - 20} more warnings")
        return "\n".join(lines)

    def __str__(self) -> str:
        """Return the summary."""
        return self.summary()


def plan_batches(
    ids: Sequence[str],
    batch_size: int,
    *,
    shuffle: bool | int = False,
    n_epochs: int | None = 1,
    drop_last: bool = False,
    seed: int | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(position, ids)`` of each batch of a run, epoch after epoch.

    ``shuffle=True`` permutes ids every epoch with a generator seeded by ``(seed, epoch)``
    (an int ``shuffle`` is used as the seed). ``n_epochs=None`` repeats forever.
    ``drop_last`` drops an incomplete last batch of each epoch.

    Examples
    --------
    >>> [b for _, b in plan_batches(list("abcde"), 2, drop_last=True)]
    [['a', 'b'], ['c', 'd']]
    """
    ok = isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool)
    if not ok or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer; got {batch_size!r}")
    if n_epochs is not None and (
        not isinstance(n_epochs, int | np.integer) or isinstance(n_epochs, bool) or n_epochs < 1
    ):
        raise InvalidParameterError(
            f"n_epochs must be a positive integer or None; got {n_epochs!r}"
        )
    if not ids:
        raise InvalidParameterError("the dataset is empty: nothing to run")
    ids = list(ids)
    shuffle_seed = seed if isinstance(shuffle, bool) else int(shuffle)
    base_entropy = shuffle_seed if shuffle_seed is not None else np.random.SeedSequence().entropy
    position = 0
    epoch = 0
    while n_epochs is None or epoch < n_epochs:
        order = ids
        if shuffle is not False:
            rng = np.random.default_rng(np.random.SeedSequence(base_entropy, spawn_key=(epoch,)))
            order = [ids[i] for i in rng.permutation(len(ids))]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if drop_last and len(chunk) < batch_size:
                break
            yield position, chunk
            position += 1
        epoch += 1


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
            result = _apply(action, current)
        except Exception as exc:
            exc.add_note(
                f"ctflow: in action {name!r} of the batch at position {position} ({current.ids})"
            )
            if on_error != "skip":
                outcome.error = exc
                return None
            result = _isolate(current, action, exc)
        finally:
            dt = time.perf_counter() - t0
            outcome.timings[name] = outcome.timings.get(name, 0.0) + dt
        _harvest_warnings(current, outcome, seen)
        current = result
    return current


def _item_run(actions: Sequence[Action], start: int) -> int:
    """Return how many actions from ``start`` on can run item by item (0: none)."""
    from ctflow.actions.base import ItemAction

    n = 0
    for action in actions[start:]:
        if not (isinstance(action, ItemAction) and action.item_by_item):
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
    merged = type(batch).concat(parts) if parts else batch.select([], copy=False)
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


def _isolate(batch: CTBatch, action: Action, error: Exception) -> CTBatch:
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
